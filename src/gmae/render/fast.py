"""Fast renderer: tile culling + one memory-light custom autograd Function.

How it works (docs/renderer.md has the long version):

1. Tiles. The image is cut into ``tile x tile`` pixel tiles. Each visible Gaussian is listed in
   every tile its box (``radii``) touches and its alpha >= threshold ellipse reaches, nearest
   first. Culling is lossless: elsewhere alpha < alpha_threshold.
2. Rows. Active tiles are sorted by decreasing Gaussian count and cut into groups; within a group
   the intersections are laid out slot-major (row ``offsets[l] + i`` = the l-th nearest Gaussian
   of the group's tile i). The tiles that still have an l-th Gaussian are then always a prefix,
   so every step works on dense ``[n_l, P]`` slices: no padding, no per-step gathers.
3. Forward walks slot by slot, front to back, over all tiles of a group at once, with gsplat's
   exact rules (1/255 skip, max_alpha clamp, stop before T <= 1e-4). It keeps only per-pixel
   state (T, accumulated features, how many slots the pixel went through), never a per-pair
   tensor.
4. Backward walks back to front, recomputes alpha, recovers T by division (T_i = T_{i+1} /
   (1 - alpha_i), as gsplat does) and accumulates analytic gradients. The per-pair sums over a
   tile's pixels are one matmul against the pixel moments [1, u, v, u^2, uv, v^2] (tile-local
   coordinates), turned into gradients for means2d / conics / opacities at the end, vectorised
   over all intersections. The projection is recomputed under autograd and back-propagated with
   ``torch.autograd.grad`` (it is B x K work), so the Function covers inputs -> images.
5. Threads. Everything runs in worker threads with intra-op parallelism 1, groups spread over
   ``torch.get_num_threads()`` workers (see ``_get_pool`` for why).

Two implementations of steps 1-4 share this module's projection, settings and gradient chaining:

* ``_FastRender``: the steps above in PyTorch ops, on any device (the fallback on CPU);
* ``_CompiledRender``: on CPU, the binning and both compositing loops run in a small C kernel
  (``gmae.render.fast_kernel``, compiled at first use) that walks each tile's depth-ordered rows
  with the tile's pixels in SIMD registers: same rules, ~4x less time at GMAE's k = 256 with
  large Gaussians. ``kernel="auto"`` (``render_fast``), ``use_kernel`` and
  ``GMAE_RENDER_KERNEL`` choose; where the kernel cannot be built, the PyTorch loops run.

Memory is O(B H W F + intersections), independent of K x H x W.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gmae.errors import GmaeError
from gmae.render.projection import Projection, project_tensors
from gmae.render.settings import RenderSettings

DEFAULT_GROUP_PIXELS = 1 << 15  # pixels per work unit of one worker thread


def _auto_tile(proj: Projection) -> int:
    """Tile edge from the median box radius: small tiles waste fewer pixel x Gaussian pairs,
    big ones fewer steps. Measured on GMAE-like inputs (docs/renderer.md): 4 px for radii ~5
    (32^2 images), 8 px from 64^2 (radius ~8) up to 224^2 (radius ~26)."""
    r = proj.radii.amax(-1)[proj.visible]
    if r.numel() == 0:
        return 8
    med = float(r.float().median())
    return 4 if med <= 5 else 8 if med <= 40 else 16


# -- tile layout ---------------------------------------------------------------------------


@dataclass
class _Group:
    """A run of active tiles processed as one unit (by one worker thread)."""

    start: int  # first active tile
    stop: int
    offsets: list[int]  # global row of slot l's first tile
    counts: list[int]  # tiles of this group that have a slot l (a prefix: busiest first)


@dataclass
class _Tiles:
    """Intersection layout of a batch (all tensors, no grad)."""

    tile: int  # tile edge in pixels
    n_images: int
    tiles_y: int
    tiles_x: int
    tile_id: Tensor  # [NA] tile-major index (b * TY + y) * TX + x of each active tile
    tile_b: Tensor  # [NA] its image
    groups: list[_Group]
    row_gid: Tensor  # [R] flat Gaussian index (b * K + k) of each row
    row_cx: Tensor  # [R] x of the centre of the row's tile
    row_cy: Tensor  # [R]

    @property
    def pixels(self) -> int:
        return self.tile * self.tile


def _take(t: Tensor, idx: Tensor) -> Tensor:
    # 1-D index_select: advanced indexing is not vectorised on CPU and was 70 % of tiling.
    return t.reshape(-1).index_select(0, idx)


@torch.no_grad()
def _intersections(
    proj: Projection, height: int, width: int, tile: int, alpha_threshold: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (Gaussian, tile) pair whose box touches the tile and whose alpha >= threshold
    ellipse reaches one of its pixel centres, sorted by (image, tile, depth rank): flat Gaussian
    index ``b * K + k``, tile x, tile y and tile-major tile id, ``[N]`` each."""
    means2d, radii, depths = proj.means2d.detach(), proj.radii, proj.depths.detach()
    B, K = depths.shape
    dev = depths.device
    ty_n, tx_n = math.ceil(height / tile), math.ceil(width / tile)
    per_image = ty_n * tx_n

    # Tile range [x0, x1) x [y0, y1) touched by each box (gsplat's isect_tiles rule).
    r = radii.to(means2d.dtype)
    lo = torch.floor((means2d - r) / tile)
    hi = torch.ceil((means2d + r) / tile)
    x0 = lo[..., 0].clamp(0, tx_n).long()
    x1 = hi[..., 0].clamp(0, tx_n).long()
    y0 = lo[..., 1].clamp(0, ty_n).long()
    y1 = hi[..., 1].clamp(0, ty_n).long()
    nx = (x1 - x0).clamp(min=0)
    n_per = torch.where(proj.visible, nx * (y1 - y0).clamp(min=0), 0).flatten()  # [B*K]

    # Stable depth rank within each image: ties keep index order.
    order = torch.sort(depths, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(K, device=dev).expand(B, K))

    # One entry per (Gaussian, tile of its box); float floor division, as int64 division is
    # not vectorised on CPU.
    take = _take
    gid = torch.repeat_interleave(torch.arange(B * K, device=dev), n_per)
    start = torch.cumsum(n_per, 0) - n_per
    local = torch.arange(gid.shape[0], device=dev) - take(start, gid)
    nxg = take(nx, gid).clamp(min=1)
    row_in_box = _floordiv(local, nxg)
    tx = take(x0, gid) + local - row_in_box * nxg
    ty = take(y0, gid) + row_in_box
    # The box is axis-aligned; drop tiles the alpha >= threshold ellipse does not reach (a
    # quarter to a third of them for GMAE-like Gaussians).
    reach = torch.nonzero(_reaches_tile(proj, gid, tx, ty, tile, alpha_threshold))[:, 0]
    gid, tx, ty = (take(t, reach) for t in (gid, tx, ty))
    image = take(torch.arange(B, device=dev).repeat_interleave(K), gid)
    tile_id = image * per_image + ty * tx_n + tx
    _, perm = torch.sort(tile_id * K + take(rank, gid))
    gid, tx, ty, tile_id = (take(t, perm) for t in (gid, tx, ty, tile_id))

    return gid, tx, ty, tile_id


