"""Command-line entry points of gmae.zeroshot (registered by gmae.cli).

``gmae zeroshot edges | figure-ground | stats | order | occlusion``. ``gmae zeroshot layers``
writes an HTML page, so gmae.report.cli registers it (first in the group, with the options of
``add_common_options``); ``gmae export gaussians`` is gmae.export.cli's. Torch and the models are
imported inside the command functions, so ``gmae --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.devices import DEVICE_HELP
from gmae.errors import GmaeError
from gmae.loading import GMAE_CKPT_HELP, MAE_CKPT_HELP

GROUP_HELP = "Zero-shot layering, edges, figure-ground, statistics"  # gmae zeroshot --help


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the option in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common_options(p: argparse.ArgumentParser, batch: bool = True) -> None:
    """--ckpt, --device, (--batch-size,) --no-progress: the options every zero-shot command has."""
    p.add_argument("--ckpt", required=True, type=Path, help=GMAE_CKPT_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    if batch:
        p.add_argument(
            "--batch-size", type=_positive_int, default=4, help="images per forward pass"
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    from gmae.cli import command_group

    zs = command_group(subparsers, groups, "zeroshot", GROUP_HELP)

    p = zs.add_parser(
        "edges",
        help="boundary maps from layer-index discontinuities (+ Canny / Sobel baselines)",
        description="For each photo: split the depth-sorted Gaussians into L equal groups, index "
        "each pixel by the group at which it is half formed, and write the index map's "
        "discontinuities as 16-bit boundary PNGs (higher = more boundary) at the photo's "
        "resolution: OUT/gmae_L{L}/, OUT/gmae_combined/ (mean over L), OUT/<baseline>/. "
        "Score them with `gmae eval boundaries`.",
    )
    add_common_options(p)
    p.add_argument("--images", required=True, type=Path, help="folder of photos")
    p.add_argument("--out", required=True, type=Path, help="output folder of boundary PNGs")
    p.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16, 32],
                   help="numbers of depth groups L, one map each")  # fmt: skip
    p.add_argument("--rule", default="median", choices=["median", "argmax"],
                   help="which group a pixel takes (see docs/zeroshot.md)")  # fmt: skip
    p.add_argument("--baselines", nargs="*", default=[],
                   choices=["canny", "sobel", "shuffled", "luminance_order"],
                   help="controls: shuffled, each photo gets the next photo's GMAE map; "
                   "luminance_order, the GMAE map with Gaussians grouped by brightness "
                   "instead of depth")  # fmt: skip
    p.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    p.set_defaults(func=cmd_edges)

    p = zs.add_parser(
        "figure-ground",
        help="figure masks from the nearest Gaussians, scored by IoU with baselines",
        description="Binary figure masks of each photo (OUT/<method>/<name>.png, 0/255) from the "
        "GMAE rules and the baselines; with --masks, mean IoU of every method.",
    )
    add_common_options(p)
    p.add_argument("--images", required=True, type=Path, help="folder of photos")
    p.add_argument("--masks", type=Path, help="ground-truth masks (same stems, 0/255)")
    p.add_argument("--out", required=True, type=Path, help="output folder of masks")
    p.add_argument("--json", type=Path, help="write the scores here (default OUT/scores.json)")
    p.add_argument("--mae-ckpt", type=Path, help=MAE_CKPT_HELP)
    p.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    p.set_defaults(func=cmd_figure_ground)

    p = zs.add_parser(
        "stats",
        help="Spearman(scale, depth) and concentration of Gaussians on high frequencies",
        description="Measure the paper's observations over a data set: Spearman correlation "
        "between Gaussian size and camera depth, and the ratio of the image-gradient magnitude "
        "at Gaussian centres to its image mean (> 1: concentrated on high frequencies).",
    )
    add_common_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="data set spec (cifar10, imagenette-128, imagefolder:/p)")
    src.add_argument("--images", type=Path, help="folder of photos")
    p.add_argument("--split", default="val", help="split of --data")
    p.add_argument("--num-images", type=int, default=500, help="images to use (0: all)")
    p.add_argument("--json", required=True, type=Path, help="write the statistics here (JSON)")
    p.set_defaults(func=cmd_stats)

    p = zs.add_parser(
        "order",
        help="does the depth order matter? PSNR of the Gaussians composited in other orders",
        description="Keep every predicted Gaussian as it is and composite it front to back in "
        "other orders: the model's depth, reversed, random, one fixed order for all images, "
        "brightest first, darkest first. Masked and whole-image PSNR of each, paired tests "
        "against the model's own order (docs/zeroshot.md, 'Does the order matter?').",
    )
    add_common_options(p)
    p.set_defaults(batch_size=16)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="data set spec (cifar10, imagenette-128, imagefolder:/p)")
    src.add_argument("--images", type=Path, help="folder of photos")
    p.add_argument("--split", default="val", help="split of --data")
    p.add_argument("--num-images", type=int, default=256, help="images to use (0: all)")
    p.add_argument("--mask-ratios", type=float, nargs="+", default=None,
                   help="mask ratios (default: the model's training ratio, then 0)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and random orders")
    p.add_argument("--json", required=True, type=Path, help="write the scores here (JSON)")
    p.set_defaults(func=cmd_order)

    p = zs.add_parser(
        "occlusion",
        help="depth order vs true occlusion order on dead-leaves scenes, with baselines",
        description="Score GMAE's depth against the known occlusion order of dead-leaves scenes: "
        "depth-order accuracy at true occlusion boundaries, per-leaf rank correlation, "
        "layer-index edges vs true boundaries (BSDS benchmark, beside Canny and Sobel) and "
        "figure-ground vs the unoccluded leaves, each beside a randomly initialised GMAE and the "
        "shuffled control (docs/occlusion.md).",
    )
    p.add_argument("--ckpt", required=True, help=f"{GMAE_CKPT_HELP}, or 'random' (--config)")
    p.add_argument("--config", help="preset or YAML for --ckpt random")
    p.add_argument("--data", required=True, help="dead-leaves spec, e.g. deadleaves:size=64")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    p.add_argument("--num-images", type=int, default=0, help="first N scenes (0: all)")
    p.add_argument("--json", required=True, type=Path, help="write the scores here (JSON)")
    p.add_argument("--mae-ckpt", type=Path, help=MAE_CKPT_HELP)
    p.add_argument("--no-random", action="store_true", help="skip the random-GMAE baseline")
    p.add_argument("--gap", type=int, default=1, help="pixels between the two sides of a pair")
    p.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16, 32],
                   help="numbers of depth groups L for the layer-index edges")  # fmt: skip
    p.add_argument("--max-dist", type=float, default=None,
                   help="boundary match tolerance, fraction of the diagonal (0.02)")  # fmt: skip
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--workers", type=int, default=None, help="boundary benchmark processes")
    p.add_argument("--out", type=Path, help="write pictures of the first --pictures scenes here")
    p.add_argument("--pictures", type=int, default=8, help="scenes pictured in --out")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_occlusion)


# --- helpers ----------------------------------------------------------------------------------


def _photos(folder: Path, limit: int = 0, max_side: int = 0):
    from gmae.zeroshot.common import list_images, load_photo, shrink_photo

    files = list_images(folder)
    files = files[:limit] if limit > 0 else files
    return [shrink_photo(load_photo(f), max_side) for f in files]


# --- commands ---------------------------------------------------------------------------------


def cmd_edges(args: argparse.Namespace) -> int:
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.common import check_health
    from gmae.zeroshot.pipelines import write_edges

    photos = _photos(args.images, args.limit)
    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    dirs = write_edges(
        model, photos, args.out, layers=args.layers, rule=args.rule,
        baselines=args.baselines, batch_size=args.batch_size, progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {len(photos)} maps to each of: {', '.join(str(d) for d in dirs)}")
    check_health(model, photos)
    return 0


def cmd_figure_ground(args: argparse.Namespace) -> int:
    from gmae import io as gio
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.common import check_health
    from gmae.zeroshot.pipelines import run_figure_ground

    photos = _photos(args.images, args.limit)
    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    mae = load_mae_or_gmae(args.mae_ckpt, None, args.device) if args.mae_ckpt else None
    result, _ = run_figure_ground(
        model, photos, args.out, masks_dir=args.masks, mae_model=mae,
        batch_size=args.batch_size, progress=not args.no_progress,
    )  # fmt: skip
    path = args.json or args.out / "scores.json"
    gio.write_json(path, result)
    for method, s in result.get("scores", {}).items():
        print(f"{method:18s} IoU(fg) {s['iou_fg']:.3f}  mIoU {s['miou']:.3f}")
    print(f"wrote masks to {args.out} and {path}")
    check_health(model, photos)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from gmae import io as gio
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.stats import dataset_batches, gaussian_stats, photo_batches

    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    if args.data:
        batches, total = dataset_batches(
            args.data, args.split, model.img_size, args.num_images, args.batch_size
        )
        source = {"data": args.data, "split": args.split}
    else:
        photos = _photos(args.images, args.num_images)
        batches, total = photo_batches(photos, model.img_size, args.batch_size), len(photos)
        source = {"images": str(args.images)}
    result = gaussian_stats(model, batches, total, progress=not args.no_progress)
    result = {"source": source, "ckpt": str(args.ckpt), **result}
    if result["n_images"] >= 2:  # the health check compares images: re-read a few of them
        result["health"] = _check_health_on_few(args, model, None if args.data else photos)
    gio.write_json(args.json, result)
    rho = result["spearman_size_vs_depth"]["scale_gmean"]
    print(
        f"Spearman(scale, depth): pooled {rho['pooled']:.3f}, per image {rho['per_image_mean']:.3f}"
        f"; hf_ratio {result['hf_ratio']['pooled']:.3f}{_control(result)}; depth-order "
        "agreement between "
        f"images {result['layout']['depth_order_agreement']:.3f}{_luminance(result)}"
        f"  -> {args.json}"
    )
    return 0


def cmd_order(args: argparse.Namespace) -> int:
    from gmae import io as gio
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.order import check_mask_ratios, format_table, order_ablation
    from gmae.zeroshot.stats import dataset_batches, photo_batches

    if args.num_images == 1:
        raise GmaeError("--num-images: the order ablation needs at least 2 images (or 0: all)")
    if args.mask_ratios is not None:
        check_mask_ratios(args.mask_ratios)
    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    ratios = args.mask_ratios or [model.mask_ratio, 0.0]
    if args.data:
        batches, _ = dataset_batches(
            args.data, args.split, model.img_size, args.num_images, args.batch_size
        )
        source = {"data": args.data, "split": args.split}
    else:
        photos = _photos(args.images, args.num_images)
        if len(photos) < 2:
            raise GmaeError(f"{args.images}: the order ablation needs at least 2 photos")
        batches = photo_batches(photos, model.img_size, args.batch_size)
        source = {"images": str(args.images)}
    result = order_ablation(model, batches, ratios, seed=args.seed, progress=not args.no_progress)
    result = {"source": source, "ckpt": str(args.ckpt), **result}
    result["health"] = _check_health_on_few(args, model, None if args.data else photos)
    gio.write_json(args.json, result)
    print(format_table(result))
    print(f"wrote {args.json}")
    return 0


def _check_health_on_few(args: argparse.Namespace, model, photos: list | None) -> dict:
    """The health check (and its warning) on up to 32 of the images a command used: from
    ``photos``, or re-read from ``args.data`` / ``args.split``."""
    from gmae.zeroshot.common import Photo, check_health
    from gmae.zeroshot.stats import evenly_spaced_images

    if photos is None:
        x = evenly_spaced_images(args.data, args.split, model.img_size, 32)
        pix = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
        photos = [Photo(str(i), p) for i, p in enumerate(pix)]
    return check_health(model, photos[:32])


def _luminance(stats: dict) -> str:
    """'; Spearman(luminance, depth) R' when the colours are RGB."""
    rho = stats.get("spearman_luminance_vs_depth")
    return f"; Spearman(luminance, depth) {rho['pooled']:.3f}" if rho else ""


def _control(stats: dict) -> str:
    """' (on another photo X; own - other +D [lo, hi])' when the stats hold the control."""
    test = stats.get("hf_ratio_own_vs_other")
    if not test:
        return ""
    from gmae.evaluate.paired import format_diff

    other = stats["hf_ratio_other_image"]["per_image_mean"]
    return f" (on another photo {other:.3f}; own - other {format_diff(test)})"


def cmd_occlusion(args: argparse.Namespace) -> int:
    import contextlib
    import io
    import sys

    from gmae import io as gio
    from gmae.devices import resolve_device
    from gmae.loading.formats import RANDOM
    from gmae.loading.loaders import load_any, load_mae_or_gmae, random_like
    from gmae.models import GMAE
    from gmae.zeroshot.common import Photo, check_health
    from gmae.zeroshot.occlusion import (
        DEFAULT_MAX_DIST,
        load_scenes,
        occlusion_scores,
        save_pictures,
    )

    device = resolve_device(args.device)
    loaded = load_any(str(args.ckpt), args.config)
    if not isinstance(loaded.model, GMAE):
        raise GmaeError(f"{args.ckpt} holds a {type(loaded.model).__name__}; this needs a GMAE")
    model = loaded.model.to(device).eval()
    rand = None
    if not args.no_random and str(args.ckpt) != RANDOM:
        rand = random_like(loaded).model.to(device).eval()
    mae = load_mae_or_gmae(args.mae_ckpt, "mae", args.device) if args.mae_ckpt else None
    scenes = load_scenes(args.data, args.split, args.num_images)
    max_dist = DEFAULT_MAX_DIST if args.max_dist is None else args.max_dist
    result, maps = occlusion_scores(
        model, scenes, rand, mae, gap=args.gap, layers=args.layers, max_dist=max_dist,
        n_boot=args.n_boot, batch_size=args.batch_size, workers=args.workers,
        progress=not args.no_progress,
    )  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()) as warning:  # printed last, below
        health = check_health(model, [Photo(str(i), s.image) for i, s in enumerate(scenes[:32])])
    result = {
        "ckpt": str(args.ckpt), "data": args.data, "split": args.split,
        "mae_ckpt": str(args.mae_ckpt) if args.mae_ckpt else None, **result, "health": health,
    }  # fmt: skip
    gio.write_json(args.json, result)
    d, r, b = result["depth_order"], result["rank_correlation"], result["boundaries"]
    for name in [n for n in d if "_vs_" not in n]:
        ci = d[name].get("ci", [float("nan")] * 2)
        print(
            f"{name:12s} depth order {d[name]['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
            f"  rank rho {r[name]['mean']:+.3f}  edges ODS {b[name]['ods']:.3f}"
        )
    for name in ("canny", "sobel"):
        print(f"{name:12s} edges ODS {b[name]['ods']:.3f}")
    fg = result["figure_ground"]
    print(
        f"figure IoU: gmae_depth_otsu {fg['gmae_depth_otsu']['iou_fg']:.3f}, centre_prior "
        f"{fg['centre_prior']['iou_fg']:.3f}, all_figure {fg['all_figure']['iou_fg']:.3f}"
    )
    if args.out:
        pics = save_pictures(args.out, scenes, maps, args.pictures)
        print(f"wrote {len(pics)} pictures to {args.out}")
    print(f"wrote {args.json}")
    print(warning.getvalue(), end="", file=sys.stderr)  # last, so that people see it
    return 0
