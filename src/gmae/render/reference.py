"""Dense reference compositor: every pixel x every Gaussian, plain autograd.

This is the vectorised equivalent of gsplat's per-pixel loop (docs/renderer.md): alpha is masked
to 0 where the loop would skip, transmittance comes from a cumulative sum of log(1 - alpha), and
the early stop is a (gradient-free) mask T_incl > threshold. It is slow and memory-hungry
(several B x H*W x K tensors) on purpose: it is the ground truth the fast path is tested against,
and works in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gmae.render.projection import Projection
from gmae.render.settings import RenderSettings


def composite_reference(
    proj: Projection,
    features: Tensor,
    height: int,
    width: int,
    *,
    settings: RenderSettings,
) -> tuple[Tensor, Tensor]:
    """Composite front to back with ``settings``' alpha clamp and thresholds. Returns
    ``(sum_i w_i f_i [B, F, H, W], T_final [B, 1, H, W])``."""
    max_alpha, alpha_threshold = settings.max_alpha, settings.alpha_threshold
    transmittance_threshold = settings.transmittance_threshold
    B, K = proj.depths.shape
    dev, dt = features.device, features.dtype

    # Ascending camera depth; a stable sort breaks ties by index.
    order = torch.sort(proj.depths.detach(), dim=1, stable=True).indices

    def take(t: Tensor) -> Tensor:
        idx = order.view(B, K, *([1] * (t.dim() - 2))).expand_as(t)
        return torch.gather(t, 1, idx)

    means2d, conics, opac = take(proj.means2d), take(proj.conics), take(proj.opacities)
    feats, visible = take(features), take(proj.visible)

    ys, xs = torch.meshgrid(
        torch.arange(height, device=dev, dtype=dt) + 0.5,
        torch.arange(width, device=dev, dtype=dt) + 0.5,
        indexing="ij",
    )
    px, py = xs.reshape(1, -1, 1), ys.reshape(1, -1, 1)  # [1, HW, 1]
    dx = means2d[:, None, :, 0] - px  # [B, HW, K]
    dy = means2d[:, None, :, 1] - py
    a, b, c = (conics[:, None, :, i] for i in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opac[:, None, :] * torch.exp(-sigma), max=max_alpha)
    used = (sigma >= 0) & (alpha >= alpha_threshold) & visible[:, None, :]
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))

    log_1ma = torch.log1p(-alpha)
    log_t_incl = torch.cumsum(log_1ma, dim=-1)
    # Transmittance in front of each Gaussian: the inclusive sum shifted by one.
    t_excl = torch.exp(F.pad(log_t_incl[..., :-1], (1, 0)))
    # The loop stops before the first Gaussian that would push T to <= threshold; T only
    # decreases, so "not yet stopped" is exactly T_incl > threshold.
    alive = (torch.exp(log_t_incl) > transmittance_threshold).detach()
    alpha = torch.where(alive, alpha, torch.zeros_like(alpha))
    w = alpha * t_excl  # [B, HW, K]

    accum = torch.bmm(w, feats).transpose(1, 2).reshape(B, -1, height, width)
    t_final = torch.exp(torch.log1p(-alpha).sum(-1)).reshape(B, 1, height, width)
    return accum, t_final
