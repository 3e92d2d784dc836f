"""Zero-shot edges from layer-index discontinuities [paper; rule details are choices].

1. Sort each image's Gaussians by camera depth and split them into L equal groups [paper].
2. Add the groups front to back; A_g(p) is the accumulated alpha at pixel p after groups 0..g.
3. A pixel takes the index of the group that "changes it significantly" [choice, ``rule``]:
   - ``median`` (default): the first g with A_g(p) >= 0.5 A_final(p), the group at which the
     pixel is half formed (the weighted median of the group index under the compositing
     weights). Opacity-based, so layers of the same colour still separate; the 0.5 of the
     pixel's *own* final alpha makes it independent of how opaque the picture is overall; a
     median is stable where two groups contribute almost equally (argmax flips there).
   - ``argmax``: the g whose addition adds the most alpha, argmax_g (A_g - A_{g-1}).
   Pixels with A_final < 0.05 (>= 95 % background) get the extra index L.
4. Edge strength per L [choice]: e_L(p) = sqrt(max_{q in 3x3(p)} |idx(p) - idx(q)| / L), in
   [0, 1]: the size of the index jump as a fraction of the depth stack (occlusions across many
   layers are stronger than neighbouring layers). sqrt is a monotone stretch so that the
   benchmark's uniform thresholds resolve small jumps; it does not reorder pixels.
5. Combined map [choice]: the mean of the per-L maps. Coarse L (object-level edges) and fine L
   (detail) vote equally; averaging over L also averages out where the group cuts fall.

Control ``order="luminance"`` [ours]: the same Gaussians and rule, but grouped by brightness
(luminance of the predicted colour, brightest first) instead of camera depth. A model whose depth
mostly sorts its Gaussians by brightness gives the same edges both ways; layer edges owe
something to the depth itself only where they beat this control.

All L settings come from one set of renders: the rank axis is cut at the union of every L's group
bounds, each segment is rendered alone (alpha only), and A_g for every L is a cumulative product
over segments (see ``gmae.zeroshot.layers``). Everything is vectorised over groups and images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.filters import gaussian, sobel
from torch import Tensor

from gmae.errors import ArgumentError, GmaeError
from gmae.models import Gaussians
from gmae.models.health import gaussian_luminance
from gmae.zeroshot.layers import (
    camera_depths,
    depth_rank,
    group_bounds,
    range_keep,
    render_subsets,
)

DEFAULT_LAYERS = (4, 8, 16, 32)
RULES = ("median", "argmax")
ORDERS = ("depth", "luminance")  # what sorts the Gaussians into groups
HALF = 0.5  # the median rule's fraction of the final alpha
MIN_ALPHA = 0.05  # below this final alpha a pixel is background (index L)


def group_rank(model, g: Gaussians, order: str = "depth") -> Tensor:
    """Rank [B, K] of each Gaussian in its image's group order: nearest first (``depth``) or
    brightest first (``luminance``, the control; skimage's rgb2gray weights)."""
    if order == "depth":
        return depth_rank(camera_depths(model, g))
    if order == "luminance":
        return depth_rank(-gaussian_luminance(g.colors))
    raise GmaeError(f"unknown group order {order!r}; choose from {', '.join(ORDERS)}")


@torch.no_grad()
def cumulative_alpha(
    model, g: Gaussians, height: int, width: int, layers: Sequence[int], order: str = "depth"
) -> dict[int, Tensor]:
    """A [B, L, H, W] for each L: accumulated alpha after groups 0..g (nearest first, or in
    ``order``), from one set of segment renders (colour-free: a single zero channel). A segment
    rendered alone accumulates 1 - prod(1 - a) over its Gaussians, whatever their depths."""
    num = g.num_gaussians
    per_l = {int(L): group_bounds(num, int(L)) for L in layers}
    cuts = sorted({c for b in per_l.values() for c in b})
    rank = group_rank(model, g, order)
    gray = Gaussians(g.means, g.scales, g.quats, torch.zeros_like(g.means[..., :1]), g.opacities)
    seg = render_subsets(
        model, gray, range_keep(rank, cuts), height, width, background=0.0, return_depth=False
    )
    # Segments rendered alone, composited front to back: A_s = 1 - prod_{i <= s} (1 - a_i).
    cum = 1.0 - torch.cumprod(1.0 - seg.alpha[:, :, 0], dim=1)  # [B, S, H, W]
    pos = {c: i for i, c in enumerate(cuts)}
    return {L: cum[:, [pos[c] - 1 for c in b[1:]]] for L, b in per_l.items()}


def index_map(acc: Tensor, rule: str = "median") -> Tensor:
    """Group index [B, H, W] (0 = nearest, L = background) from cumulative alpha [B, L, H, W]."""
    if rule not in RULES:
        raise GmaeError(f"unknown edge rule {rule!r}; choose from {', '.join(RULES)}")
    L = acc.shape[1]
    final = acc[:, -1]
    if rule == "median":
        idx = (acc < HALF * final[:, None]).sum(dim=1)
        idx = idx.clamp(max=L - 1)  # float rounding at the last group
    else:
        step = torch.diff(acc, dim=1, prepend=torch.zeros_like(acc[:, :1]))
        idx = step.argmax(dim=1)
    return torch.where(final < MIN_ALPHA, torch.full_like(idx, L), idx)


def index_edges(idx: Tensor, groups: int) -> Tensor:
    """Edge strength [B, H, W] in [0, 1]: sqrt(largest 3x3 index jump / L) (module docstring)."""
    x = F.pad(idx.float()[:, None], (1, 1, 1, 1), mode="replicate")
    c = x[..., 1:-1, 1:-1]
    hi = F.max_pool2d(x, 3, stride=1)
    lo = -F.max_pool2d(-x, 3, stride=1)
    jump = torch.maximum(hi - c, c - lo)[:, 0]
    return (jump / groups).clamp(0.0, 1.0).sqrt()


@torch.no_grad()
def gmae_edges(
    model,
    g: Gaussians,
    height: int,
    width: int,
    layers: Sequence[int] = DEFAULT_LAYERS,
    rule: str = "median",
    order: str = "depth",
) -> tuple[dict[int, Tensor], Tensor, dict[int, Tensor]]:
    """Per-L edge maps {L: [B, H, W]}, the combined map [B, H, W] and the index maps
    (``order="luminance"``: the brightness-order control, module docstring)."""
    if not layers:
        raise ArgumentError("layers", "give at least one number of layers ({layers})")
    acc = cumulative_alpha(model, g, height, width, layers, order)
    idx = {L: index_map(a, rule) for L, a in acc.items()}
    edges = {L: index_edges(i, L) for L, i in idx.items()}
    combined = torch.stack(list(edges.values())).mean(dim=0)
    return edges, combined, idx


# --- classical baselines --------------------------------------------------------------------------

BASELINES = ("canny", "sobel")
CANNY_SIGMA = 2.0  # [choice] fixed for every image


def _gray(pixels: np.ndarray) -> np.ndarray:
    return rgb2gray(pixels) if pixels.ndim == 3 else pixels.astype(np.float64) / 255.0


def sobel_edges(pixels: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grayscale photo (scikit-image), clipped to [0, 1]."""
    return np.clip(sobel(_gray(pixels)), 0.0, 1.0)


def canny_edges(pixels: np.ndarray, sigma: float = CANNY_SIGMA) -> np.ndarray:
    """Soft Canny: the non-maximum-suppressed edge pixels of scikit-image's Canny (hysteresis
    thresholds 0, so the threshold sweep of the benchmark replaces them), weighted by the
    gradient magnitude of the smoothed image (Sobel of a Gaussian blur, clipped to [0, 1])."""
    gray = _gray(pixels)
    nms = canny(gray, sigma=sigma, low_threshold=0.0, high_threshold=0.0)
    mag = sobel(gaussian(gray, sigma=sigma))
    return np.clip(np.where(nms, mag, 0.0) * 4.0, 0.0, 1.0)


def baseline_edges(name: str, pixels: np.ndarray) -> np.ndarray:
    if name == "canny":
        return canny_edges(pixels)
    if name == "sobel":
        return sobel_edges(pixels)
    raise GmaeError(f"unknown edge baseline {name!r}; choose from {', '.join(BASELINES)}")
