"""Output types shared by MAE and GMAE, and the patch-wise reconstruction loss."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Gaussians:
    """A batch of activated 3-D Gaussians, one set of K per image (renderer conventions).

    means [B, K, 3] in (-1, 1); scales [B, K, 3] in (0, scale_cap); quats [B, K, 4] unit, wxyz;
    colors [B, K, C] in (0, 1); opacities [B, K] in (0, 1).
    """

    means: Tensor
    scales: Tensor
    quats: Tensor
    colors: Tensor
    opacities: Tensor

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    def detach(self) -> Gaussians:
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def float(self) -> Gaussians:
        """Every tensor as float32 (``Tensor.float``: the same tensors when already float32)."""
        return Gaussians(**{f.name: getattr(self, f.name).float() for f in fields(self)})

    def index(self, idx: Tensor) -> Gaussians:
        """Gather Gaussians per image: idx [B, K'] of indices into K (e.g. a depth ordering)."""

        def take(t: Tensor) -> Tensor:
            trailing = t.shape[2:]
            i = idx.reshape(*idx.shape, *[1] * len(trailing)).expand(*idx.shape, *trailing)
            return torch.gather(t, 1, i)

        return Gaussians(**{f.name: take(getattr(self, f.name)) for f in fields(self)})


@dataclass
class PretrainOutput:
    """What ``MAE.forward`` and ``GMAE.forward`` return.

    loss: scalar. mask: [B, N], 1 = masked. pred: MAE patch predictions [B, N, p*p*C] (in the
    loss's target space); GMAE the rendered image [B, C, H, W] in [0, 1]. latent: encoder output
    [B, 1 + N_vis, D] (cls first). gaussians: GMAE's activated Gaussians, None for MAE. raw:
    GMAE's raw head outputs.
    """

    loss: Tensor
    mask: Tensor
    pred: Tensor
    latent: Tensor
    gaussians: Gaussians | None = None
    raw: Tensor | None = None  # GMAE: the head's raw outputs [B, K, 11 + C] (health statistics)


def normalize_patches(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch (x - mean) / sqrt(var + eps) over the last dim (MAE's norm-pix, unbiased var)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / (var + eps) ** 0.5


def patch_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean squared error per patch [B, N, P], averaged over patches with weight [B, N] (0 / 1).

    If no patch has weight (mask ratio 0 with a masked-only loss) every patch counts instead of
    returning 0 / 0; ``torch.where`` keeps this free of a host-device sync.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    weight = weight.float()
    weight = torch.where(weight.sum() > 0, weight, torch.ones_like(weight))
    return (per_patch * weight).sum() / weight.sum()
