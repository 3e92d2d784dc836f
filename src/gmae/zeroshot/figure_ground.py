"""Zero-shot figure-ground masks from depth-ordered Gaussians, baselines, and the IoU scorer.

GMAE rules [choice; the paper shows qualitatively that the nearest groups separate object and
background], both fixed for every image:

- ``gmae_depth_otsu`` (the headline rule): the renderer's expected-depth map at the photo's
  resolution, Otsu-thresholded; figure = the nearer side. Pixels that are less than half covered
  (alpha < 0.5) count as far (ground). Otsu adapts the cut to each image's depth histogram
  without any tuned constant.
- ``gmae_near_alpha``: accumulated alpha of the nearest quarter of the Gaussians (the first of
  L = 4 depth groups) >= 0.5.

Baselines through the same scorer: ``centre_prior`` (centred ellipse with the photo's aspect
covering a third of it), ``all_figure``, ``all_ground``, ``gmae_feature_pca`` (first principal
component of the GMAE encoder's patch tokens, sign chosen so that the border is ground, Otsu),
and with an MAE checkpoint ``mae_recon_error`` (Otsu on MAE's reconstruction error, every patch
masked in all but one of ceil(1 / (1 - mask ratio)) passes; figure = high error) and
``mae_feature_pca``.

Score: foreground IoU per image (1 when both masks are empty), averaged over images
(``iou_fg``), and the mean of foreground and background IoU (``miou``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from skimage.filters import threshold_otsu
from tqdm import tqdm

from gmae.errors import GmaeError
from gmae.models import Gaussians
from gmae.zeroshot.common import IMAGE_SUFFIXES, Photo, model_device, model_input, size_batches
from gmae.zeroshot.layers import camera_depths, depth_rank, first_k_keep, render_subsets

GMAE_RULES = ("gmae_depth_otsu", "gmae_near_alpha")
NEAR_FRACTION = 0.25
CENTRE_AREA = 1.0 / 3.0
COVERED = 0.5


# --- scoring --------------------------------------------------------------------------------------


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise GmaeError(f"mask shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def score_masks(preds: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray]) -> dict:
    """Mean foreground IoU and mean fg/bg IoU of predictions against ground truth, by name."""
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise GmaeError(f"no prediction for {missing[0]} ({len(missing)} missing)")
    if not gts:
        raise GmaeError("no ground-truth masks to score against")
    fg = {n: iou(preds[n], gts[n]) for n in gts}
    bg = {n: iou(~np.asarray(preds[n], bool), ~np.asarray(gts[n], bool)) for n in gts}
    return {
        "iou_fg": float(np.mean(list(fg.values()))),
        "miou": float(np.mean([(fg[n] + bg[n]) / 2 for n in gts])),
        "n_images": len(gts),
        "per_image": fg,
    }


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth mask image as bool (> 127 = figure; Weizmann horses are 0 / 255)."""
    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"mask {path} not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 127
    except (UnidentifiedImageError, OSError) as exc:
        raise GmaeError(f"cannot read mask {path}: {exc}") from exc


def find_masks(folder: str | os.PathLike, names: Sequence[str]) -> dict[str, Path]:
    """The mask file of each image name (same stem, any image suffix) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GmaeError(f"mask folder {folder} not found")
    by_stem = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [n for n in names if n not in by_stem]
    if missing:
        raise GmaeError(f"no mask for image {missing[0]} in {folder} ({len(missing)} missing)")
    return {n: by_stem[n] for n in names}


# --- thresholds and baselines ---------------------------------------------------------------------


def otsu_above(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """values > Otsu threshold (computed over ``valid`` pixels); all False for a flat map."""
    values = np.asarray(values, np.float64)
    sample = values[valid] if valid is not None else values.ravel()
    lo, span = (float(sample.min()), float(np.ptp(sample))) if sample.size else (0.0, 0.0)
    if span <= 1e-6 * max(1.0, float(np.abs(sample).max(initial=0.0))):
        return np.zeros(values.shape, bool)  # flat: no figure (float noise is not a signal)
    # Otsu on the map rescaled to [0, 1]: its 256-bin histogram needs a finite-width range.
    out = (values - lo) / span > threshold_otsu((sample - lo) / span)
    return out & valid if valid is not None else out


def centre_prior(height: int, width: int, area: float = CENTRE_AREA) -> np.ndarray:
    """A centred ellipse with the photo's aspect ratio covering ``area`` of it."""
    r = math.sqrt(4.0 * area / math.pi)  # pi r^2 / 4 = area for semi-axes r W/2, r H/2
    y, x = np.mgrid[0:height, 0:width]
    u = (x + 0.5 - width / 2) / (r * width / 2)
    v = (y + 0.5 - height / 2) / (r * height / 2)
    return u * u + v * v <= 1.0


