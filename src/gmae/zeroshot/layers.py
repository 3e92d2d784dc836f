"""Depth layering of predicted Gaussians [paper, section 5 of docs/method.md].

Gaussians are ordered by camera depth, nearest first (``depth_rank``). Any subset is rendered
with the renderer's ``keep`` mask, so a partial render is exactly the full render of fewer
Gaussians. Equal depth groups and "first K" subsets are rank ranges.

Segments: to get many nested partial renders cheaply, the rank axis is cut into segments, each
rendered alone over a transparent (0) background; front-to-back compositing is associative over
contiguous depth ranges (C = C_a + T_a C_b, T = T_a T_b), so the render of any run of segments
is a cumulative product / sum over them (``composite``), vectorised over segments. Only the
renderer's early stop (transmittance <= 1e-4) differs, by at most ~1e-4 per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gmae.errors import GmaeError
from gmae.images import headless_pyplot
from gmae.models import Gaussians
from gmae.zeroshot.common import take_images, with_colors

DEFAULT_KS = (8, 16, 32, 64, 128, 256)
MAX_RENDER_PIXELS = 1 << 23  # pixels per renderer call (B x H x W), bounds memory


# --- depth order --------------------------------------------------------------------------------


def camera_depths(model, g: Gaussians) -> Tensor:
    """Camera-space depth [B, K] of each Gaussian centre (z + 8 for the default camera)."""
    b = g.means.shape[0]
    cam = model.camera_at(model.img_size, model.img_size)
    view = cam.viewmats(b, g.means.device, g.means.dtype)  # [B, 4, 4] world -> camera
    return torch.einsum("bkj,bj->bk", g.means, view[:, 2, :3]) + view[:, 2, 3, None]


def depth_rank(depths: Tensor) -> Tensor:
    """Rank [B, K] of each Gaussian in its image's nearest-first order (0 = nearest).

    Ties keep the Gaussian index order (stable sort), so ranks are reproducible.
    """
    order = torch.argsort(depths, dim=1, stable=True)
    rank = torch.empty_like(order)
    ar = torch.arange(depths.shape[1], device=depths.device).expand_as(order)
    return rank.scatter_(1, order, ar)


def group_bounds(num: int, groups: int) -> list[int]:
    """Rank cut points of ``groups`` equal depth groups of ``num`` Gaussians.

    Group g holds ranks [ceil(g num / L), ceil((g + 1) num / L)), i.e. floor(rank L / num) = g:
    sizes differ by at most one.
    """
    if not 1 <= groups <= num:
        raise GmaeError(f"cannot split {num} Gaussians into {groups} groups (need 1 <= L <= K)")
    return [-(-g * num // groups) for g in range(groups + 1)]


def group_index(rank: Tensor, groups: int) -> Tensor:
    """Depth group [B, K] (0 = nearest) of each Gaussian for ``groups`` equal groups."""
    num = rank.shape[1]
    group_bounds(num, groups)  # validates
    return rank * groups // num


# --- rendering subsets ----------------------------------------------------------------------------


@dataclass
class SubsetRenders:
    """Renders of S subsets per image: image [B, S, C, H, W], alpha [B, S, 1, H, W],
    depth [B, S, 1, H, W] (expected camera depth, 0 where alpha is 0) or None."""

    image: Tensor
    alpha: Tensor
    depth: Tensor | None


@torch.no_grad()
def render_subsets(
    model,
    g: Gaussians,
    keep: Tensor,
    height: int,
    width: int,
    background: float | Tensor | None = None,
    return_depth: bool = True,
    max_pixels: int = MAX_RENDER_PIXELS,
) -> SubsetRenders:
    """Render subsets ``keep [B, S, K]`` of each image's Gaussians, batched over B x S.

    ``background`` None: the model's own (white for GMAE). The B x S renders go through the
    model's ``render_gaussians`` in chunks of about ``max_pixels`` pixels.
    """
    b, s, k = keep.shape
    flat_keep = keep.reshape(b * s, k)
    src = torch.arange(b, device=keep.device).repeat_interleave(s)
    chunk = max(1, max_pixels // (height * width))
    images, alphas, depths = [], [], []
    for start in range(0, b * s, chunk):
        sub = take_images(g, src[start : start + chunk])
        out = model.render_gaussians(
            sub,
            height,
            width,
            keep=flat_keep[start : start + chunk],
            background=background,
            return_depth=return_depth,
        )
        images.append(out.image)
        alphas.append(out.alpha)
        if return_depth:
            depths.append(out.depth)

    def cat(ts: list[Tensor]) -> Tensor:
        t = torch.cat(ts)
        return t.reshape(b, s, *t.shape[1:])

    return SubsetRenders(cat(images), cat(alphas), cat(depths) if return_depth else None)


def first_k_keep(rank: Tensor, ks: Sequence[int]) -> Tensor:
    """keep [B, len(ks), K]: the ``k`` nearest Gaussians of each image, for each k."""
    kt = torch.as_tensor(list(ks), device=rank.device)
    return rank[:, None, :] < kt[None, :, None]


def range_keep(rank: Tensor, bounds: Sequence[int], cumulative: bool = False) -> Tensor:
    """keep [B, S, K] for the rank ranges [bounds[i], bounds[i+1]) (or [0, bounds[i+1]))."""
    lo = torch.as_tensor(list(bounds[:-1]), device=rank.device)
    hi = torch.as_tensor(list(bounds[1:]), device=rank.device)
    r = rank[:, None, :]
    inside = r < hi[None, :, None]
    return inside if cumulative else inside & (r >= lo[None, :, None])


def composite(premult: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of S layers rendered alone over background 0, along dim 1.

    premult [B, S, C, H, W] (a layer's render over 0, i.e. its colour times its alpha), alpha
    [B, S, 1, H, W]. Returns the cumulative premultiplied colour and alpha of layers 0..s for
    every s (same shapes): C_s = sum_{i<=s} T_i C_i with T_i = prod_{j<i} (1 - a_j).
    """
    t_after = torch.cumprod(1.0 - alpha, dim=1)
    t_before = torch.cat([torch.ones_like(alpha[:, :1]), t_after[:, :-1]], dim=1)
    return torch.cumsum(t_before * premult, dim=1), 1.0 - t_after


