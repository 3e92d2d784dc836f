"""Where would the centres go if each image's Gaussians were fitted to it directly?

A control for the centre-ratio check of Gaussian health (a query's centre spread across images
over the spread within an image, asked >= 0.25). A GMAE predicts its Gaussians in one pass; here
each image's Gaussians are instead optimised for that image alone (Adam on the raw head outputs,
through the model's own activation, camera, renderer and saturation guard, whole-image MSE at
mask 0), so nothing but reconstruction decides where they go. Two starts:

- ``model``: the model's own prediction for the image (how far would fitting move it?);
- ``common``: one start for every image, the model's raw outputs averaged over the images (any
  spread across images then comes from fitting alone).

With --mask-ratio 0.75 the model predicts from the visible patches of a seeded mask and the
fit sees only those pixels (what the model itself is shown in training); PSNR is then over the
visible pixels. At each step in --report-steps it records PSNR, the centre ratio, the centre
spread across and within images, how far the centres moved from their start and the detail gain
at the centres (the same statistics as ``gmae inspect``); after the last step, a paired
bootstrap of free minus frozen centres says what moving them is worth. Gradient descent moves
Gaussians locally: the ratio after a given number of steps says where reconstruction pulls the
centres, not where a global optimum lies.

    python scripts/centre_oracle.py --ckpt checkpoints/gmae_tiny_imagenette64_e40.safetensors \\
        --data imagenette-128 --num-images 64 --json results/health_sweep/centre_oracle/e40.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gmae.errors import GmaeError
from gmae.evaluate.paired import format_diff, paired_bootstrap
from gmae.models.gmae import saturation_penalty
from gmae.models.health import (
    centre_pixels,
    detail_at_centres,
    finite_mean,
    gradient_magnitude,
    layout_dependence,
)
from gmae.zeroshot.order import pixel_mask

STARTS = ("model", "common")


def per_image_mse(image: torch.Tensor, imgs: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
    """Mean squared error [B] over each image's fitted pixels (``fitted``: [B, 1, S, S], 0/1)."""
    err = (image.float() - imgs.float()).square() * fitted
    return err.flatten(1).sum(1) / (fitted.flatten(1).sum(1) * imgs.shape[1])


@torch.no_grad()
def layout_stats(
    model, raw: torch.Tensor, imgs: torch.Tensor, fitted: torch.Tensor, start_xy: np.ndarray
) -> dict:
    """PSNR (on the fitted pixels) and layout statistics of the Gaussians decoded from ``raw``."""
    s = model.img_size
    g = model.head.activate(raw)
    proj = model.project_gaussians(g, s, s)
    image = model.render_gaussians(g, s, s, return_depth=False).image
    psnr = -10 * torch.log10(per_image_mse(image, imgs, fitted).clamp_min(1e-12))
    centres = proj.means2d.cpu().numpy()
    grads = gradient_magnitude(imgs.permute(0, 2, 3, 1).float().cpu().numpy())
    own, other = detail_at_centres(grads, [centre_pixels(c, s, s) for c in centres])
    layout = layout_dependence(proj.depths.cpu().numpy(), centres)
    return {
        "psnr": float(psnr.mean()),
        "psnr_per_image": [round(float(x), 4) for x in psnr],
        "centre_ratio": layout["centre_ratio"],
        "centre_px": layout["centre_px"],
        "moved_px": float(np.linalg.norm(centres - start_xy, axis=-1).mean()),
        "detail_gain": finite_mean(own - other),
        "depth_order_agreement": layout["depth_order_agreement"],
    }


