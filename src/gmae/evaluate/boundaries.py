"""The BSDS500 boundary benchmark (ODS / OIS / AP), reimplemented in NumPy and SciPy.

Follows the original MATLAB/C++ benchmark (``boundaryBench`` -> ``evaluation_bdry_image`` ->
``correspondPixels``, then ``collect_eval_bdry``) step by step:

1. A prediction is a boundary-probability map in [0, 1] (higher = more boundary; PNGs are scaled
   by 255 or 65535). Thresholds are MATLAB's ``linspace(1/(n+1), 1-1/(n+1), n)``; at each one
   the map is binarised with ``pb >= t`` and thinned to one-pixel-wide curves (``bwmorph(..,
   'thin', inf)``; :func:`skimage.morphology.thin` is the same algorithm).
2. The thinned map is matched one-to-one to each human annotator's boundary pixels; two pixels
   may match only if their distance is at most ``max_dist`` x the image diagonal. The original
   solves a min-cost assignment with high-cost outliers (Goldberg's CSA), which amounts to a
   maximum-cardinality matching that, among those, minimises the total (rounded) distance. The
   default ``matcher="mincost"`` solves exactly that (SciPy's LAPJVsp on an outlier-augmented
   sparse graph); ``matcher="maxcard"`` takes any maximum-cardinality matching (distances
   ignored), the common simplification, kept to measure what the distance tie-break is worth.
3. Counts accumulate as in the original: recall counts matched annotator pixels over all
   annotator pixels summed over annotators; precision counts predicted pixels matched to *any*
   annotator over predicted pixels.
4. ODS: the best F of the dataset-wide PR curve, linearly interpolated between neighbouring
   thresholds (100 steps). OIS: per image, the (last) threshold with the best F; the counts at
   those thresholds are summed over images. AP: precision interpolated at recall 0:0.01:1 over
   the curve's recall range (``interp1``; outside it counts 0), summed x 0.01.
   Undefined ratios are 0, as in the original (``x / (n + (n == 0))``).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.ndimage import binary_dilation
from scipy.sparse import csr_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from skimage.morphology import thin as thin_fn
from tqdm import tqdm

from gmae.data import load_bsds_ground_truth
from gmae.errors import GmaeError

MATCHERS = ("mincost", "maxcard")
OUTLIER_COST = 100.0  # correspondPixels default: cost of an unmatched pixel, in units of maxDist
COST_MULTIPLIER = 100  # match.cc: distances are rounded to 1/100 px for the integer CSA solver


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_gt_boundaries(mat_path: str | os.PathLike) -> list[np.ndarray]:
    """The annotators' boundary maps (bool, HxW) of a BSDS500 ``groundTruth`` ``.mat`` file."""
    out = [a["boundaries"] for a in load_bsds_ground_truth(mat_path)]
    if not out:
        raise GmaeError(f"{mat_path}: groundTruth is empty")
    if len({b.shape for b in out}) != 1:
        raise GmaeError(f"{mat_path}: annotators' boundary maps differ in size")
    return out


_PNG_SCALE = {"1": 1.0, "L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I": 65535.0}