@torch.no_grad()
def build_tiles(
    proj: Projection,
    height: int,
    width: int,
    tile: int = 8,
    group_tiles: int = 0,
    alpha_threshold: float = 1.0 / 255.0,
) -> _Tiles:
    """List, for every tile of every image, the Gaussians whose box touches it, nearest first.

    Active tiles are sorted by decreasing Gaussian count and cut into groups of ``group_tiles``
    (0: one group). Within a group, rows are slot-major: row ``offsets[l] + i`` holds the l-th
    nearest Gaussian of the group's i-th tile, and the tiles that have an l-th Gaussian are always
    the first ``counts[l]``.
    """
    B, K = proj.depths.shape
    dev = proj.depths.device
    ty_n, tx_n = math.ceil(height / tile), math.ceil(width / tile)
    per_image = ty_n * tx_n
    gid, tx, ty, tile_id = _intersections(proj, height, width, tile, alpha_threshold)
    take = _take

    counts = torch.bincount(tile_id, minlength=B * per_image)
    busy = torch.sort(counts, descending=True, stable=True)
    n_active = int((busy.values > 0).sum())
    tile_order = busy.indices[:n_active]
    c = busy.values[:n_active]  # Gaussians per active tile, descending
    rank_of_tile = torch.empty_like(counts)
    rank_of_tile[tile_order] = torch.arange(n_active, device=dev)

    size = group_tiles if group_tiles > 0 else max(n_active, 1)
    n_groups = math.ceil(n_active / size)
    n_slots = int(c[0]) if n_active else 0
    grp = _floordiv(torch.arange(n_active, device=dev), size)
    # n[g, l] = tiles of group g with more than l Gaussians, via a difference table.
    diff = torch.zeros(n_groups, n_slots + 1, dtype=torch.long, device=dev)
    diff[:, 0] = torch.bincount(grp, minlength=n_groups)
    diff.index_put_((grp, c), torch.full_like(c, -1), accumulate=True)
    n = torch.cumsum(diff, 1)[:, :n_slots]
    total = n.sum(1)
    off = torch.cumsum(n, 1) - n + (torch.cumsum(total, 0) - total)[:, None]

    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(gid.shape[0], device=dev) - take(first, tile_id)
    j = take(rank_of_tile, tile_id)
    g = _floordiv(j, size)
    rows = take(off, g * n_slots + slot) + j - g * size
    row_gid = torch.empty_like(gid).index_copy_(0, rows, gid)
    row_tx = torch.empty_like(tx).index_copy_(0, rows, tx)
    row_ty = torch.empty_like(ty).index_copy_(0, rows, ty)

    n_list, off_list, c_list = n.tolist(), off.tolist(), c.tolist()
    groups = []
    for gi in range(n_groups):
        s0, s1 = gi * size, min(n_active, (gi + 1) * size)
        groups.append(_Group(s0, s1, off_list[gi][: c_list[s0]], n_list[gi][: c_list[s0]]))

    half, dt = tile / 2.0, proj.means2d.dtype
    return _Tiles(
        tile=tile,
        n_images=B,
        tiles_y=ty_n,
        tiles_x=tx_n,
        tile_id=tile_order,
        tile_b=_floordiv(tile_order, per_image),
        groups=groups,
        row_gid=row_gid,
        row_cx=(row_tx * tile).to(dt) + half,
        row_cy=(row_ty * tile).to(dt) + half,
    )


def _floordiv(x: Tensor, d: Tensor | int) -> Tensor:
    """Floor division of non-negative int64 tensors via float64 (vectorised; exact here: values
    < 2^40 and a non-multiple is at least 1/d away from the next integer)."""
    d = d.double() if isinstance(d, Tensor) else float(d)
    return torch.floor(x.double() / d).long()


def _reaches_tile(
    proj: Projection, gid: Tensor, tx: Tensor, ty: Tensor, tile: int, alpha_threshold: float
) -> Tensor:
    """For each (Gaussian, tile) pair: can alpha reach the threshold at some pixel centre of the
    tile? min sigma over the rectangle of pixel centres is 0 if the mean is inside, else the
    least of the four edge minima (a convex 1-D quadratic each: clamp its minimiser). Generous
    margins keep this conservative under rounding; it only saves work, never changes pixels."""
    dt = proj.means2d.dtype
    m = proj.means2d.detach().reshape(-1, 2)[gid]
    a, b, c = proj.conics.detach().reshape(-1, 3)[gid].unbind(-1)
    o = proj.opacities.detach().reshape(-1)[gid]
    x0, y0 = (tx * tile).to(dt) + 0.5, (ty * tile).to(dt) + 0.5
    x1, y1 = x0 + (tile - 1), y0 + (tile - 1)
    mx, my = m[:, 0], m[:, 1]

    def sigma(px, py):
        dx, dy = mx - px, my - py
        return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy

    a_, c_ = a.clamp(min=1e-30), c.clamp(min=1e-30)
    best = torch.full_like(mx, float("inf"))
    for X in (x0, x1):  # on x = X, d sigma / d py = 0 at py = my + b (mx - X) / c
        best = torch.minimum(best, sigma(X, torch.clamp(my + b * (mx - X) / c_, y0, y1)))
    for Y in (y0, y1):
        best = torch.minimum(best, sigma(torch.clamp(mx + b * (my - Y) / a_, x0, x1), Y))
    inside = (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1)
    limit = torch.log(o.clamp(min=1e-30) / alpha_threshold)
    return inside | ~(best > limit * 1.001 + 1e-3)  # NaN-safe: keep unless surely out of reach


