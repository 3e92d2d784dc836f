"""Reconstruction quality: PSNR and SSIM (scikit-image) of MAE and GMAE reconstructions.

Images and reconstructions are in [0, 1] (``data_range=1``); metrics are computed per image and
averaged. Two regions:

- **masked**: the pixels of the masked patches only, where both models predict unseen content.
  PSNR from the MSE over those pixels; SSIM is the mean of the SSIM map (7x7 windows over the
  whole image, scikit-image's default) over those pixels, away from the image border as
  scikit-image's own mean. Undefined (None) at mask ratio 0.
- **full**: the whole image of the model's raw prediction: GMAE's render; MAE's decoder output
  for *every* patch (not MAE's visualisation, which pastes the visible input patches back in and
  would score visible patches as perfect). A norm-pix MAE predicts per-patch normalised pixels,
  so its image borrows each patch's true mean and std (as MAE's demo does): optimistic, and
  flagged as ``borrows_patch_stats`` in the output.

Masks come from a seeded generator, so two models with the same patch grid see the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor, nn
from tqdm.auto import tqdm

from gmae.errors import GmaeError
from gmae.models import MAE

SSIM_WIN = 7  # scikit-image's default window


def image_metrics(target: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """PSNR / SSIM of one [C, H, W] image in [0, 1]; ``mask`` [H, W] (True = masked) adds the
    masked-region versions (None when nothing is masked)."""
    if target.shape != pred.shape or target.ndim != 3:
        raise GmaeError(f"expected two [C, H, W] images, got {target.shape} and {pred.shape}")
    if min(target.shape[1:]) < SSIM_WIN:
        raise GmaeError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN} pixels")
    target = target.astype(np.float64)
    pred = pred.astype(np.float64)
    with np.errstate(divide="ignore"):  # a perfect match has PSNR inf
        psnr = float(peak_signal_noise_ratio(target, pred, data_range=1.0))
        ssim, ssim_map = structural_similarity(
            target, pred, data_range=1.0, channel_axis=0, win_size=SSIM_WIN, full=True
        )
        out = {"psnr": psnr, "ssim": float(ssim), "masked_psnr": None, "masked_ssim": None}
        if mask is not None and mask.any():
            out["masked_psnr"] = float(
                peak_signal_noise_ratio(target[:, mask], pred[:, mask], data_range=1.0)
            )
            inner = np.zeros_like(mask)
            pad = (SSIM_WIN - 1) // 2
            inner[pad:-pad, pad:-pad] = True
            region = mask & inner
            if region.any():
                out["masked_ssim"] = float(ssim_map[:, region].mean())
    return out


def is_mae(model: nn.Module) -> bool:
    return isinstance(model, MAE)


@torch.no_grad()
def mae_prediction_image(
    model: nn.Module, imgs: Tensor, mask_ratio: float, noise: Tensor | None
) -> Tensor:
    """MAE's decoder output for every patch as a [0, 1] image (see the module docstring)."""
    out = model(imgs, mask_ratio, noise)
    return model.prediction_image(imgs, out.pred)


@torch.no_grad()
def reconstruct_batch(
    model: nn.Module, imgs: Tensor, mask_ratio: float, noise: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(recon, full prediction, pixel mask [B, H, W]; True = masked) of ``reconstruct``."""
    rec = model.reconstruct(imgs, mask_ratio=mask_ratio, noise=noise)
    if "pred" in rec:  # a model that exposes its raw prediction directly
        full = rec["pred"]
    elif is_mae(model):
        full = mae_prediction_image(model, imgs, mask_ratio, noise)
    else:  # GMAE: the recon is the full render
        full = rec["recon"]
    return rec["recon"], full, rec["mask_image"][:, 0] > 0.5


def recon_eval(
    model: nn.Module,
    loader,
    device: torch.device,
    mask_ratios: Sequence[float],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Mean PSNR / SSIM per mask ratio over the images of ``loader`` ([0, 1] images), and the
    same four numbers for each image (``images``, in loader order)."""
    if not hasattr(model, "reconstruct"):
        raise GmaeError("this checkpoint has no decoder (encoder only): nothing to reconstruct")
    model.eval().to(device)
    n_patches = model.encoder.num_patches
    results = []
    for ratio in mask_ratios:
        if not 0.0 <= ratio < 1.0:
            raise GmaeError(f"mask ratio must be in [0, 1), got {ratio}")
        gen = torch.Generator().manual_seed(seed)
        per_image: list[dict[str, Any]] = []
        for imgs, _ in tqdm(loader, desc=f"recon mask {ratio:g}", unit="batch", leave=False):
            noise = torch.rand(imgs.shape[0], n_patches, generator=gen).to(device)
            imgs = imgs.to(device)
            recon, full, mask = reconstruct_batch(model, imgs, ratio, noise)
            for i in range(imgs.shape[0]):
                target = imgs[i].float().cpu().numpy()
                m = mask[i].cpu().numpy()
                masked = image_metrics(target, recon[i].float().cpu().numpy(), m)
                whole = image_metrics(target, full[i].float().cpu().numpy())
                per_image.append(
                    {
                        "masked_psnr": masked["masked_psnr"],
                        "masked_ssim": masked["masked_ssim"],
                        "psnr": whole["psnr"],
                        "ssim": whole["ssim"],
                    }
                )
        results.append(
            {
                "mask_ratio": ratio,
                "n_images": len(per_image),
                **_average(per_image),
                # per image, in loader order, for paired comparisons (gmae.evaluate.paired)
                "images": per_image,
            }
        )
    return results


def _average(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in rows[0] if rows else ():
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out
