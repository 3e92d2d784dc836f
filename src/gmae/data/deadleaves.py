"""Procedural dead-leaves scenes with per-pixel occlusion ground truth.

The dead-leaves model (Matheron; Lee, Mumford & Huang 2001 for natural image statistics): random
shapes are dropped one after another, each occluding those before it. Seen from the front, the
visible image of an endless drop is sampled exactly by drawing leaves **front to back**, each
filling only the pixels still uncovered, until every pixel is covered. That is what
``render_scene`` does, vectorised over chunks of leaves and over the still-uncovered pixels.

Leaf ``k`` is the k-th leaf of the occlusion order counted from the front (0 = nearest): it
occludes every leaf with a larger index wherever both would cover a pixel. Each leaf is a disc,
ellipse, rectangle or convex polygon with a uniformly random colour; its radius follows a power
law ``p(r) ~ r^-alpha`` on ``[rmin, rmax]`` x size (alpha = 3 is scale invariant) and its centre is
uniform over the image grown by ``r`` on every side, so every leaf drawn can touch the image.
With ``texture`` on, each leaf also gets a linear shading ramp and a sinusoidal grating, so edge
detectors fire inside leaves too (the ground truth is unchanged).

A scene is a pure function of ``(params, split, index)``: the training split is an
index-addressable stream of ``n`` images generated on the fly (in DataLoader workers), so a
resumed run sees exactly the images an uninterrupted one would; ``val`` and ``test`` are fixed
sets of ``eval_n`` images drawn from their own streams.

Spec: ``deadleaves`` or ``deadleaves:size=64,texture=1,seed=0,n=100000,eval_n=500,...``
(``DeadLeavesParams`` lists the keys).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from gmae.errors import GmaeError

PREFIX = "deadleaves"
SPLITS = ("train", "val", "test")
_STREAM = {"train": 0, "val": 1, "test": 2}
_TAG = 0x6465_6164  # separates these streams from any other use of the same seed
SHAPES = ("disc", "ellipse", "rectangle", "polygon")
MAX_VERTICES = 8
_CHUNK = 128  # leaves per vectorised step


@dataclass(frozen=True)
class DeadLeavesParams:
    """Generator settings; every field is a spec key (``deadleaves:size=32,texture=1``)."""

    size: int = 64  # image side in pixels
    texture: bool = False  # shading ramp + sinusoidal grating inside each leaf
    seed: int = 0  # base seed of all three splits
    n: int = 100_000  # images in the train stream (one epoch)
    eval_n: int = 500  # images in val and in test
    alpha: float = 3.0  # radius power law exponent
    rmin: float = 0.0625  # smallest radius, as a fraction of size (4 px at 64)
    rmax: float = 0.5  # largest radius, as a fraction of size
    max_leaves: int = 4096  # leaves drawn before the rest is filled with one far leaf

    def __post_init__(self) -> None:
        checks = [
            (self.size >= 4, "size must be >= 4"),
            (self.n >= 1 and self.eval_n >= 1, "n and eval_n must be >= 1"),
            (self.alpha > 0, "alpha must be > 0"),
            (0 < self.rmin <= self.rmax, "need 0 < rmin <= rmax"),
            (self.max_leaves >= 1, "max_leaves must be >= 1"),
            (0 <= self.seed < 2**63, "seed must be in [0, 2^63)"),
        ]
        for ok, message in checks:
            if not ok:
                raise GmaeError(f"deadleaves: {message} (got {self.spec()})")

    def spec(self) -> str:
        """The canonical spec string (only the keys that differ from the defaults)."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={int(value) if isinstance(value, bool) else value}")
        return PREFIX + (":" + ",".join(parts) if parts else "")


def is_deadleaves_spec(spec: str) -> bool:
    head = spec.strip().lower()
    return head == PREFIX or head.startswith(PREFIX + ":")


def parse_spec(spec: str) -> DeadLeavesParams:
    """``deadleaves[:key=value,...]`` -> ``DeadLeavesParams``; a bad key or value is a
    ``GmaeError`` naming it."""
    text = spec.strip()
    if not is_deadleaves_spec(text):
        raise GmaeError(f"not a dead-leaves spec: {spec!r}")
    fields = {f.name: f for f in dataclasses.fields(DeadLeavesParams)}
    kwargs: dict[str, Any] = {}
    body = text[len(PREFIX) + 1 :] if ":" in text else ""
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, sep, raw = item.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not sep or key not in fields:
            raise GmaeError(
                f"bad deadleaves option {item!r} in {spec!r}; valid keys: {', '.join(fields)} "
                "(as key=value)"
            )
        kind = type(fields[key].default)
        try:
            if kind is bool:
                if raw.lower() not in ("0", "1", "true", "false"):
                    raise ValueError(raw)
                kwargs[key] = raw.lower() in ("1", "true")
            elif kind is int:
                kwargs[key] = int(raw)
            else:
                kwargs[key] = float(raw)
        except ValueError:
            raise GmaeError(
                f"deadleaves option {key}={raw!r} in {spec!r} is not a valid {kind.__name__}"
            ) from None
    return DeadLeavesParams(**kwargs)