def _local_coords(tile: int, device, dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel-centre offsets (u, v) from the tile centre, [P] each, and moments [P, 6]."""
    j = torch.arange(tile * tile, device=device)
    u = (j % tile).to(dtype) + 0.5 - tile / 2.0
    v = torch.div(j, tile, rounding_mode="floor").to(dtype) + 0.5 - tile / 2.0
    moments = torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=-1)
    return u, v, moments


def _to_tiles(img: Tensor, tl: _Tiles) -> Tensor:
    """[B, F, H, W] -> tile-major [B * TY * TX, F, P] (zero padding at the borders)."""
    B, Fd, H, W = img.shape
    t = tl.tile
    img = F.pad(img, (0, tl.tiles_x * t - W, 0, tl.tiles_y * t - H))
    tiles = img.reshape(B, Fd, tl.tiles_y, t, tl.tiles_x, t).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(B * tl.tiles_y * tl.tiles_x, Fd, t * t)


def _from_tiles(x: Tensor, tl: _Tiles, height: int, width: int) -> Tensor:
    """Tile-major [B * TY * TX, F, P] -> [B, F, H, W]."""
    Fd, t = x.shape[1], tl.tile
    x = x.view(tl.n_images, tl.tiles_y, tl.tiles_x, Fd, t, t).permute(0, 3, 1, 4, 2, 5)
    x = x.reshape(tl.n_images, Fd, tl.tiles_y * t, tl.tiles_x * t)
    return x[:, :, :height, :width].contiguous()


# -- per-row coefficients and gradients -----------------------------------------------------


@dataclass
class _Coeffs:
    """Per-row (tile x Gaussian) constants. ``pack[:, rows]`` unbinds into ``[n, 1]`` columns
    (mean - tile centre x, y; -a/2; -b; -c/2; opacity) that broadcast over a tile's pixels:
    one slice per step instead of six."""

    pack: Tensor  # [6, R, 1]
    f: Tensor  # [R, F] features
    fT: Tensor  # [F, R, 1]
    # Batch-wide flags for rare cases, so the common case skips their per-pixel work:
    check_sign: bool  # some conic is so ill-conditioned that rounding could make sigma < 0
    may_clamp: bool  # some opacity exceeds max_alpha

    def columns(self) -> list[Tensor]:
        """dx, dy, na, nb, nc, o for all rows, as [R] vectors."""
        return [x[:, 0] for x in self.pack.unbind(0)]


def _row_coeffs(prm: Tensor, tl: _Tiles, max_alpha: float) -> _Coeffs:
    rows = prm.index_select(0, tl.row_gid)
    a, b, c = rows[:, 2], rows[:, 3], rows[:, 4]
    # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy >= lambda_min |d|^2 / 2 exactly, and its rounding
    # error is ~ eps lambda_max |d|^2, so a negative sigma needs cond = lambda_max / lambda_min
    # ~ 1 / eps; tr^2 / det bounds cond from above.
    tr, det = a + c, a * c - b * b
    eps = torch.finfo(prm.dtype).eps
    check_sign = bool((tr * tr * eps > 0.01 * det).any()) if rows.shape[0] else False
    f = rows[:, 6:].contiguous()
    pack = torch.stack(
        [rows[:, 0] - tl.row_cx, rows[:, 1] - tl.row_cy, -0.5 * a, -b, -0.5 * c, rows[:, 5]]
    )
    return _Coeffs(
        pack=pack.unsqueeze(2),
        f=f,
        fT=f.T.contiguous().unsqueeze(2),
        check_sign=check_sign,
        may_clamp=bool((rows[:, 5] > max_alpha).any()) if rows.shape[0] else False,
    )


def _below(x: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` below ``x`` as rounded to ``dtype``: F.threshold keeps
    values > its threshold, and we want alpha >= alpha_threshold."""
    t = torch.tensor(x, dtype=dtype)
    return torch.nextafter(t, torch.zeros_like(t)).item()


def _alpha(
    c: _Coeffs,
    s: slice,
    u: Tensor,
    v: Tensor,
    max_alpha: float,
    keep_above: float,
    free: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Alpha of rows ``s`` x tile pixels, ``[n, P]``: min(max_alpha, o exp(-sigma)), set to 0
    where the loop skips (alpha < threshold or sigma < 0). With ``free``, also a 0/1 mask of
    the unclamped entries (None when nothing can clamp). Float ops only: comparisons and
    bool masks cost ~5 float ops each on CPU."""
    cdx, cdy, na, nb, nc, o = c.pack[:, s].unbind(0)
    dx = cdx - u  # mean - pixel centre
    dy = cdy - v
    e = na * dx  # e = -sigma = dx (-a/2 dx - b dy) - c/2 dy^2
    e.addcmul_(nb, dy).mul_(dx)
    e.addcmul_(nc * dy, dy)
    neg = (e > 0) if c.check_sign else None
    a = e.exp_().mul_(o)
    unclamped = None
    if c.may_clamp:
        if free:
            unclamped = torch.sign(max_alpha - a).clamp_(min=0)  # clamped: no gradient
        a.clamp_(max=max_alpha)
    F.threshold_(a, keep_above, 0.0)
    if neg is not None:
        a.masked_fill_(neg, 0.0)
    return a, unclamped


def _row_grads(cols: list[Tensor], momT: Tensor, g_featT: Tensor) -> Tensor:
    """Per-row gradients [R, 6 + F] from the pixel moments of dL/d(-sigma); ``cols`` are the
    rows' dx, dy, -a/2, -b, -c/2, o as [R] vectors."""
    s0, su, sv, suu, suv, svv = momT
    dx, dy, na, nb, nc, o = cols
    # Sums over the tile's pixels of g * (dx, dy, dx^2, dx dy, dy^2) with dx = dx_centre - u.
    sx = dx * s0 - su
    sy = dy * s0 - sv
    sxx = dx * dx * s0 - 2 * dx * su + suu
    sxy = dx * dy * s0 - dx * sv - dy * su + suv
    syy = dy * dy * s0 - 2 * dy * sv + svv
    g_mx = 2 * na * sx + nb * sy
    g_my = nb * sx + 2 * nc * sy
    cols = [g_mx, g_my, -0.5 * sxx, -sxy, -0.5 * syy, s0 / o]
    return torch.cat([torch.stack(cols, dim=1), g_featT.T], dim=1)


# -- the autograd Function -------------------------------------------------------------------


@dataclass(frozen=True)
class _FastCall:
    """Everything one ``render_fast`` call fixes besides its tensors: the camera geometry, the
    render settings, the keep mask and the schedule (tile, groups, workers, kernel)."""

    camera_model: str
    height: int
    width: int
    settings: RenderSettings
    return_depth: bool
    keep: Tensor | None
    tile: int  # 0: pick from the median radius
    group_pixels: int
    workers: int
    kernel: str = "torch"  # "c": the compiled loops (fast_kernel), "torch": PyTorch ops

    def project(self, means, scales, quats, opacities, intrinsics, viewmats) -> Projection:
        return project_tensors(
            means,
            scales,
            quats,
            opacities,
            intrinsics,
            viewmats,
            camera_model=self.camera_model,
            height=self.height,
            width=self.width,
            settings=self.settings,
            keep=self.keep,
        )


def _params(proj: Projection, colors: Tensor, return_depth: bool) -> Tensor:
    """[B*K, 6 + F]: mean x, y, conic a, b, c, opacity, colours (, depth)."""
    parts = [proj.means2d, proj.conics, proj.opacities[..., None], colors]
    if return_depth:
        parts.append(proj.depths[..., None])
    prm = torch.cat(parts, dim=-1)
    return prm.reshape(-1, prm.shape[-1])


class _FastRender(torch.autograd.Function):
    """(means, scales, quats, colors, opacities, background, intrinsics, viewmats) ->
    (image, alpha, depth, means2d, conics, opacities, depths, radii)."""

    @staticmethod
    def forward(ctx, means, scales, quats, colors, opacities, bg, intrinsics, viewmats, cfg):
        ctx.set_materialize_grads(False)
        B, K, C = colors.shape
        H, W = cfg.height, cfg.width
        dev, dt = means.device, means.dtype
        workers = cfg.workers
        inputs = (means, scales, quats, opacities, intrinsics, viewmats)

        def setup():
            proj = cfg.project(*inputs)
            tile = cfg.tile or _auto_tile(proj)
            n_tiles = B * math.ceil(H / tile) * math.ceil(W / tile)
            group_tiles = 0  # one group (GPU: big kernels are what it wants)
            if dev.type == "cpu":  # cache-sized groups, a few per worker to balance the load
                most = max(1, cfg.group_pixels // tile**2)
                group_tiles = max(1, min(most, -(-n_tiles // (4 * max(workers, 1)))))
            tl = build_tiles(proj, H, W, tile, group_tiles, cfg.settings.alpha_threshold)
            coeffs = _row_coeffs(
                _params(proj, colors, cfg.return_depth), tl, cfg.settings.max_alpha
            )
            return proj, tl, coeffs, _local_coords(tile, dev, dt)

        proj, tl, c, (u, v, _) = _in_worker(setup, workers)
        Fd, P = c.f.shape[1], tl.pixels
        n_act = tl.tile_id.shape[0]
        n_tiles = B * tl.tiles_y * tl.tiles_x

        def alloc():
            # Tile-major outputs; tiles no Gaussian touches keep background / 0 / 0.
            image = bg[:, None, :, None].expand(B, n_tiles // B, C, P).reshape(n_tiles, C, P)
            image = image.contiguous()
            alpha = torch.zeros(n_tiles, 1, P, device=dev, dtype=dt)
            depth = torch.zeros_like(alpha) if cfg.return_depth else None
            T_all = torch.empty(n_act, P, device=dev, dtype=dt)
            count_all = torch.zeros(n_act, P, device=dev, dtype=dt)  # exact up to 2^24 slots
            depth_all = torch.empty(n_act, P, device=dev, dtype=dt) if cfg.return_depth else None
            return image, alpha, depth, T_all, count_all, depth_all

        image, alpha, depth, T_all, count_all, depth_all = _in_worker(alloc, workers)
        keep_above = _below(cfg.settings.alpha_threshold, dt)
        trans_thr = cfg.settings.transmittance_threshold

        def run(grp: _Group) -> None:
            # T runs to 0 once a pixel stops; T_stop keeps its value then, `count` the number of
            # slots it went through (the backward includes exactly those).
            m = grp.stop - grp.start
            T = torch.ones(m, P, device=dev, dtype=dt)
            T_stop = torch.zeros_like(T)
            count = count_all[grp.start : grp.stop]
            acc = torch.zeros(m, Fd, P, device=dev, dtype=dt)
            for off, n in zip(grp.offsets, grp.counts):
                s = slice(off, off + n)
                Tn = T[:n]
                w = _alpha(c, s, u, v, cfg.settings.max_alpha, keep_above)[0].mul_(Tn)  # alpha T
                nT = Tn - w
                F.threshold_(nT, trans_thr, 0.0)  # stop *before* the Gaussian taking T <= thr
                go = torch.sign(nT)  # 1: went on, 0: stopped now or before
                w.mul_(go)
                T_stop[:n].add_(Tn).addcmul_(Tn, go, value=-1.0)  # += T where it stopped now
                count[:n].add_(go)
                Tn.copy_(nT)
                acc[:n].addcmul_(c.f[s].unsqueeze(2), w.unsqueeze(1))
            T.add_(T_stop)
            T_all[grp.start : grp.stop] = T
            # Finish this group's pixels: background, alpha, expected depth.
            ids, b = tl.tile_id[grp.start : grp.stop], tl.tile_b[grp.start : grp.stop]
            image.index_copy_(0, ids, acc[:, :C].addcmul_(bg[b][:, :, None], T[:, None]))
            a_out = 1.0 - T
            alpha.index_copy_(0, ids, a_out[:, None])
            if cfg.return_depth:
                d = torch.where(a_out > 0, acc[:, C] / a_out.clamp(min=1e-12), 0.0)
                depth_all[grp.start : grp.stop] = d
                depth.index_copy_(0, ids, d[:, None])

        _run_groups(run, tl.groups, workers)

        def untile():
            return [None if x is None else _from_tiles(x, tl, H, W) for x in (image, alpha, depth)]

        outs = _in_worker(untile, workers)
        ctx.save_for_backward(means, scales, quats, colors, opacities, bg, intrinsics, viewmats)
        # The backward re-runs the projection for its autograd graph but composites with the
        # forward's per-row values, so its masks agree with the forward bit for bit.
        ctx.state = (cfg, tl, c, T_all, count_all, depth_all)
        ctx.mark_non_differentiable(proj.radii)
        if outs[2] is None:
            outs[2] = torch.zeros(0, device=dev, dtype=dt)
            ctx.mark_non_differentiable(outs[2])
        # Fresh tensors: projection outputs may alias inputs (opacities) or be strided views.
        meta = [x.clone() for x in (proj.means2d, proj.conics, proj.opacities, proj.depths)]
        return (*outs, *meta, proj.radii)

    @staticmethod
    def backward(ctx, g_image, g_alpha, g_depth, g_m2d, g_con, g_op, g_z, _g_radii):
        saved = ctx.saved_tensors
        means, scales, quats, colors, opacities, bg, intrinsics, viewmats = saved
        cfg, tl, c, T_all, count_all, depth_all = ctx.state
        B, K, C = colors.shape
        dev, dt = means.device, means.dtype
        workers = cfg.workers
        needs = ctx.needs_input_grad
        proj_in = (means, scales, quats, opacities, intrinsics, viewmats)
        proj_needs = [needs[i] for i in (0, 1, 2, 4, 6, 7)]

        def setup():
            with torch.enable_grad():
                xs = [x.detach().requires_grad_(r) for x, r in zip(proj_in, proj_needs)]
                proj = cfg.project(*xs)
            grads = []
            for g in (g_image, g_alpha, g_depth if cfg.return_depth else None):
                grads.append(None if g is None else _to_tiles(g.to(dt), tl))
            return xs, proj, _local_coords(tl.tile, dev, dt), grads

        xs, proj, (u, v, moments), (gI, gA, gD) = _in_worker(setup, workers)
        Fd, P = c.f.shape[1], tl.pixels
        n_rows = tl.row_gid.shape[0]
        momT = torch.zeros(6, n_rows, device=dev, dtype=dt)  # sum_p dL/d(-sigma) [1, u, v, ...]
        g_featT = torch.zeros(Fd, n_rows, device=dev, dtype=dt)
        QT = moments.T.contiguous()
        keep_above = _below(cfg.settings.alpha_threshold, dt)
        g_bg_act = torch.zeros(tl.tile_id.shape[0], C, device=dev, dtype=dt)

        def run(grp: _Group) -> None:
            ids, b = tl.tile_id[grp.start : grp.stop], tl.tile_b[grp.start : grp.stop]
            m = ids.shape[0]

            def pick(x: Tensor) -> Tensor:  # [ch, m, P], channel-major
                return x.index_select(0, ids).transpose(0, 1)

            T = T_all[grp.start : grp.stop].clone()
            gF = torch.zeros(Fd, m, P, device=dev, dtype=dt)  # dL/d(sum w f)
            gT = torch.zeros(m, P, device=dev, dtype=dt)  # dL/dT_final
            if gI is not None:  # image = acc + T bg
                gF[:C] = pick(gI)
                gT += (gF[:C] * bg[b].T[:, :, None]).sum(0)
                g_bg_act[grp.start : grp.stop] = (gF[:C] * (1.0 - T)).sum(2).T
            if gA is not None:  # alpha = 1 - T
                gT -= pick(gA)[0]
            if gD is not None:  # depth = acc_z / alpha where alpha > 0
                a = 1.0 - T
                inv = torch.where(a > 0, 1.0 / a.clamp(min=1e-12), 0.0)
                gd = pick(gD)[0]
                gF[C] = gd * inv
                gT += gd * depth_all[grp.start : grp.stop] * inv  # d depth / d T = depth / alpha
            count = count_all[grp.start : grp.stop]
            R = gT.mul_(T)  # dL/d(everything behind the current Gaussian), per pixel
            for step in range(len(grp.counts) - 1, -1, -1):
                off, n = grp.offsets[step], grp.counts[step]
                s = slice(off, off + n)
                a, unclamped = _alpha(c, s, u, v, cfg.settings.max_alpha, keep_above, free=True)
                a.mul_((count[:n] - step).clamp_(0, 1))  # 0 from the slot where it stopped
                one_m = 1.0 - a
                Tb = T[:n].div_(one_m)  # transmittance in front of this Gaussian (in place)
                w = a * Tb
                gfd = (gF[:, :n] * c.fT[:, s]).sum(0)  # dL/dacc . f
                g_a = gfd * Tb
                g_a.sub_(R[:n] / one_m)
                R[:n].addcmul_(gfd, w)
                g_featT[:, s] = (gF[:, :n] * w).sum(2)
                g_e = g_a.mul_(a)  # d alpha / d(-sigma) = alpha (0 where clamped)
                if unclamped is not None:
                    g_e.mul_(unclamped)
                momT[:, s] = QT @ g_e.T

        _run_groups(run, tl.groups, workers)

        def finish():
            g_prm = torch.zeros(B * K, 6 + Fd, device=dev, dtype=dt)
            g_prm.index_add_(0, tl.row_gid, _row_grads(c.columns(), momT, g_featT))
            g_prm = g_prm.view(B, K, -1)
            g_bg = None
            if needs[5] and gI is not None:
                # sum over pixels of dL/dimage * T, with T = 1 on tiles no Gaussian touched
                g_bg = gI.view(B, -1, C, P).sum((1, 3))
                g_bg.index_add_(0, tl.tile_b, -g_bg_act)
            meta_grads = (g_m2d, g_con, g_op, g_z)
            return _through_projection(cfg, needs, xs, proj, g_prm, meta_grads, C, g_bg)

        return (*_in_worker(finish, workers), None)


def _through_projection(cfg, needs, xs, proj, g_prm, meta_grads, C, g_bg, retain=False):
    """Chain per-Gaussian gradients ``g_prm [B, K, 6 + F]`` (means2d, conics, opacity,
    features) and the meta outputs' own gradients through the re-run projection; returns the
    Function's input gradients."""
    g_col = g_prm[..., 6 : 6 + C] if needs[3] else None
    outs = [proj.means2d, proj.conics, proj.opacities, proj.depths]
    g_outs = [g_prm[..., 0:2], g_prm[..., 2:5], g_prm[..., 5], None]
    if cfg.return_depth:
        g_outs[3] = g_prm[..., 6 + C]
    for i, g in enumerate(meta_grads):
        if g is not None:
            g_outs[i] = g if g_outs[i] is None else g_outs[i] + g
    pairs = [(o, g) for o, g in zip(outs, g_outs) if g is not None and o.requires_grad]
    targets = [x for x in xs if x.requires_grad]
    got = iter(())
    if pairs and targets:
        got = iter(
            torch.autograd.grad(
                [o for o, _ in pairs],
                targets,
                [g for _, g in pairs],
                allow_unused=True,
                retain_graph=retain,
            )
        )
    gm, gs, gq, go, gk, gv = [next(got) if x.requires_grad else None for x in xs]
    return gm, gs, gq, g_col, go, g_bg, gk, gv


# -- the compiled kernel's autograd Function --------------------------------------------------


@dataclass
class _TileLists:
    """Tile-major intersection lists for the compiled kernel (all tensors, no grad)."""

    tile: int
    tiles_y: int
    tiles_x: int
    tile_id: Tensor  # [NA] int64 tile-major index (b * TY + y) * TX + x of each active tile
    row_start: Tensor  # [NA + 1] int64: rows row_start[i] .. row_start[i + 1] are tile i's
    row_gid: Tensor  # [R] flat Gaussian index b * K + k of each row, nearest first per tile
    rows: Tensor  # [R, 6 + F]: mean - tile centre (x, y), -a/2, -b, -c/2, opacity, features

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """``n`` runs of active tiles with about equal numbers of rows (work balance)."""
        na = self.tile_id.shape[0]
        if n <= 1 or na <= 1:
            return [(0, na)]
        total = int(self.row_start[-1])
        cuts = torch.linspace(0, total, n + 1, dtype=torch.float64)[1:-1].to(torch.int64)
        mid = torch.searchsorted(self.row_start, cuts).tolist()
        bounds = sorted({0, na, *mid})
        return list(zip(bounds[:-1], bounds[1:]))


@torch.no_grad()
def build_tile_lists(
    lib, proj: Projection, prm: Tensor, height: int, width: int, tile: int, alpha_threshold: float
) -> _TileLists:
    """The compiled kernel's binning: for every tile, the Gaussians whose box touches it and
    whose alpha >= threshold ellipse reaches one of its pixel centres (the same rule as
    ``_intersections``), nearest first, as one run of rows. ``prm``: ``_params`` [B*K, 6+F]."""
    B, K = proj.depths.shape
    dt, S = prm.dtype, prm.shape[1]
    ty_n, tx_n = math.ceil(height / tile), math.ceil(width / tile)
    order = torch.sort(proj.depths.detach(), dim=1, stable=True).indices.contiguous()
    radii = proj.radii.contiguous()
    prm = prm.detach().contiguous()
    fn = lib.gmae_bin_f64 if dt == torch.float64 else lib.gmae_bin_f32
    args = (B, K, S - 6, _ptr(prm), _ptr(order), _ptr(radii), tile, ty_n, tx_n, alpha_threshold)
    counts = torch.zeros(B * ty_n * tx_n, dtype=torch.int64)
    fn(*args, _ptr(counts), None, None)  # pass 1: rows per tile
    start = torch.cumsum(counts, 0) - counts
    n_rows = int(counts.sum())
    rows = torch.empty(n_rows, S, dtype=dt)
    row_gid = torch.empty(n_rows, dtype=torch.int64)
    cursor = start.clone()  # keep a reference: the kernel writes through its pointer
    fn(*args, _ptr(cursor), _ptr(rows), _ptr(row_gid))  # pass 2: fill them
    active = torch.nonzero(counts)[:, 0]
    row_start = torch.cat([start.index_select(0, active), torch.tensor([n_rows])])
    return _TileLists(tile, ty_n, tx_n, active.contiguous(), row_start, row_gid, rows)


def _ptr(t: Tensor) -> int:
    assert t.is_contiguous()
    return t.data_ptr()


class _CompiledRender(torch.autograd.Function):
    """``_FastRender`` with the two compositing loops in the compiled kernel: same inputs,
    outputs and semantics; per-pixel state is kept in image layout."""

    @staticmethod
    def forward(ctx, means, scales, quats, colors, opacities, bg, intrinsics, viewmats, cfg):
        from gmae.render import fast_kernel

        ctx.set_materialize_grads(False)
        lib = fast_kernel.load()
        B, K, C = colors.shape
        H, W = cfg.height, cfg.width
        dev, dt = means.device, means.dtype
        workers = cfg.workers
        inputs = (means, scales, quats, opacities, intrinsics, viewmats)
        needs = [ctx.needs_input_grad[i] for i in (0, 1, 2, 4, 6, 7)]

        def setup():
            # The projection's graph is built now and kept for the backward (B x K values):
            # cheaper than re-running it there, as the PyTorch loops do.
            with torch.enable_grad():
                xs = [x.detach().requires_grad_(r) for x, r in zip(inputs, needs)]
                proj = cfg.project(*xs)
            tile = cfg.tile or _KERNEL_TILE
            prm = _params(proj, colors, cfg.return_depth).detach()
            tl = build_tile_lists(lib, proj, prm, H, W, tile, cfg.settings.alpha_threshold)
            Fd = prm.shape[1] - 6
            acc = torch.zeros(B, Fd, H, W, device=dev, dtype=dt)
            T = torch.ones(B, H, W, device=dev, dtype=dt)
            count = torch.zeros(B, H, W, device=dev, dtype=torch.int32)
            return xs, proj, tl, acc, T, count

        xs, proj, tl, acc, T, count = _in_worker(setup, workers)
        rows = tl.rows
        Fd = rows.shape[1] - 6
        fwd = lib.gmae_forward_f64 if dt == torch.float64 else lib.gmae_forward_f32
        geometry = (Fd, tl.tile, tl.tiles_y, tl.tiles_x, H, W)
        thresholds = (
            cfg.settings.max_alpha,
            cfg.settings.alpha_threshold,
            cfg.settings.transmittance_threshold,
        )
        ptrs = (_ptr(tl.tile_id), _ptr(tl.row_start), _ptr(rows))
        outs_p = (_ptr(acc), _ptr(T), _ptr(count))

        def forward_kernel(t0: int, t1: int) -> None:  # named: profiles show it as a phase
            fwd(t0, t1, *ptrs, *geometry, *thresholds, *outs_p)

        _run_chunks(forward_kernel, tl, workers)

        def finish():
            image = acc[:, :C] + T[:, None] * bg[:, :, None, None]
            alpha = 1.0 - T[:, None]
            depth = None
            if cfg.return_depth:
                depth = torch.where(alpha > 0, acc[:, C : C + 1] / alpha.clamp(min=1e-12), 0.0)
            return image, alpha, depth

        image, alpha, depth = _in_worker(finish, workers)
        ctx.save_for_backward(colors, bg)
        ctx.state = (cfg, tl, T, count, depth, xs, proj)
        ctx.mark_non_differentiable(proj.radii)
        if depth is None:
            depth = torch.zeros(0, device=dev, dtype=dt)
            ctx.mark_non_differentiable(depth)
        meta = (proj.means2d, proj.conics, proj.opacities, proj.depths)
        meta = [x.detach().clone() for x in meta]
        return (image, alpha, depth, *meta, proj.radii)

    @staticmethod
    def backward(ctx, g_image, g_alpha, g_depth, g_m2d, g_con, g_op, g_z, _g_radii):
        from gmae.render import fast_kernel

        lib = fast_kernel.load()
        colors, bg = ctx.saved_tensors
        cfg, tl, T, count, depth, xs, proj = ctx.state
        rows = tl.rows
        B, K, C = colors.shape
        H, W = cfg.height, cfg.width
        dev, dt = colors.device, colors.dtype
        workers = cfg.workers
        needs = ctx.needs_input_grad
        Fd = rows.shape[1] - 6

        def setup():
            # Per pixel: dL/d(sum w f) per feature and dL/dT_final.
            g_acc = torch.zeros(B, Fd, H, W, device=dev, dtype=dt)
            gT = torch.zeros(B, H, W, device=dev, dtype=dt)
            g_bg = None
            if g_image is not None:  # image = acc + T bg
                gI = g_image.to(dt)
                g_acc[:, :C] = gI
                gT += (gI * bg[:, :, None, None]).sum(1)
                if needs[5]:
                    g_bg = (gI * T[:, None]).sum((2, 3))
            if g_alpha is not None:  # alpha = 1 - T
                gT -= g_alpha.to(dt)[:, 0]
            if g_depth is not None and cfg.return_depth:  # depth = acc_z / alpha, alpha > 0
                a = 1.0 - T
                inv = torch.where(a > 0, 1.0 / a.clamp(min=1e-12), 0.0)
                gd = g_depth.to(dt)[:, 0]
                g_acc[:, C] = gd * inv
                gT += gd * depth[:, 0] * inv  # d depth / d T = depth / alpha
            R0 = gT.mul_(T)  # dL/d(everything behind the last Gaussian)
            g_rows = torch.zeros_like(rows)
            return g_acc, R0, g_rows, g_bg

        g_acc, R0, g_rows, g_bg = _in_worker(setup, workers)
        bwd = lib.gmae_backward_f64 if dt == torch.float64 else lib.gmae_backward_f32
        geometry = (Fd, tl.tile, tl.tiles_y, tl.tiles_x, H, W)
        ptrs = (_ptr(tl.tile_id), _ptr(tl.row_start), _ptr(rows))
        state = (_ptr(T), _ptr(count), _ptr(g_acc), _ptr(R0), _ptr(g_rows))
        thresholds = (cfg.settings.max_alpha, cfg.settings.alpha_threshold)

        def backward_kernel(t0: int, t1: int) -> None:
            bwd(t0, t1, *ptrs, *geometry, *thresholds, *state)

        _run_chunks(backward_kernel, tl, workers)

        def finish():
            g_prm = torch.zeros(B * K, 6 + Fd, device=dev, dtype=dt)
            _row_grads_kernel(lib, rows, g_rows, tl.row_gid, g_prm)
            g_prm = g_prm.view(B, K, -1)
            meta_grads = (g_m2d, g_con, g_op, g_z)
            # retain: the graph was built in forward and a retain_graph backward may come again
            return _through_projection(cfg, needs, xs, proj, g_prm, meta_grads, C, g_bg, True)

        return (*_in_worker(finish, workers), None)


def _row_grads_kernel(lib, rows: Tensor, g_rows: Tensor, row_gid: Tensor, g_prm: Tensor) -> None:
    """Per-row sums -> per-Gaussian gradients, accumulated into ``g_prm`` (one thread: rows of
    one Gaussian come from many tiles)."""
    fn = lib.gmae_row_grads_f64 if rows.dtype == torch.float64 else lib.gmae_row_grads_f32
    fn(rows.shape[0], rows.shape[1] - 6, _ptr(rows), _ptr(g_rows), _ptr(row_gid), _ptr(g_prm))


def _run_chunks(fn, tl: _TileLists, workers: int) -> None:
    """Call ``fn(t0, t1)`` over runs of active tiles: inline, or a few runs per worker thread
    (ctypes releases the GIL, so they run in parallel)."""
    chunks = tl.chunks(4 * workers if workers > 1 else 1)
    if workers <= 1 or len(chunks) <= 1:
        for t0, t1 in chunks:
            fn(t0, t1)
        return
    for _ in _get_pool(workers).map(lambda c: fn(*c), chunks):
        pass


# Tile edge for the compiled kernel. Its cost per pixel x Gaussian pair is small next to the
# PyTorch loops', so the trade-off (wasted pairs vs rows to list) differs from ``_auto_tile``'s.
_KERNEL_TILE = 8
KERNELS = ("auto", "c", "torch")
_kernel_override: str | None = None


@contextlib.contextmanager
def use_kernel(name: str):
    """Force the fast path's compositing loops: ``"c"`` (the compiled kernel; an error if it
    cannot be built), ``"torch"`` (PyTorch ops, the fallback) or ``"auto"`` (c where it
    builds). Process-wide; for benchmarks and tests."""
    global _kernel_override
    if name not in KERNELS:
        raise GmaeError(f"unknown fast kernel {name!r}; expected one of {', '.join(KERNELS)}")
    before, _kernel_override = _kernel_override, name
    try:
        yield
    finally:
        _kernel_override = before


def _kernel_max_tile() -> int:
    from gmae.render import fast_kernel

    return fast_kernel.MAX_TILE


def resolve_kernel(name: str, device: torch.device) -> str:
    """``"c"`` or ``"torch"`` for a requested kernel name on ``device``."""
    from gmae.render import fast_kernel

    if name == "auto":
        name = _kernel_override or os.environ.get("GMAE_RENDER_KERNEL", "auto").lower()
    if name == "torch" or device.type != "cpu":
        return "torch"
    if fast_kernel.load() is not None:
        return "c"
    if name == "c":
        why = fast_kernel.error() or "GMAE_RENDER_KERNEL=torch is set"
        raise GmaeError(f"the compiled render kernel is not available: {why}")
    return "torch"


def render_fast(
    means: Tensor,
    scales: Tensor,
    quats: Tensor,
    colors: Tensor,
    opacities: Tensor,
    background: Tensor,
    intrinsics: Tensor,
    viewmats: Tensor,
    *,
    camera_model: str,
    height: int,
    width: int,
    settings: RenderSettings,
    return_depth: bool,
    keep: Tensor | None = None,
    tile: int = 0,
    group_pixels: int = DEFAULT_GROUP_PIXELS,
    workers: int | None = None,
    kernel: str = "auto",
) -> tuple[Tensor, Tensor, Tensor | None, Projection]:
    """Render with the fast path. Returns ``(image, alpha, depth or None, projection)``.

    The camera comes as tensors (intrinsics ``[B, 4]``, ``viewmats [B, 4, 4]``) plus its
    ``camera_model`` and size; ``settings`` is the call's :class:`RenderSettings`.
    ``workers`` threads (default: ``torch.get_num_threads()`` on CPU, 0 = run inline elsewhere)
    each take whole groups of about ``group_pixels`` pixels (PyTorch loops) or runs of tiles
    (compiled kernel). ``kernel``: ``"auto"`` (the compiled kernel on CPU where it builds, see
    ``use_kernel`` and ``GMAE_RENDER_KERNEL``), ``"c"`` or ``"torch"``.
    """
    if workers is None:
        n = torch.get_num_threads()
        workers = n if means.device.type == "cpu" and n > 1 else 0
    cfg = _FastCall(
        camera_model=camera_model,
        height=height,
        width=width,
        settings=settings,
        return_depth=return_depth,
        keep=keep,
        tile=tile,
        group_pixels=group_pixels,
        workers=workers,
        kernel=resolve_kernel(kernel, means.device),
    )
    if cfg.kernel == "c" and tile > _kernel_max_tile():  # the kernel's buffers hold 16 x 16
        cfg = dataclasses.replace(cfg, kernel="torch")
    fn = _CompiledRender if cfg.kernel == "c" else _FastRender
    out = fn.apply(means, scales, quats, colors, opacities, background, intrinsics, viewmats, cfg)
    image, alpha, depth, m2d, con, op, z, radii = out
    proj = Projection(means2d=m2d, conics=con, opacities=op, depths=z, radii=radii)
    return image, alpha, depth if return_depth else None, proj


# -- worker threads ------------------------------------------------------------------------
#
# Each step of the loops above is a few dozen small tensor ops. Letting every op fan out over
# OpenMP costs a barrier per op, and when the cores are oversubscribed (other processes, data
# loader workers) each barrier waits for a scheduler time slice: measured 100-1000x slowdowns
# per op on this project's 2-core machine. So all the work runs in worker threads whose
# intra-op parallelism is 1, and parallelism comes from several workers taking whole groups of
# tiles. A thread's OpenMP / MKL thread count is thread-local; the process-wide default that
# torch.set_num_threads also touches is restored as soon as the workers exist.

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0  # a forked child inherits the pool object but not its threads
_pool_lock = threading.Lock()


def _single_threaded(barrier: threading.Barrier) -> None:
    torch.set_num_threads(1)
    torch.get_num_threads()  # force this thread's lazy init now, with 1 thread
    barrier.wait()


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_size < workers or _pool_pid != os.getpid():
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=True)
            before = torch.get_num_threads()
            barrier = threading.Barrier(workers + 1)
            pool = ThreadPoolExecutor(
                workers,
                thread_name_prefix="gmae-render",
                initializer=_single_threaded,
                initargs=(barrier,),
            )
            futures = [pool.submit(int) for _ in range(workers)]  # start every thread now
            barrier.wait()
            for f in futures:
                f.result()
            torch.set_num_threads(before)
            _pool, _pool_size, _pool_pid = pool, workers, os.getpid()
        return _pool


def _no_grad_call(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _in_worker(fn, workers: int):
    """Run ``fn()`` in a single-threaded worker (inline when there are no workers)."""
    if workers <= 0:
        return _no_grad_call(fn)
    return _get_pool(workers).submit(_no_grad_call, fn).result()


def _run_groups(fn, groups: list[_Group], workers: int) -> None:
    if workers <= 1 or len(groups) <= 1:
        _in_worker(lambda: [fn(g) for g in groups], workers)
        return
    for _ in _get_pool(workers).map(lambda g: _no_grad_call(fn, g), groups):  # busiest first
        pass
