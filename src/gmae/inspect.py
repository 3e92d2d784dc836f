"""``gmae inspect``: the Gaussian health of a GMAE checkpoint (docs/models.md, "Gaussian health").

Measures the health statistics on evenly spaced images of a data set, twice: at the model's own
mask ratio with a fixed mask (training conditions; the verdict is read here) and with every patch
visible (zero-shot conditions, what the layers, edges and figure-ground commands see).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.devices import DEVICE_HELP
from gmae.errors import GmaeError
from gmae.loading import GMAE_CKPT_HELP

MAX_IMAGES = 1024  # one batch: the across-image statistics need every image at once


def register(subparsers, groups) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="Gaussian health of a GMAE checkpoint: saturation, sizes, depth, layout",
        description="Gaussian health statistics of a GMAE checkpoint on a data set: saturated "
        "raw outputs per channel group, sizes and depths pinned at their bounds, on-screen size "
        "spread, within-image depth spread, dependence of the layout on the image, centres in "
        "masked patches, coverage. Prints a verdict (healthy / degraded / degenerate).",
    )
    p.add_argument("--ckpt", required=True, type=Path, help=GMAE_CKPT_HELP)
    p.add_argument("--data", default="imagenette-128", help="data set spec")
    p.add_argument("--split", default="val", help="split of --data (default val)")
    p.add_argument("--num-images", type=int, default=128, help=f"images (2..{MAX_IMAGES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed mask (default 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--json", type=Path, help="also write the statistics here")
    p.set_defaults(func=cmd_inspect)


def measure(model, imgs, seed: int = 0) -> dict:
    """{"masked": health at the model's mask ratio, "unmasked": health at mask ratio 0}."""
    import torch

    from gmae.models.health import gaussian_health

    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(imgs.shape[0], model.encoder.num_patches, generator=gen).to(imgs.device)
    return {
        "masked": gaussian_health(model, imgs, noise=noise),
        "unmasked": gaussian_health(model, imgs, mask_ratio=0.0),
    }


def format_health(h: dict) -> str:
    from gmae.models.health import describe

    m = h["masked"]
    d, du = m["layout"]["detail_at_centres"], h["unmasked"]["layout"]["detail_at_centres"]
    lines = [
        f"{'saturated raw outputs (|u| > 4)':38s} "
        + ", ".join(f"{k} {v:.1%}" for k, v in m["saturation"].items()),
        f"{'sizes pinned at the cap / z at a bound':38s} {m['pinned_size']:.1%} / "
        f"{m['pinned_z']:.1%}",
        f"{'on-screen std px p10 / median / p90':38s} {m['screen_std_px']['p10']:.2f} / "
        f"{m['screen_std_px']['median']:.2f} / {m['screen_std_px']['p90']:.2f} "
        f"(cap {m['screen_std_px']['cap']:.2f}; p90/p10 {m['screen_p90_p10']:.2f})",
        f"{'within-image std of z':38s} {m['z_std_within']:.3f}",
        f"{'centre spread across / within images':38s} "
        f"{m['layout']['centre_px']['across_images']:.2f} / "
        f"{m['layout']['centre_px']['within_image']:.2f} px "
        f"(ratio {m['layout']['centre_ratio']:.2f})",
        f"{'detail at centres: own / another image':38s} "
        f"{d['own']:.3f} / {d['other_image']:.3f} (unmasked {du['own']:.3f} / "
        f"{du['other_image']:.3f})",
        f"{'centres in masked patches':38s} {m['masked_centres']['fraction']:.3f} "
        f"(chance {m['masked_centres']['chance']:.3f}, z {m['masked_centres']['z']:+.1f})",
        f"{'depth-order agreement between images':38s} "
        f"{m['layout']['depth_order_agreement']:.3f} "
        f"(unmasked {h['unmasked']['layout']['depth_order_agreement']:.3f})",
        f"{'alpha coverage / opacity median':38s} {m['alpha_coverage']['mean']:.3f} / "
        f"{m['opacity']['median']:.3f}",
    ]
    if "luminance_depth_rho" in m:  # RGB models
        lines.append(
            f"{'Spearman(luminance, depth) per image':38s} {m['luminance_depth_rho']:+.3f} "
            f"(unmasked {h['unmasked']['luminance_depth_rho']:+.3f}; near -1 or +1: depth "
            "is a brightness code)"
        )
    lines.append(describe(m))
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from gmae import io as gio
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.stats import evenly_spaced_images

    if not 2 <= args.num_images <= MAX_IMAGES:
        raise GmaeError(f"--num-images must be between 2 and {MAX_IMAGES}, got {args.num_images}")
    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    imgs = evenly_spaced_images(args.data, args.split, model.img_size, args.num_images)
    imgs = imgs.to(next(model.parameters()).device)
    with torch.no_grad():
        health = measure(model, imgs, args.seed)
    result = {"ckpt": str(args.ckpt), "data": args.data, "split": args.split, **health}
    print(format_health(health))
    if args.json:
        gio.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