# --- one scene ------------------------------------------------------------------------------------


@dataclass
class DeadLeavesScene:
    """One scene and its ground truth.

    ``image``: uint8 [H, W, 3]. ``leaf``: int32 [H, W], the visible leaf's index in the
    occlusion order (0 = the scene's nearest leaf; a larger index is farther). ``rank``: int32
    [H, W], the visible leaf's rank among the leaves visible in this image (0 = nearest visible).
    ``colors``: uint8 [L, 3], every drawn leaf's base colour (``colors[leaf]`` is the image when
    texture is off). ``shapes``: int8 [L], index into ``SHAPES`` (-1: the far fill leaf).
    """

    image: np.ndarray
    leaf: np.ndarray
    rank: np.ndarray
    colors: np.ndarray
    shapes: np.ndarray

    @property
    def boundaries(self) -> np.ndarray:
        return occlusion_boundaries(self.leaf)

    @property
    def figure(self) -> np.ndarray:
        return figure_mask(self.leaf)


def scene_rng(params: DeadLeavesParams, split: str, index: int) -> np.random.Generator:
    if split not in _STREAM:
        raise GmaeError(f"unknown split {split!r} for deadleaves; valid: {', '.join(SPLITS)}")
    return np.random.default_rng([_TAG, params.seed, _STREAM[split], int(index)])


def _power_law(rng: np.random.Generator, m: int, alpha: float, lo: float, hi: float) -> np.ndarray:
    """``m`` samples of p(r) ~ r^-alpha on [lo, hi] by inverting the CDF."""
    u = rng.random(m)
    if hi == lo:
        return np.full(m, lo)
    if abs(alpha - 1.0) < 1e-9:
        return lo * (hi / lo) ** u
    a = 1.0 - alpha
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def _draw_leaves(rng: np.random.Generator, m: int, p: DeadLeavesParams) -> dict[str, np.ndarray]:
    r = _power_law(rng, m, p.alpha, p.rmin * p.size, p.rmax * p.size)
    shape = rng.integers(0, len(SHAPES), m)
    aspect = np.where(shape == 0, 1.0, rng.uniform(0.3, 1.0, m))
    # Polygon vertices: sorted angles on the unit circle (convex), padded by repeating the last.
    nvert = rng.integers(3, MAX_VERTICES + 1, m)
    angles = np.sort(rng.uniform(0, 2 * math.pi, (m, MAX_VERTICES)), axis=1)
    pad = np.arange(MAX_VERTICES)[None, :] >= nvert[:, None]
    last = np.take_along_axis(angles, (nvert - 1)[:, None], axis=1)
    angles = np.where(pad, last, angles)
    theta = rng.uniform(0, math.pi, m)
    vx, vy = np.cos(angles), np.sin(angles)
    return {
        "cx": rng.uniform(-r, p.size + r),
        "cy": rng.uniform(-r, p.size + r),
        "r": r,
        "shape": shape,
        "aspect": aspect,
        "theta": theta,
        # derived, for the inside test: rotation / radius, polygon vertices and edges
        "cos_r": np.cos(theta) / r,
        "sin_r": np.sin(theta) / r,
        "inv_aspect": 1.0 / aspect,
        "vx": vx,
        "vy": vy,
        "ex": np.roll(vx, -1, 1) - vx,
        "ey": np.roll(vy, -1, 1) - vy,
        "color": rng.integers(0, 256, (m, 3), dtype=np.uint8),
        # texture: shading gradient (per unit radius) and grating (amplitude, frequency, phase)
        "shade": rng.uniform(-0.25, 0.25, (m, 2)),
        "amp": rng.uniform(0.08, 0.25, m),
        "freq": rng.uniform(0.12, 0.35, m),
        "phase": rng.uniform(0, 2 * math.pi, m),
    }