def fit_per_image(
    model,
    imgs: torch.Tensor,
    start: str,
    steps: int,
    lr: float,
    report_steps,
    freeze_centres: bool = False,
    mask_ratio: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    return_raw: bool = False,
    jitter: float = 0.0,
) -> list[dict] | tuple[list[dict], torch.Tensor]:
    """Fit each image's Gaussians to it alone from ``start``; statistics at ``report_steps``.

    ``freeze_centres``: the centres' x and y stay where they start (everything else is fitted).
    ``mask_ratio`` > 0: the model predicts from the visible patches of a seeded random mask and
    the fit sees only those patches' pixels (what the model itself was shown).
    ``return_raw``: also return the fitted raw outputs [B, k, 11 + C]. ``jitter`` > 0: add
    seeded N(0, jitter^2) noise to the start's raw outputs (how reproducible is a fit?).
    """
    if start not in STARTS:
        raise GmaeError(f"start must be one of {STARTS}, got {start!r}")
    s = model.img_size
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(imgs), model.encoder.num_patches, generator=gen)
    with torch.no_grad():
        latent, mask, ids_restore = model.encode(imgs, mask_ratio, noise)
        raw0 = model.forward_decoder_raw(latent, ids_restore, imgs).float()
    fitted = (~pixel_mask(mask, model.patch_size)).unsqueeze(1).float()
    if start == "common":
        raw0 = raw0.mean(0, keepdim=True).expand_as(raw0)
    if jitter > 0:
        raw0 = raw0 + jitter * torch.randn(raw0.shape, generator=gen)
    raw = raw0.clone().requires_grad_(True)
    with torch.no_grad():
        start_xy = model.project_gaussians(model.head.activate(raw0), s, s).means2d.cpu().numpy()
    opt = torch.optim.Adam([raw], lr=lr)
    # Each image's loss is its own mean, summed, so every image is fitted at the same rate.
    rows = []
    desc = f"fit ({start}{', centres frozen' if freeze_centres else ''})"
    for step in tqdm(range(steps + 1), desc=desc, disable=not progress):
        if step in report_steps:
            rows.append({"step": step, **layout_stats(model, raw.detach(), imgs, fitted, start_xy)})
        if step == steps:
            break
        g = model.head.activate(raw)
        image = model.render_gaussians(g, s, s, return_depth=False).image
        loss = per_image_mse(image, imgs, fitted).sum()
        if model.raw_penalty > 0:  # the model's own guard, per image
            loss = loss + len(imgs) * model.raw_penalty * saturation_penalty(raw, model.raw_bound)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if freeze_centres:  # a zero gradient is a zero Adam step
            raw.grad[..., 0:2] = 0
        opt.step()
    return (rows, raw.detach()) if return_raw else rows


