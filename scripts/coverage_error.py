"""Where a GMAE's masked-pixel error sits, by how much of each pixel its Gaussians cover.

A pixel's render is its Gaussians' colours composited over the background with total coverage
alpha in [0, 1]; where alpha is low the render is mostly the background's flat colour, a
guess. For each checkpoint, on the same N validation images under the same seeded masks: the
masked pixels' mean squared error, the mean alpha over them, and per alpha bin the share of
masked pixels in it, their mean squared error and their share of the total error. Two models
that reconstruct equally well may spread their error very differently: one fills every pixel
with a committed colour, another leaves part of the masked area to the background.

    python scripts/coverage_error.py --ckpt A.safetensors B.safetensors --num-images 128 \\
        --json results/health_sweep/coverage_error.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from gmae.errors import GmaeError

EDGES = (0.0, 0.5, 0.9, 0.99)  # lower edges of the alpha bins; the last one runs to 1


def coverage_bins(err: np.ndarray, alpha: np.ndarray, edges=EDGES) -> dict:
    """Per-pixel squared errors and alphas (same shape, masked pixels only) -> the mean error,
    mean alpha and, per bin [edges[i], edges[i+1]) (the last one closed at 1), the pixel share,
    mean error (None when empty) and share of the summed error."""
    err, alpha = np.asarray(err, np.float64).ravel(), np.asarray(alpha, np.float64).ravel()
    if err.shape != alpha.shape or err.size == 0:
        raise GmaeError(f"need as many errors as alphas (> 0), got {err.size} and {alpha.size}")
    total = err.sum()
    bins = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else math.inf
        inside = (alpha >= lo) & (alpha < hi)
        bins.append({
            "alpha_from": lo,
            "alpha_to": min(hi, 1.0),
            "pixel_share": float(inside.mean()),
            "mse": float(err[inside].mean()) if inside.any() else None,
            "error_share": float(err[inside].sum() / total) if total > 0 else 0.0,
        })  # fmt: skip
    return {"masked_mse": float(err.mean()), "alpha_mean": float(alpha.mean()), "bins": bins}


@torch.no_grad()
def masked_errors(model, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
    """Squared error (mean over colour channels) and alpha of every masked pixel."""
    from gmae.models.vit import unpatchify

    out = model(imgs, mask_ratio, noise)
    size, p = model.img_size, model.patch_size
    # alpha does not depend on the background; the error is the forward's own render's (over
    # its background_fill, if any)
    alpha = model.render_gaussians(out.gaussians, size, size, return_depth=False).alpha
    masked = unpatchify(out.mask.unsqueeze(-1).expand(-1, -1, p * p), p, size, size) > 0.5
    err = ((out.pred - imgs) ** 2).mean(1, keepdim=True)
    return err[masked].numpy(), alpha[masked].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="GMAE checkpoints, same image size")
    ap.add_argument("--data", default="imagenette-128")
    ap.add_argument("--split", default="val")
    ap.add_argument("--num-images", type=int, default=128)
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if args.num_images < 1 or not 0.0 < args.mask_ratio < 1.0:
        raise SystemExit("coverage_error: needs --num-images >= 1 and --mask-ratio in (0, 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from gmae import io as gio
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.stats import evenly_spaced_images

    try:
        gio.check_output_file(args.json)
        models = [(c, load_mae_or_gmae(c, "gmae", "cpu").eval()) for c in args.ckpt]
        sizes = {(m.img_size, m.encoder.num_patches) for _, m in models}
        if len(sizes) != 1:
            raise GmaeError(f"the checkpoints differ in image size or patch grid: {sorted(sizes)}")
        ((size, n_patches),) = sizes
        imgs = evenly_spaced_images(args.data, args.split, size, args.num_images)
    except GmaeError as e:
        raise SystemExit(f"coverage_error: {e}") from None
    t0 = time.time()
    noise = torch.rand(len(imgs), n_patches, generator=torch.Generator().manual_seed(args.seed))
    result = {
        "source": {"data": args.data, "split": args.split},
        "n_images": len(imgs),
        "mask_ratio": args.mask_ratio,
        "seed": args.seed,
        "models": [],
    }
    for ckpt, model in models:
        r = {"ckpt": ckpt, **coverage_bins(*masked_errors(model, imgs, args.mask_ratio, noise))}
        result["models"].append(r)
        cells = " | ".join(
            f"alpha [{b['alpha_from']:g}, {b['alpha_to']:g}]: {b['pixel_share']:.3f} of px, "
            f"error share {b['error_share']:.3f}"
            for b in r["bins"]
        )
        head = f"{Path(ckpt).name}: masked MSE {r['masked_mse']:.4f}"
        print(f"{head}, mean alpha {r['alpha_mean']:.3f} | {cells}")
    result["seconds"] = round(time.time() - t0, 1)
    gio.write_json(args.json, result)


if __name__ == "__main__":
    main()