def _inside(leaves: dict[str, np.ndarray], m: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """bool [N]: whether pixel centre (xs[i], ys[i]) lies inside leaf m[i]."""
    dx, dy = xs - leaves["cx"][m], ys - leaves["cy"][m]
    c, s = leaves["cos_r"][m], leaves["sin_r"][m]
    u, v = dx * c + dy * s, (dy * c - dx * s) * leaves["inv_aspect"][m]  # leaf frame, radii
    shape = leaves["shape"][m]
    hit = np.where(shape <= 1, u * u + v * v <= 1.0, (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8))
    poly = np.flatnonzero(shape == 3)
    if poly.size:
        # Inside a counter-clockwise convex polygon: left of (or on) every edge.
        k = m[poly]
        vx, vy, ex, ey = (leaves[name][k] for name in ("vx", "vy", "ex", "ey"))  # [Q, V]
        pu, pv = u[poly, None], v[poly, None]
        hit[poly] = (ex * (pv - vy) - ey * (pu - vx) >= 0).all(axis=1)
    return hit


def _candidates(leaves: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (leaf, pixel) pair with the pixel in the leaf's bounding box, ordered by leaf."""
    # Rectangles reach 0.8 * sqrt(2) radii from the centre; the other shapes one radius.
    ext = leaves["r"] * np.where(leaves["shape"] == 2, 1.132, 1.0)
    lo_x = np.clip(np.ceil(leaves["cx"] - ext - 0.5), 0, size).astype(np.int64)
    hi_x = np.clip(np.floor(leaves["cx"] + ext - 0.5), -1, size - 1).astype(np.int64)
    lo_y = np.clip(np.ceil(leaves["cy"] - ext - 0.5), 0, size).astype(np.int64)
    hi_y = np.clip(np.floor(leaves["cy"] + ext - 0.5), -1, size - 1).astype(np.int64)
    wx = np.maximum(hi_x - lo_x + 1, 0)
    count = wx * np.maximum(hi_y - lo_y + 1, 0)
    m = np.repeat(np.arange(len(count)), count)
    offset = np.arange(m.size) - np.repeat(np.cumsum(count) - count, count)
    row, col = np.divmod(offset, np.maximum(wx, 1)[m])
    return m, (lo_y[m] + row) * size + lo_x[m] + col


def render_scene(params: DeadLeavesParams, split: str, index: int) -> DeadLeavesScene:
    """Scene ``index`` of ``split``: a pure function of ``(params, split, index)``."""
    rng = scene_rng(params, split, index)
    size = params.size
    yy, xx = np.divmod(np.arange(size * size), size)
    xs, ys = xx + 0.5, yy + 0.5  # pixel centres
    leaf = np.full(size * size, -1, np.int64)
    left = size * size  # pixels still uncovered
    chunks: list[dict[str, np.ndarray]] = []
    drawn = 0
    while left and drawn < params.max_leaves:
        leaves = _draw_leaves(rng, min(_CHUNK, params.max_leaves - drawn), params)
        chunks.append(leaves)
        m, pix = _candidates(leaves, size)
        todo = leaf[pix] < 0
        m, pix = m[todo], pix[todo]
        hit = _inside(leaves, m, xs[pix], ys[pix])
        m, pix = m[hit], pix[hit]
        # Pairs are ordered by leaf: a pixel's first pair is its nearest leaf of this chunk.
        pix, first = np.unique(pix, return_index=True)
        leaf[pix] = drawn + m[first]
        left -= pix.size
        drawn += len(leaves["r"])
    leaves = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    colors, shapes = leaves["color"], leaves["shape"].astype(np.int8)
    if left:  # leaf budget spent: one far leaf fills the rest
        leaf[leaf < 0] = drawn
        colors = np.concatenate([colors, rng.integers(0, 256, (1, 3), dtype=np.uint8)])
        shapes = np.concatenate([shapes, np.int8([-1])])
    image = colors[leaf]
    if params.texture:
        image = _texture(image, leaf, leaves, xs, ys, drawn)
    rank = np.unique(leaf, return_inverse=True)[1]
    shape2 = (size, size)
    return DeadLeavesScene(
        image=image.reshape(size, size, 3),
        leaf=leaf.reshape(shape2).astype(np.int32),
        rank=rank.reshape(shape2).astype(np.int32),
        colors=colors,
        shapes=shapes,
    )


def _texture(image, leaf, leaves, xs, ys, drawn) -> np.ndarray:
    """Shading ramp + grating of each pixel's leaf (the far fill leaf stays flat)."""
    own = leaf < drawn
    k = leaf[own]
    sub = {name: leaves[name][k] for name in ("cx", "cy", "r", "theta", "aspect")}
    dx = (xs[own] - sub["cx"]) / sub["r"]
    dy = (ys[own] - sub["cy"]) / sub["r"]
    u = (xs[own] - sub["cx"]) * np.cos(sub["theta"]) + (ys[own] - sub["cy"]) * np.sin(sub["theta"])
    ramp = leaves["shade"][k, 0] * dx + leaves["shade"][k, 1] * dy
    grating = leaves["amp"][k] * np.sin(2 * math.pi * leaves["freq"][k] * u + leaves["phase"][k])
    out = image.astype(np.float32)
    out[own] += 255.0 * (ramp + grating)[:, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- ground truth derived from the leaf map -------------------------------------------------------


def occlusion_boundaries(leaf: np.ndarray) -> np.ndarray:
    """bool [H, W]: the occluding side of every occlusion boundary, one pixel wide.

    A pixel is on a boundary when one of its 4-neighbours shows a farther leaf (a larger index)."""
    leaf = np.asarray(leaf)
    out = np.zeros(leaf.shape, bool)
    for axis in (0, 1):
        a = leaf.swapaxes(0, axis)  # a view: neighbours along ``axis`` become rows
        o = out.swapaxes(0, axis)
        o[:-1] |= a[:-1] < a[1:]
        o[1:] |= a[1:] < a[:-1]
    return out


def occluded_leaves(leaf: np.ndarray) -> np.ndarray:
    """Sorted indices of the visible leaves that touch a nearer leaf (4-neighbours): those
    occluded inside the image."""
    leaf = np.asarray(leaf)
    far = [
        np.maximum(a, b)[a != b] for a, b in ((leaf[:-1], leaf[1:]), (leaf[:, :-1], leaf[:, 1:]))
    ]
    return np.unique(np.concatenate(far))


def figure_mask(leaf: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels of the unoccluded leaves, those nearer than every leaf they touch
    (the nearest leaf of the scene is always among them)."""
    leaf = np.asarray(leaf)
    return ~np.isin(leaf, occluded_leaves(leaf))


def occlusion_pairs(leaf: np.ndarray, gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel pairs straddling one occlusion boundary: flat indices (near [N], far [N]).

    Pairs are ``gap`` pixels apart along a row or a column, on two different leaves, and every
    pixel between them belongs to one of the two (so they straddle exactly that boundary)."""
    leaf = np.asarray(leaf)
    h, w = leaf.shape
    if gap < 1 or gap >= min(h, w):
        raise GmaeError(f"pair gap must be in [1, {min(h, w) - 1}], got {gap}")
    idx = np.arange(h * w).reshape(h, w)
    near, far = [], []
    for axis in (0, 1):
        a, i = leaf.swapaxes(0, axis), idx.swapaxes(0, axis)
        p, q = a[:-gap], a[gap:]
        ok = p != q
        for s in range(1, gap):
            mid = a[s : s + len(p)]
            ok &= (mid == p) | (mid == q)
        ip, iq = i[:-gap][ok], i[gap:][ok]
        lp, lq = p[ok], q[ok]
        near.append(np.where(lp < lq, ip, iq))
        far.append(np.where(lp < lq, iq, ip))
    return np.concatenate(near), np.concatenate(far)


# --- data set -------------------------------------------------------------------------------------


class DeadLeavesDataset(Dataset):
    """``split`` of a dead-leaves spec as ``(PIL RGB image, 0)`` items, like the other data sets
    (one class, ``deadleaves``). ``scene(i)`` gives item i's ground truth."""

    def __init__(
        self, params: DeadLeavesParams, split: str = "train", transform: Callable | None = None
    ) -> None:
        split = split.lower()
        if split not in SPLITS:
            raise GmaeError(f"unknown split {split!r} for deadleaves; valid: {', '.join(SPLITS)}")
        self.params, self.split, self.transform = params, split, transform
        self.length = params.n if split == "train" else params.eval_n
        self.root = f"{params.spec()}/{split}"
        self.classes = [PREFIX]
        self.class_to_idx = {PREFIX: 0}

    @property
    def targets(self) -> list[int]:
        return [0] * self.length

    @property
    def samples(self) -> list[tuple[str, int]]:
        return [(f"{self.root}#{i}", 0) for i in range(self.length)]

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> DeadLeavesScene:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        return render_scene(self.params, self.split, index % self.length)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image: Any = Image.fromarray(self.scene(index).image)
        if self.transform is not None:
            image = self.transform(image)
        return image, 0


def build_deadleaves(spec: str, split: str = "train", transform: Callable | None = None):
    return DeadLeavesDataset(parse_spec(spec), split, transform)