def load_prediction(path: str | os.PathLike) -> np.ndarray:
    """A grayscale PNG boundary map as float64 in [0, 1]: 8-bit / 255, 16-bit / 65535."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise GmaeError(f"prediction {path} is not a PNG (expected 8- or 16-bit grayscale PNGs)")
    if not path.is_file():
        raise GmaeError(f"prediction {path} not found")
    try:
        with Image.open(path) as img:
            fmt, mode = img.format, img.mode
            arr = np.array(img) if fmt == "PNG" and mode in _PNG_SCALE else None
    except (UnidentifiedImageError, OSError) as exc:
        raise GmaeError(f"cannot read prediction {path}: not a valid PNG ({exc})") from exc
    if fmt != "PNG":
        raise GmaeError(f"prediction {path} is not a PNG file (its content is {fmt})")
    if arr is None:
        raise GmaeError(
            f"prediction {path} has PNG mode {mode}: expected a single-channel grayscale map "
            "(8- or 16-bit)"
        )
    return arr.astype(np.float64) / _PNG_SCALE[mode]


def _as_prediction(name: str, arr: Any) -> np.ndarray:
    """Array inputs: uint8 / 255, uint16 / 65535; floats (and bools) are used as they are."""
    a = np.asarray(arr)
    if a.ndim != 2:
        raise GmaeError(f"prediction {name!r} must be a 2-D array, got shape {a.shape}")
    if a.dtype in (np.uint8, np.uint16):
        return a.astype(np.float64) / float(np.iinfo(a.dtype).max)
    if a.dtype == bool or np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise GmaeError(
        f"prediction {name!r} has dtype {a.dtype}: use floats in [0, 1], uint8 or uint16"
    )


def thresholds_for(nthresh: int) -> np.ndarray:
    """``linspace(1/(n+1), 1-1/(n+1), n)`` with MATLAB's rounding (so pb == t ties agree)."""
    if nthresh < 1:
        raise GmaeError(f"nthresh must be >= 1, got {nthresh}")
    d1, d2 = 1.0 / (nthresh + 1), 1.0 - 1.0 / (nthresh + 1)
    if nthresh == 1:
        return np.array([d2])
    t = d1 + (np.arange(nthresh - 1, dtype=np.float64) * (d2 - d1)) / (nthresh - 1)
    return np.append(t, d2)


# --------------------------------------------------------------------------------------------
# Pixel correspondence (correspondPixels)
# --------------------------------------------------------------------------------------------


def _disc_offsets(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer offsets (dy, dx) with dy^2 + dx^2 <= radius^2, and their lengths."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    d2 = (dy * dy + dx * dx).ravel()
    keep = d2 <= radius * radius
    return dy.ravel()[keep], dx.ravel()[keep], np.sqrt(d2[keep])


class _Target:
    """One annotator's boundary map, indexed for fast neighbourhood look-ups."""

    def __init__(self, bmap: np.ndarray, offsets: tuple[np.ndarray, np.ndarray, np.ndarray]):
        h, w = bmap.shape
        dy, dx, _ = offsets
        self.pad = pad = int(np.abs(dy).max())
        self.ys, self.xs = np.nonzero(bmap)  # pixel ids are row-major positions in this list
        self.count = self.ys.size
        self.labels = np.full((h + 2 * pad, w + 2 * pad), -1, dtype=np.int32)
        self.labels[pad : pad + h, pad : pad + w][bmap] = np.arange(self.count, dtype=np.int32)
        disc = np.zeros((2 * pad + 1, 2 * pad + 1), dtype=bool)
        disc[dy + pad, dx + pad] = True
        self.near = binary_dilation(bmap, disc)  # pixels with a boundary pixel in range


def _assign(
    a_idx: np.ndarray, b_idx: np.ndarray, w: np.ndarray, na: int, nb: int, outlier: float
) -> tuple[np.ndarray, np.ndarray]:
    """Min-cost maximum-cardinality matching between sides A (na) and B (nb): matched pairs.

    Edges ``(a_idx, b_idx)`` with weights ``w`` (all >= 1 and < ``outlier`` / 2). Solved as one
    square min-cost perfect matching (LAPJVsp) with outlier nodes, like match.cc's CSA problem:

    - rows: A pixels, then one "dummy" row per B pixel; columns: one private outlier column per
      A pixel, then the B pixels;
    - A pixel -> its outlier costs ``outlier`` (left unmatched); B pixel <- its dummy costs 0.5
      (left unmatched); dummy of b -> outlier of a costs 1 for every real edge (a, b), which
      lets the freed outlier and dummy of a matched pair pair up.

    A perfect matching with k real pairs costs sum(w) + outlier (na - k) + 0.5 (nb - k) + k, so
    each real pair saves about ``outlier``: the original's objective (an unmatched pixel costs
    100 x the maximum distance, distances count in 1/100 px), whose optimum in practice is a
    maximum-cardinality matching with the least total distance. CSA's sparse random outlier
    links make the original slightly non-deterministic; private outliers make this exact.

    Speed: SciPy's solver spends O(#columns) on every row its initialisation leaves free. With A
    the smaller side, that initialisation (column reduction + augmenting row reduction) settles
    most rows: 2.5x faster than the rectangular form (A rows, outlier + B columns). Each row's
    first column is free in a greedy pass (its own outlier; a dummy's other columns are A
    outliers, taken first), so the solver's Hopcroft-Karp feasibility check ends after one pass
    (that routine can take exponential time on chain-like graphs: scipy issue 26147).
    """
    ar_a, ar_b = np.arange(na), np.arange(nb)
    r = np.concatenate([ar_a, a_idx, na + ar_b, na + b_idx])
    c = np.concatenate([ar_a, na + b_idx, na + ar_b, a_idx])
    v = np.concatenate([np.full(na, outlier), w, np.full(nb, 0.5), np.ones(a_idx.size)])
    # int32 indices: SciPy 1.11's matching refuses the int64 ones csr_array keeps from int64 input
    graph = csr_array((v, (r.astype(np.int32), c.astype(np.int32))), shape=(na + nb, na + nb))
    graph.sort_indices()  # (a no-op in current SciPy) keeps the order the note above needs
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < na) & (col_ind >= na)
    return row_ind[real], col_ind[real] - na


