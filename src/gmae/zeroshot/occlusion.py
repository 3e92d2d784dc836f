"""Does GMAE's depth order learn who occludes whom? Scores against dead-leaves ground truth.

The scenes (``gmae.data.deadleaves``) have a known occlusion order per pixel, so each zero-shot
reading of GMAE's depth becomes a number (docs/occlusion.md). The model sees the whole scene
(mask ratio 0); its depth map is the renderer's expected camera depth at the scene's resolution
(``model.camera_at``), with pixels less than half covered (alpha < 0.5) counted as farthest.

1. ``depth_order``: for every pixel pair straddling one true occlusion boundary
   (``occlusion_pairs``: ``gap`` px apart along a row or column), is the occluding side nearer?
   Ties count a half; 0.5 is chance. Per image the fraction of pairs ordered right; reported as
   the mean over images with a 95 % bootstrap CI over images and the sign-flip p against 0.5
   (``gmae.evaluate.paired``), and pooled over all pairs.
2. ``rank_correlation``: per image, Spearman's rho between each visible leaf's median GMAE depth
   and its true occlusion index (leaves of at least ``MIN_LEAF_PIXELS`` pixels); > 0: nearer
   leaves get nearer depths. Mean over images with its bootstrap CI.
3. ``boundaries``: GMAE's layer-index edges (``gmae.zeroshot.edges``, combined over L) against
   the true occlusion boundaries with the BSDS benchmark (``gmae.evaluate.boundaries``; ODS, OIS,
   AP), beside Canny and Sobel on the scene, with paired bootstraps of per-image F.
4. ``figure_ground``: every figure-ground method of ``gmae.zeroshot.figure_ground`` (the GMAE
   near-layer rules, feature PCA, centre prior, and with an MAE checkpoint MAE's reconstruction
   error and feature PCA) against the unoccluded leaves (``figure_mask``), by IoU.

Baselines in the same run: ``random_gmae`` (the same architecture freshly initialised: what the
architecture and renderer give without learning) and ``shuffled`` (each scene scored with the
next scene's GMAE map: what a map that ignores the image scores), and Canny / Sobel for edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm import tqdm

from gmae.data.deadleaves import (
    DeadLeavesScene,
    build_deadleaves,
    is_deadleaves_spec,
    occlusion_pairs,
)
from gmae.errors import ArgumentError, GmaeError
from gmae.evaluate.boundaries import evaluate_boundaries
from gmae.evaluate.paired import compare_boundaries, paired_bootstrap
from gmae.images import colormap, save_png, strip
from gmae.zeroshot.common import Photo, model_device, model_input
from gmae.zeroshot.edges import baseline_edges, gmae_edges
from gmae.zeroshot.figure_ground import figure_ground, score_masks
from gmae.zeroshot.stats import spearman

COVERED = 0.5  # alpha below this: the pixel counts as farthest (as in figure_ground)
MIN_LEAF_PIXELS = 4  # leaves smaller than this get no median depth in the rank correlation
DEFAULT_MAX_DIST = 0.02  # boundary match tolerance: 1.8 px at 64 px (BSDS's 0.0075 is 4.3 px there)
GMAE, RANDOM, SHUFFLED = "gmae", "random_gmae", "shuffled"


@dataclass
class ModelMaps:
    """Per-scene maps of one model at the scenes' resolution: expected depth [N, H, W] (inf
    where alpha < COVERED) and the combined layer-index edge map [N, H, W] in [0, 1]."""

    depth: np.ndarray
    edges: np.ndarray


def model_maps(
    model,
    photos: Sequence[Photo],
    layers: Sequence[int] = (4, 8, 16, 32),
    batch_size: int = 16,
    progress: bool = False,
) -> ModelMaps:
    if batch_size < 1:
        raise ArgumentError("batch_size", f"must be at least 1, got {batch_size}")
    h, w = photos[0].size
    if any(p.size != (h, w) for p in photos):
        raise GmaeError("occlusion scores need scenes of one size")
    depths, edges = [], []
    dev = model_device(model)
    for i in tqdm(range(0, len(photos), batch_size), desc="occlusion", disable=not progress):
        x = model_input(photos[i : i + batch_size], model.img_size, dev)
        with torch.no_grad():
            g = model.predict_gaussians(x, mask_ratio=0.0)
            out = model.render_gaussians(g, h, w, background=0.0, return_depth=True)
            _, combined, _ = gmae_edges(model, g, h, w, layers)
        d = out.depth[:, 0].float().cpu().numpy()
        a = out.alpha[:, 0].float().cpu().numpy()
        depths.append(np.where(a >= COVERED, d, np.inf))
        edges.append(combined.float().cpu().numpy())
    return ModelMaps(np.concatenate(depths), np.concatenate(edges))


# --- scores ---------------------------------------------------------------------------------------


def pair_accuracy(depth: np.ndarray, near: np.ndarray, far: np.ndarray) -> tuple[float, int]:
    """(fraction of pairs with the near pixel nearer, ties a half; number of pairs)."""
    d = np.asarray(depth).ravel()
    dn, df = d[near], d[far]
    right = (dn < df).sum() + 0.5 * (dn == df).sum()
    return (float(right / near.size) if near.size else float("nan")), int(near.size)


def leaf_rank_correlation(depth: np.ndarray, leaf: np.ndarray) -> float:
    """Spearman's rho between the median depth of each visible leaf (>= MIN_LEAF_PIXELS pixels,
    finite depth) and its occlusion index; nan with fewer than 3 such leaves."""
    leaf, depth = np.asarray(leaf).ravel(), np.asarray(depth).ravel()
    order = np.argsort(leaf, kind="stable")
    ids, starts, counts = np.unique(leaf[order], return_index=True, return_counts=True)
    big = counts >= MIN_LEAF_PIXELS
    medians = np.array(
        [np.median(depth[order[s : s + c]]) for s, c in zip(starts[big], counts[big])]
    )
    ok = np.isfinite(medians)
    return spearman(medians[ok], ids[big][ok]) if ok.sum() >= 3 else float("nan")


def mean_ci(values: Sequence[float], chance: float = 0.0, n_boot: int = 10_000) -> dict:
    """Mean over images of a per-image score, its 95 % bootstrap CI (resampling images) and the
    sign-flip p against ``chance``; nan images are left out."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return {"mean": float(v.mean()) if v.size else float("nan"), "n": int(v.size)}
    b = paired_bootstrap(v, np.full(v.size, chance), n_boot=n_boot)
    return {
        "mean": b["mean_a"],
        "ci": [b["ci"][0] + chance, b["ci"][1] + chance],
        "p_vs_chance": b["p_sign_flip"],
        "chance": chance,
        "n": b["n"],
    }