def oracle_table(results: dict[str, dict]) -> list[str]:
    """Markdown table, one column per result file: the model's own prediction, then each fit
    (PSNR, centre ratio) and what freeing the centres is worth."""
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |")

    def stats_cell(row_: dict) -> str:
        ratio = row_.get("centre_ratio")  # null where no image had a spread (json_safe's nan)
        ratio = "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}"
        return f"{row_['psnr']:.2f} dB, ratio {ratio}"

    def fit_cell(r, fit):
        return stats_cell(r["fits"][fit][-1])

    def worth_cell(r, start):
        return format_diff(r["centres_worth"][start], digits=2)

    def own_cell(r):  # step 0 of the fit from the model's own prediction
        return stats_cell(r["fits"]["model"][0]) if "model" in r["fits"] else "-"

    row("images, mask ratio, fit steps",
        lambda r: f"{r['n_images']}, {r['mask_ratio']:g}, {r['steps']}")  # fmt: skip
    row("model's prediction", own_cell)
    for start in STARTS:
        if all(start in r["fits"] for r in results.values()):
            row(f"fit from {start} start", lambda r, s=start: fit_cell(r, s))
            row("same, centres frozen", lambda r, s=start: fit_cell(r, f"{s}_frozen"))
            row("free - frozen (dB, 95 % CI)", lambda r, s=start: worth_cell(r, s))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt")
    ap.add_argument("--data", default="imagenette-128")
    ap.add_argument("--split", default="val")
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05, help="Adam's lr on the raw outputs")
    ap.add_argument("--report-steps", type=int, nargs="+", default=[0, 25, 50, 100, 200, 300])
    ap.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS))
    ap.add_argument(
        "--mask-ratio",
        type=float,
        default=0.0,
        help="0: the whole image (zero-shot conditions); e.g. 0.75: predict and fit on the "
        "visible patches of a seeded mask (training conditions)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the mask")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="where to write the result")
    ap.add_argument(
        "--table", nargs="+", metavar="JSON", help="only print a table of earlier results"
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.table:
        results = {}
        for f in args.table:
            try:
                results[Path(f).stem] = json.loads(Path(f).read_text())
            except (OSError, ValueError) as e:
                raise SystemExit(f"centre_oracle: cannot read {f}: {e}") from None
        print("\n".join(oracle_table(results)))
        return
    if not args.ckpt or not args.json:
        raise SystemExit("centre_oracle: --ckpt and --json are needed (or --table FILES)")
    if args.num_images < 2:
        raise SystemExit("centre_oracle: --num-images must be at least 2 (spread across images)")
    if not 0.0 <= args.mask_ratio < 1.0:
        raise SystemExit(f"centre_oracle: --mask-ratio must be in [0, 1), got {args.mask_ratio}")
    if args.steps < 1:
        raise SystemExit(f"centre_oracle: --steps must be at least 1, got {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from gmae import io as gio

    try:
        gio.check_output_file(args.json)  # before minutes of fitting
    except GmaeError as e:
        raise SystemExit(f"centre_oracle: {e}") from None
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.stats import evenly_spaced_images

    t0 = time.time()
    try:  # a missing or hostile checkpoint, an unknown data set: one line, not a traceback
        model = load_mae_or_gmae(args.ckpt, "gmae", "cpu")
        imgs = evenly_spaced_images(args.data, args.split, model.img_size, args.num_images)
    except GmaeError as e:
        raise SystemExit(f"centre_oracle: {e}") from None
    model.requires_grad_(False)
    if model.camera_model == "pinhole":  # screen centres there are x / z: z would move them
        raise SystemExit("centre_oracle: frozen centres need the gmae or ortho camera, "
                         f"{args.ckpt} uses pinhole")  # fmt: skip
    report = sorted({r for r in args.report_steps if 0 <= r <= args.steps} | {0, args.steps})
    result = {
        "ckpt": str(args.ckpt),
        "source": {"data": args.data, "split": args.split},
        "n_images": len(imgs),
        "mask_ratio": args.mask_ratio,
        "seed": args.seed,
        "steps": args.steps,
        "lr": args.lr,
        "fits": {},
        "centres_worth": {},
    }
    for start in args.starts:
        for frozen in (False, True):
            name = f"{start}_frozen" if frozen else start
            rows = fit_per_image(
                model, imgs, start, args.steps, args.lr, report, frozen, args.mask_ratio,
                args.seed, not args.no_progress,
            )  # fmt: skip
            result["fits"][name] = rows
            for r in rows:
                print(
                    f"{name:13s} step {r['step']:4d}: PSNR {r['psnr']:.2f}, centre ratio "
                    f"{r['centre_ratio']:.3f} ({r['centre_px']['across_images']:.2f} / "
                    f"{r['centre_px']['within_image']:.2f} px), moved {r['moved_px']:.2f} px, "
                    f"detail gain {r['detail_gain']:+.3f}"
                )
        # What moving the centres is worth: free minus frozen, per image, after the last step.
        free, fixed = result["fits"][start][-1], result["fits"][f"{start}_frozen"][-1]
        worth = paired_bootstrap(free["psnr_per_image"], fixed["psnr_per_image"])
        result["centres_worth"][start] = worth
        print(
            f"{start}: free - frozen centres {format_diff(worth, digits=2)} dB "
            f"after {args.steps} steps"
        )
    result["seconds"] = round(time.time() - t0, 1)
    gio.write_json(args.json, result)
    print(f"wrote {args.json}")
    if any(math.isnan(r["centre_ratio"]) for rows in result["fits"].values() for r in rows):
        print("centre_oracle: some centre ratios are nan (no spread within an image)")


if __name__ == "__main__":
    main()