def _match(
    ys: np.ndarray,
    xs: np.ndarray,
    target: _Target,
    offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    max_px: float,
    matcher: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Match predicted pixels (ys, xs) to ``target``.

    Returns a matched flag per predicted pixel and the ids of the matched target pixels.
    """
    n1 = ys.size
    matched = np.zeros(n1, dtype=bool)
    none = np.zeros(0, dtype=np.int64)
    if n1 == 0 or target.count == 0:
        return matched, none
    near = np.flatnonzero(target.near[ys, xs])  # only these can match
    if near.size == 0:
        return matched, none
    dy, dx, dist = offsets
    p = target.pad
    cand = target.labels[(ys[near] + p)[:, None] + dy, (xs[near] + p)[:, None] + dx]
    ei, ek = np.nonzero(cand >= 0)  # ei ascending
    ej = cand[ei, ek]
    # Only matchable pixels (with a partner within range) take part, as in match.cc.
    first = np.ones(ei.size, dtype=bool)
    first[1:] = ei[1:] != ei[:-1]
    rows = near[ei[first]]
    ri = np.cumsum(first) - 1
    present = np.zeros(target.count, dtype=bool)
    present[ej] = True
    cols = np.flatnonzero(present)
    ci = (np.cumsum(present) - 1)[ej]
    m1, m2 = rows.size, cols.size
    if matcher == "mincost":
        # Shift by +1: the sparse solver drops zero weights.
        w = np.rint(dist[ek] * COST_MULTIPLIER) + 1.0  # match.cc rounds to 1/100 px
    else:  # "maxcard": any maximum-cardinality matching, distances ignored
        w = np.ones(ek.size)
    outlier = math.ceil(OUTLIER_COST * max_px * COST_MULTIPLIER) + 1.0
    swap = m2 < m1  # side A (with the outlier columns) = the smaller side
    if swap:
        ti, pi = _assign(ci, ri, w, m2, m1, outlier)
    else:
        pi, ti = _assign(ri, ci, w, m1, m2, outlier)
    matched[rows[pi]] = True
    return matched, cols[ti]


def correspond_pixels(
    pred: np.ndarray, gt: np.ndarray, max_dist: float = 0.0075, matcher: str = "mincost"
) -> tuple[np.ndarray, np.ndarray]:
    """Match two boundary maps one-to-one within ``max_dist`` x diagonal.

    Returns ``(matched_pred, matched_gt)``: bool maps of the pixels of each map that found a
    partner (the original returns partner indices; only their being non-zero is ever used).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise GmaeError(f"boundary maps differ in shape: {pred.shape} vs {gt.shape}")
    if matcher not in MATCHERS:
        raise GmaeError(f"unknown matcher {matcher!r}; known: {', '.join(MATCHERS)}")
    max_px = max_dist * math.hypot(*pred.shape)
    offsets = _disc_offsets(max_px)
    ys, xs = np.nonzero(pred)
    hit, gt_ids = _match(ys, xs, _Target(gt, offsets), offsets, max_px, matcher)
    m_pred = np.zeros(pred.shape, dtype=bool)
    m_pred[ys[hit], xs[hit]] = True
    m_gt = np.zeros(gt.size, dtype=bool)
    m_gt[np.flatnonzero(gt)[gt_ids]] = True  # target ids follow row-major order
    return m_pred, m_gt.reshape(gt.shape)


# --------------------------------------------------------------------------------------------
# Per-image counts (evaluation_bdry_image)
# --------------------------------------------------------------------------------------------


def image_counts(
    pb: np.ndarray,
    gts: Sequence[np.ndarray],
    thresholds: np.ndarray,
    max_dist: float = 0.0075,
    thin: bool = True,
    matcher: str = "mincost",
) -> np.ndarray:
    """Counts ``(cntR, sumR, cntP, sumP)`` per threshold for one image: shape (nthresh, 4)."""
    if matcher not in MATCHERS:
        raise GmaeError(f"unknown matcher {matcher!r}; known: {', '.join(MATCHERS)}")
    pb = np.asarray(pb, dtype=np.float64)
    max_px = max_dist * math.hypot(*pb.shape)
    offsets = _disc_offsets(max_px)
    targets = [_Target(np.asarray(g, dtype=bool), offsets) for g in gts]
    sum_r = sum(t.count for t in targets)
    out = np.zeros((len(thresholds), 4), dtype=np.int64)
    done: dict[int, np.ndarray] = {}  # pb >= t are nested sets: equal size means equal map
    for k, t in enumerate(thresholds):
        bmap = pb >= t
        key = int(np.count_nonzero(bmap))
        if key not in done:
            if thin and key:
                bmap = thin_fn(bmap)
            ys, xs = np.nonzero(bmap)
            acc = np.zeros(ys.size, dtype=bool)
            cnt_r = 0
            for target in targets:
                hit, ids = _match(ys, xs, target, offsets, max_px, matcher)
                acc |= hit
                cnt_r += ids.size
            done[key] = np.array([cnt_r, sum_r, int(np.count_nonzero(acc)), ys.size])
        out[k] = done[key]
    return out


# --------------------------------------------------------------------------------------------
# Summaries (collect_eval_bdry)
# --------------------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return num / (den + (den == 0))


def _fmeasure(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    r, p = np.asarray(r, dtype=np.float64), np.asarray(p, dtype=np.float64)
    s = p + r
    return 2 * p * r / (s + (s == 0))


def _best_f(
    thresholds: np.ndarray, r: np.ndarray, p: np.ndarray
) -> tuple[float, float, float, float]:
    """``maxF``: best (t, R, P, F), interpolating linearly (100 steps) between thresholds."""
    best = (thresholds[0], r[0], p[0], float(_fmeasure(r[0], p[0])))
    if len(thresholds) < 2:
        return tuple(map(float, best))
    d = np.linspace(0.0, 1.0, 100)[None, :]
    ti = thresholds[1:, None] * d + thresholds[:-1, None] * (1 - d)
    ri = r[1:, None] * d + r[:-1, None] * (1 - d)
    pi = p[1:, None] * d + p[:-1, None] * (1 - d)
    fi = _fmeasure(ri, pi).ravel()
    k = int(np.argmax(fi))  # first maximum, as the loop's strict '>' keeps the first
    if fi[k] > best[3]:
        best = (ti.ravel()[k], ri.ravel()[k], pi.ravel()[k], fi[k])
    return tuple(map(float, best))


def _average_precision(r: np.ndarray, p: np.ndarray) -> float:
    """``interp1(unique R, P, 0:0.01:1)``, NaN (outside the recall range) as 0, times 0.01."""
    # MATLAB's unique sorts and (pre-R2013a, when the benchmark was written) keeps the last
    # occurrence of repeated values.
    rr = np.asarray(r, dtype=np.float64)[::-1]
    ru, first_in_reversed = np.unique(rr, return_index=True)
    if ru.size < 2:
        return 0.0
    pu = np.asarray(p, dtype=np.float64)[::-1][first_in_reversed]
    ri = np.linspace(0.0, 1.0, 101)
    pi = np.interp(ri, ru, pu, left=np.nan, right=np.nan)
    return float(np.nansum(pi) * 0.01)


@dataclass
class ImageScore:
    name: str
    threshold: float  # best threshold (interpolated between the evaluated ones)
    recall: float
    precision: float
    f: float


@dataclass
class BoundaryResult:
    """ODS / OIS / AP, the dataset PR curve and per-image best scores."""

    ods: float
    ods_threshold: float
    ods_recall: float
    ods_precision: float
    ois: float
    ois_recall: float
    ois_precision: float
    ap: float
    thresholds: np.ndarray
    recall: np.ndarray  # dataset-wide, per threshold
    precision: np.ndarray
    f: np.ndarray
    images: list[ImageScore]
    counts: dict[str, np.ndarray] = field(repr=False)  # name -> (nthresh, 4) cntR sumR cntP sumP
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ods": self.ods,
            "ois": self.ois,
            "ap": self.ap,
            "ods_detail": {
                "threshold": self.ods_threshold,
                "recall": self.ods_recall,
                "precision": self.ods_precision,
                "f": self.ods,
            },
            "ois_detail": {
                "recall": self.ois_recall,
                "precision": self.ois_precision,
                "f": self.ois,
            },
            "settings": self.settings,
            "curve": {
                "threshold": self.thresholds.tolist(),
                "recall": self.recall.tolist(),
                "precision": self.precision.tolist(),
                "f": self.f.tolist(),
            },
            "images": [vars(s).copy() for s in self.images],
        }


def summarize(
    counts: Mapping[str, np.ndarray], thresholds: np.ndarray, settings: dict | None = None
) -> BoundaryResult:
    """Combine per-image counts into ODS / OIS / AP exactly as ``collect_eval_bdry``."""
    if not counts:
        raise GmaeError("no images to evaluate")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    total = np.zeros((len(thresholds), 4), dtype=np.int64)
    best_counts = np.zeros(4, dtype=np.int64)
    images = []
    for name, c in counts.items():
        c = np.asarray(c)
        r, p = _ratio(c[:, 0], c[:, 1]), _ratio(c[:, 2], c[:, 3])
        t, br, bp, bf = _best_f(thresholds, r, p)
        images.append(ImageScore(name, t, br, bp, bf))
        total += c
        f = _fmeasure(r, p)
        best_counts += c[np.flatnonzero(f == f.max())[-1]]  # ff(end): the last best threshold
    r, p = _ratio(total[:, 0], total[:, 1]), _ratio(total[:, 2], total[:, 3])
    f = _fmeasure(r, p)
    t, br, bp, bf = _best_f(thresholds, r, p)
    r_max, p_max = _ratio(best_counts[0], best_counts[1]), _ratio(best_counts[2], best_counts[3])
    return BoundaryResult(
        ods=bf,
        ods_threshold=t,
        ods_recall=br,
        ods_precision=bp,
        ois=float(_fmeasure(r_max, p_max)),
        ois_recall=float(r_max),
        ois_precision=float(p_max),
        ap=_average_precision(r, p),
        thresholds=thresholds,
        recall=r,
        precision=p,
        f=f,
        images=images,
        counts=dict(counts),
        settings=dict(settings or {}),
    )


# --------------------------------------------------------------------------------------------
# Data set driver
# --------------------------------------------------------------------------------------------


def _pair_inputs(
    pred: str | os.PathLike | Mapping[str, Any], gt: str | os.PathLike | Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(name, prediction path or array, GT path or list of maps), sorted by name."""
    if isinstance(pred, Mapping):
        preds: dict[str, Any] = dict(pred)
    else:
        pdir = Path(pred)
        if not pdir.is_dir():
            raise GmaeError(f"prediction directory {pdir} not found")
        files = sorted(f for f in pdir.iterdir() if f.is_file() and not f.name.startswith("."))
        bad = [f.name for f in files if f.suffix.lower() != ".png"]
        if bad:
            raise GmaeError(
                f"{pdir} holds non-PNG file(s) ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}): predictions must be PNG boundary maps"
            )
        preds = {f.stem: f for f in files}
    if not preds:
        raise GmaeError(f"no predictions found in {pred}")
    if isinstance(gt, Mapping):
        gts: dict[str, Any] = dict(gt)
    else:
        gdir = Path(gt)
        if not gdir.is_dir():
            raise GmaeError(f"ground-truth directory {gdir} not found")
        gts = {f.stem: f for f in gdir.glob("*.mat")}
    missing = sorted(set(preds) - set(gts))
    if missing:
        where = gt if not isinstance(gt, Mapping) else "the ground truth"
        raise GmaeError(
            f"no ground truth for {len(missing)} prediction(s) in {where}: "
            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
        )
    return [(name, preds[name], gts[name]) for name in sorted(preds)]


def _evaluate_one(job: tuple) -> tuple[str, np.ndarray]:
    name, pred, gt, thresholds, max_dist, thin, matcher = job
    pb = (
        load_prediction(pred) if isinstance(pred, str | os.PathLike) else _as_prediction(name, pred)
    )
    gts = (
        load_gt_boundaries(gt)
        if isinstance(gt, str | os.PathLike)
        else [np.asarray(g, dtype=bool) for g in gt]
    )
    for g in gts:
        if g.shape != pb.shape:
            raise GmaeError(
                f"{name}: prediction is {pb.shape[1]}x{pb.shape[0]} but its ground truth is "
                f"{g.shape[1]}x{g.shape[0]} (width x height)"
            )
    return name, image_counts(pb, gts, thresholds, max_dist, thin, matcher)


def die_with_parent(parent: int) -> None:
    """Worker-process initializer: exit as soon as ``parent`` (the pool's owner) is gone.

    On Linux the kernel delivers SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); elsewhere a
    daemon thread polls the parent id. Without this, killing the owner leaves the workers (and
    multiprocessing's resource tracker, which waits for them) orphaned and asleep forever.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="gmae-parent-watch", daemon=True).start()


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def evaluate_boundaries(
    pred_dir_or_arrays: str | os.PathLike | Mapping[str, Any],
    gt_dir: str | os.PathLike | Mapping[str, Sequence[np.ndarray]],
    nthresh: int = 99,
    max_dist: float = 0.0075,
    thin: bool = True,
    workers: int | None = None,
    matcher: str = "mincost",
    progress: bool = False,
) -> BoundaryResult:
    """Score boundary predictions against BSDS500 ground truth (ODS, OIS, AP).

    ``pred_dir_or_arrays``: a directory of PNGs (8- or 16-bit grayscale, higher = more boundary)
    or a mapping name -> 2-D array (floats in [0, 1]; integer arrays are divided by their dtype's
    maximum). ``gt_dir``: a directory of BSDS ``<name>.mat`` files or a mapping name -> list of
    bool boundary maps. Predictions are paired with ground truth by name (file stem).
    ``workers``: processes (default: all CPUs; 1 = in this process).
    """
    if matcher not in MATCHERS:
        raise GmaeError(f"unknown matcher {matcher!r}; known: {', '.join(MATCHERS)}")
    if not (0 < max_dist < 1):
        raise GmaeError(f"max_dist must be in (0, 1) (a fraction of the diagonal), got {max_dist}")
    thresholds = thresholds_for(nthresh)
    pairs = _pair_inputs(pred_dir_or_arrays, gt_dir)
    jobs = [(n, p, g, thresholds, max_dist, thin, matcher) for n, p, g in pairs]
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise GmaeError(f"workers must be >= 1, got {workers}")
    workers = min(workers, len(jobs))
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="eval boundaries", unit="img", disable=not progress)
    counts: dict[str, np.ndarray] = {}
    try:
        if workers == 1:
            for job in jobs:
                name, c = _evaluate_one(job)
                counts[name] = c
                bar.update()
        else:
            # spawn: safe even if the parent holds threads (torch, BLAS); costs ~1 s per worker.
            # Workers die with this process (SIGTERM, SIGKILL), so none is left behind.
            try:
                with ProcessPoolExecutor(
                    workers,
                    mp_context=mp.get_context("spawn"),
                    initializer=die_with_parent,
                    initargs=(os.getpid(),),
                ) as pool:
                    for name, c in pool.map(_evaluate_one, jobs, chunksize=1):
                        counts[name] = c
                        bar.update()
            except BrokenProcessPool as exc:
                raise GmaeError(
                    "a boundary-evaluation worker process died (out of memory? or, when called "
                    "from a script, put the call under `if __name__ == '__main__':`); "
                    "workers=1 avoids the process pool"
                ) from exc
    finally:
        bar.close()
    settings = {
        "nthresh": nthresh,
        "max_dist": max_dist,
        "thin": thin,
        "matcher": matcher,
        "n_images": len(counts),
        "workers": workers,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return summarize(counts, thresholds, settings)