def _paired(a: Sequence[float], b: Sequence[float], n_boot: int) -> dict:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:  # e.g. no scene with three finite leaf depths
        return {"n": int(ok.sum()), "mean_diff": float("nan")}
    return paired_bootstrap(a[ok], b[ok], n_boot=n_boot)


def depth_order_scores(
    depths: dict[str, np.ndarray], scenes: Sequence[DeadLeavesScene], gap: int, n_boot: int
) -> dict:
    pairs = [occlusion_pairs(s.leaf, gap) for s in scenes]
    per: dict[str, list[float]] = {}
    out: dict = {}
    for name, maps in depths.items():
        acc = [pair_accuracy(d, n, f) for d, (n, f) in zip(maps, pairs)]
        per[name] = [a for a, _ in acc]
        total = sum(c for _, c in acc)
        pooled = sum(a * c for a, c in acc if c) / max(total, 1)
        out[name] = {**mean_ci(per[name], 0.5, n_boot), "pooled": pooled, "pairs": total}
        out[name]["per_image"] = [round(a, 4) for a in per[name]]
    for base in (RANDOM, SHUFFLED):
        if GMAE in per and base in per:
            out[f"{GMAE}_vs_{base}"] = _paired(per[GMAE], per[base], n_boot)
    return out


def rank_correlation_scores(
    depths: dict[str, np.ndarray], scenes: Sequence[DeadLeavesScene], n_boot: int
) -> dict:
    per = {
        name: [leaf_rank_correlation(d, s.leaf) for d, s in zip(maps, scenes)]
        for name, maps in depths.items()
    }
    out: dict = {name: mean_ci(v, 0.0, n_boot) for name, v in per.items()}
    for base in (RANDOM, SHUFFLED):
        if GMAE in per and base in per:
            out[f"{GMAE}_vs_{base}"] = _paired(per[GMAE], per[base], n_boot)
    return out


def boundary_scores(
    edge_maps: dict[str, np.ndarray],
    scenes: Sequence[DeadLeavesScene],
    max_dist: float,
    n_boot: int,
    workers: int | None = None,
) -> dict:
    names = [f"{i:06d}" for i in range(len(scenes))]
    gt = {n: [s.boundaries] for n, s in zip(names, scenes)}
    full = {}
    for method, maps in edge_maps.items():
        preds = dict(zip(names, maps))
        full[method] = evaluate_boundaries(preds, gt, max_dist=max_dist, workers=workers).to_dict()
    out: dict = {m: {k: r[k] for k in ("ods", "ois", "ap")} for m, r in full.items()}
    if GMAE in full:
        for base in (RANDOM, SHUFFLED, "canny", "sobel"):
            if base in full:
                out[f"{GMAE}_vs_{base}"] = compare_boundaries(full[GMAE], full[base], n_boot=n_boot)
    return out


# --- the run --------------------------------------------------------------------------------------