# --- the layering picture set -------------------------------------------------------------------


@dataclass
class LayerSet:
    """Everything ``gmae zeroshot layers`` shows for a batch of images (all at H x W).

    first_k [B, len(ks), C, H, W]; groups_alone / groups_cumulative [B, L, C, H, W] (over the
    model's background); full [B, C, H, W]; depth_render [B, H, W] (colour = normalised depth,
    0 nearest, 1 farthest, background 1); depth_expected [B, H, W] (the renderer's expected depth,
    normalised the same way, 1 where nothing is drawn); depths [B, K] camera depths; rank [B, K];
    means2d [B, K, 2] pixel positions at H x W.
    """

    ks: list[int]
    groups: int
    first_k: Tensor
    groups_alone: Tensor
    groups_cumulative: Tensor
    full: Tensor
    depth_render: Tensor
    depth_expected: Tensor
    depths: Tensor
    rank: Tensor
    means2d: Tensor


def normalized_depths(depths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image (d - min) / (max - min) of the Gaussians' depths, and the min and max [B, 1]."""
    lo = depths.min(dim=1, keepdim=True).values
    hi = depths.max(dim=1, keepdim=True).values
    return (depths - lo) / (hi - lo).clamp_min(1e-12), lo, hi


@torch.no_grad()
def layer_set(
    model,
    g: Gaussians,
    height: int,
    width: int,
    ks: Sequence[int] = DEFAULT_KS,
    groups: int = 8,
) -> LayerSet:
    """First-K renders (K clipped to the number of Gaussians; "all" always last), equal depth
    groups alone and cumulative, and two depth maps, for a batch of images."""
    num = g.num_gaussians
    ks = sorted({min(int(k), num) for k in ks if int(k) >= 0} | {num})
    depths = camera_depths(model, g)
    rank = depth_rank(depths)
    bounds = group_bounds(num, groups)

    first_k = render_subsets(model, g, first_k_keep(rank, ks), height, width).image
    alone = render_subsets(model, g, range_keep(rank, bounds), height, width).image
    cumul = render_subsets(model, g, range_keep(rank, bounds, True), height, width).image

    dnorm, lo, hi = normalized_depths(depths)
    gray = with_colors(g, dnorm[..., None])
    out = model.render_gaussians(gray, height, width, background=1.0)
    expected = (out.depth[:, 0] - lo[..., None]) / (hi - lo).clamp_min(1e-12)[..., None]
    expected = torch.where(out.alpha[:, 0] > 0, expected.clamp(0, 1), torch.ones_like(expected))
    return LayerSet(
        ks=ks,
        groups=groups,
        first_k=first_k,
        groups_alone=alone,
        groups_cumulative=cumul,
        full=first_k[:, -1],
        depth_render=out.image[:, 0],
        depth_expected=expected,
        depths=depths,
        rank=rank,
        means2d=out.means2d,
    )


def gaussian_scatter(
    photo,
    means2d,
    depths,
    scales,
    opacities,
    title: str = "",
    min_opacity: float = 1.0 / 255.0,
):
    """Matplotlib figure: Gaussian centres on the (faded) photo, coloured by camera depth and
    sized by scale (geometric mean of the three axes). Arrays for one image (numpy)."""
    plt = headless_pyplot()
    h, w = photo.shape[:2]
    sel = np.asarray(opacities) >= min_opacity
    gm = np.exp(np.log(np.clip(scales, 1e-12, None)).mean(-1))
    size = 8.0 + 400.0 * (gm / max(float(gm.max()), 1e-12)) ** 2
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * h / w + 0.3))
    ax.imshow(photo, alpha=0.35, extent=(0, w, h, 0))
    sc = ax.scatter(
        means2d[sel, 0], means2d[sel, 1], c=depths[sel], s=size[sel], cmap="viridis_r",
        alpha=0.75, edgecolors="k", linewidths=0.3,
    )  # fmt: skip
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(title or "Gaussian centres (size = scale, colour = depth)", fontsize=9)
    fig.colorbar(sc, ax=ax, fraction=0.035, label="camera depth (near = yellow)")
    return fig