def _resize(maps, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of [B, h, w] tensors to [B, H, W] numpy."""
    return F.interpolate(maps[:, None].float(), size=(height, width), mode="bilinear")[:, 0].numpy()


def feature_pca_maps(model, imgs) -> np.ndarray:
    """First principal component of each image's encoder patch tokens, [B, g, g] (torch in,
    numpy out), signed so that border patches score below the image mean."""
    with torch.no_grad():
        tokens = model.forward_features(imgs)[:, 1:].float().cpu()  # drop cls
    b, n, _ = tokens.shape
    side = int(round(math.sqrt(n)))
    x = tokens - tokens.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    pc = torch.einsum("bnd,bd->bn", x, vh[:, 0]).reshape(b, side, side)
    border = torch.ones(side, side, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    flip = pc[:, border].mean(dim=1) > pc.reshape(b, -1).mean(dim=1)
    pc = torch.where(flip[:, None, None], -pc, pc)
    return pc


def recon_error_maps(model, imgs, seed: int = 0):
    """Per-pixel squared reconstruction error [B, S, S], each pixel averaged over the passes in
    which its patch was masked. Passes use disjoint visible sets covering every patch once."""
    n = model.encoder.num_patches
    n_vis = max(1, int(n * (1 - model.mask_ratio)))
    passes = math.ceil(n / n_vis)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    err = torch.zeros(imgs.shape[0], *imgs.shape[2:])
    cnt = torch.zeros_like(err)
    for i in range(passes):
        keep = perm[i * n_vis : (i + 1) * n_vis]
        noise = torch.ones(n)
        noise[keep] = 0.0  # the lowest-noise patches are kept
        noise = (noise + torch.rand(n, generator=gen) * 0.5).expand(imgs.shape[0], n)
        with torch.no_grad():
            out = model.reconstruct(imgs, mask_ratio=model.mask_ratio, noise=noise.to(imgs))
        m = out["mask_image"][:, 0].float().cpu()
        e = (out["recon"].float() - imgs.float()).pow(2).sum(dim=1).cpu()
        err += e * m
        cnt += m
    return err / cnt.clamp_min(1.0)


# --- the GMAE rules -------------------------------------------------------------------------------


def gmae_figure_masks(model, g, height: int, width: int) -> dict[str, np.ndarray]:
    """{rule: bool [B, H, W]} for the GMAE rules (module docstring), one render pass each."""
    num = g.num_gaussians
    rank = depth_rank(camera_depths(model, g))
    near = max(1, math.ceil(NEAR_FRACTION * num))
    gray = Gaussians(g.means, g.scales, g.quats, torch.zeros_like(g.means[..., :1]), g.opacities)
    out = render_subsets(model, gray, first_k_keep(rank, [num, near]), height, width, 0.0)
    alpha = out.alpha[:, :, 0].cpu().numpy()  # [B, 2, H, W]
    depth = out.depth[:, 0, 0].cpu().numpy()
    depth_masks = []
    for d, a in zip(depth, alpha[:, 0]):
        covered = a >= COVERED
        far = d[covered].max() if covered.any() else 0.0
        d = np.where(covered, d, far)
        depth_masks.append(otsu_above(-d, covered))  # nearer = larger -d
    return {
        "gmae_depth_otsu": np.stack(depth_masks),
        "gmae_near_alpha": alpha[:, 1] >= COVERED,
    }


def figure_ground(
    model,
    photos: Sequence[Photo],
    mae_model=None,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """{method: {photo name: bool mask at the photo's size}} for every method that applies."""
    out: dict[str, dict[str, np.ndarray]] = {}

    def put(method: str, batch: Sequence[Photo], masks) -> None:
        for p, m in zip(batch, masks):
            out.setdefault(method, {})[p.name] = np.asarray(m, bool)

    def put_otsu(method: str, batch: Sequence[Photo], maps) -> None:
        h, w = batch[0].size
        put(method, batch, [otsu_above(m) for m in _resize(maps, h, w)])

    dev = model_device(model)
    bar = tqdm(total=len(photos), desc="figure-ground", unit="img", disable=not progress)
    for batch in size_batches(photos, batch_size):
        h, w = batch[0].size
        x = model_input(batch, model.img_size, dev)
        with torch.no_grad():
            g = model.predict_gaussians(x, mask_ratio=0.0)
        for rule, masks in gmae_figure_masks(model, g, h, w).items():
            put(rule, batch, masks)
        put_otsu("gmae_feature_pca", batch, feature_pca_maps(model, x))
        if mae_model is not None:
            xm = model_input(batch, mae_model.img_size, model_device(mae_model))
            put_otsu("mae_recon_error", batch, recon_error_maps(mae_model, xm))
            put_otsu("mae_feature_pca", batch, feature_pca_maps(mae_model, xm))
        put("centre_prior", batch, [centre_prior(h, w)] * len(batch))
        put("all_figure", batch, [np.ones((h, w), bool)] * len(batch))
        put("all_ground", batch, [np.zeros((h, w), bool)] * len(batch))
        bar.update(len(batch))
    bar.close()
    return out