def occlusion_scores(
    model,
    scenes: Sequence[DeadLeavesScene],
    random_model=None,
    mae_model=None,
    gap: int = 1,
    layers: Sequence[int] = (4, 8, 16, 32),
    max_dist: float = DEFAULT_MAX_DIST,
    n_boot: int = 10_000,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[dict, dict[str, ModelMaps]]:
    """All scores (module docstring) as a JSON-ready dict, and each GMAE's maps."""
    if len(scenes) < 2:
        raise GmaeError(
            f"need at least 2 scenes (the shuffled control pairs them), got {len(scenes)}"
        )
    photos = [Photo(f"{i:06d}", s.image) for i, s in enumerate(scenes)]
    maps = {GMAE: model_maps(model, photos, layers, batch_size, progress)}
    if random_model is not None:
        maps[RANDOM] = model_maps(random_model, photos, layers, batch_size, progress)
    nxt = np.roll(np.arange(len(scenes)), -1)  # scene i gets scene i + 1's map
    depths = {name: m.depth for name, m in maps.items()}
    depths[SHUFFLED] = maps[GMAE].depth[nxt]
    edges = {name: m.edges for name, m in maps.items()}
    edges[SHUFFLED] = maps[GMAE].edges[nxt]
    for name in ("canny", "sobel"):
        edges[name] = np.stack([baseline_edges(name, s.image) for s in scenes])

    masks = figure_ground(model, photos, mae_model, batch_size, progress)
    if random_model is not None:
        rnd = figure_ground(random_model, photos, None, batch_size, progress)
        for rule in ("gmae_depth_otsu", "gmae_near_alpha"):
            masks[f"{RANDOM}_{rule.removeprefix('gmae_')}"] = rnd[rule]
    otsu = masks["gmae_depth_otsu"]
    masks[f"{SHUFFLED}_depth_otsu"] = {p.name: otsu[photos[j].name] for p, j in zip(photos, nxt)}
    figure_gt = {p.name: s.figure for p, s in zip(photos, scenes)}
    fg = {}
    for method, per in masks.items():
        s = score_masks(per, figure_gt)
        fg[method] = {"iou_fg": s["iou_fg"], "miou": s["miou"]}
    fg["figure_fraction"] = float(np.mean([s.figure.mean() for s in scenes]))

    result = {
        "n_images": len(scenes),
        "settings": {"gap": gap, "layers": list(layers), "max_dist": max_dist, "n_boot": n_boot,
                     "covered": COVERED, "min_leaf_pixels": MIN_LEAF_PIXELS},
        "depth_order": depth_order_scores(depths, scenes, gap, n_boot),
        "rank_correlation": rank_correlation_scores(depths, scenes, n_boot),
        "boundaries": boundary_scores(edges, scenes, max_dist, n_boot, workers),
        "figure_ground": fg,
    }  # fmt: skip
    return result, maps


def load_scenes(spec: str, split: str = "test", num_images: int = 0) -> list[DeadLeavesScene]:
    """The first ``num_images`` scenes (0: all) of a dead-leaves split."""
    if not is_deadleaves_spec(spec):
        raise ArgumentError(
            "spec",
            f"occlusion scores need a dead-leaves data set ({{spec}} deadleaves...), got {spec!r}",
        )
    ds = build_deadleaves(spec, split)
    n = len(ds) if num_images <= 0 else min(num_images, len(ds))
    return [ds.scene(i) for i in range(n)]


def scene_strip(scene: DeadLeavesScene, index: int, maps: dict[str, ModelMaps]) -> np.ndarray:
    """One scene's picture strip (uint8 RGB, 4x enlarged): the scene, the true occlusion rank,
    each model's expected depth (near = bright, per-image rank-normalised), the true boundaries
    and GMAE's edges. ``index``: the scene's position in the maps."""

    def ranked(a: np.ndarray) -> np.ndarray:
        """Near = 1, far = 0, by average rank (equal values stay equal); inf = 0."""
        flat = a.ravel()
        ok = np.isfinite(flat)
        r = np.zeros(flat.shape)
        if ok.sum() > 1:
            ranks = rankdata(flat[ok])
            r[ok] = (ranks.max() - ranks) / max(ranks.max() - ranks.min(), 1e-12)
        return r.reshape(a.shape)

    parts = [scene.image, colormap(ranked(scene.rank.astype(float)), "magma")]
    parts += [colormap(ranked(m.depth[index]), "magma") for m in maps.values()]
    parts += [scene.boundaries.astype(np.float64), maps[GMAE].edges[index]]
    return np.kron(strip(parts, gap=2), np.ones((4, 4, 1), np.uint8))


def save_pictures(out, scenes: Sequence[DeadLeavesScene], maps: dict[str, ModelMaps], count: int):
    """OUT/scene_NNNNNN.png: ``scene_strip`` of each of the first ``count`` scenes."""
    written = []
    for i, s in enumerate(scenes[:count]):
        path = Path(out) / f"scene_{i:06d}.png"
        save_png(path, scene_strip(s, i, maps))
        written.append(path)
    return written
