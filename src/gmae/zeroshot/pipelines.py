"""Folder-level runs shared by the CLI and the report: edges and figure-ground over many photos."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gmae import io as gio
from gmae.errors import GmaeError
from gmae.images import save_gray16, save_png
from gmae.zeroshot.common import Photo, model_device, model_input, size_batches
from gmae.zeroshot.edges import baseline_edges, gmae_edges
from gmae.zeroshot.figure_ground import figure_ground, find_masks, load_mask, score_masks

SHUFFLED = "shuffled"  # edge control: another photo's GMAE map (see write_edges)
LUMINANCE_ORDER = "luminance_order"  # edge control: groups by brightness, not depth


def edge_maps(
    model,
    photos: Sequence[Photo],
    layers: Sequence[int] = (4, 8, 16, 32),
    rule: str = "median",
    baselines: Sequence[str] = (),
    batch_size: int = 4,
    progress: bool = False,
) -> Iterator[tuple[Photo, dict[str, np.ndarray]]]:
    """(photo, {method: boundary map in [0, 1] at the photo's size}) for every photo.

    Methods: ``gmae_L{L}`` per L, ``gmae_combined`` and each photo-based baseline name
    (``shuffled`` needs every photo's map first: ``write_edges`` adds it). ``luminance_order``
    is the combined map of the same Gaussians grouped by brightness instead of depth.
    """
    bar = tqdm(total=len(photos), desc="edges", unit="img", disable=not progress)
    try:
        for batch in size_batches(photos, batch_size):
            h, w = batch[0].size
            with torch.no_grad():
                g = model.predict_gaussians(model_input(batch, model.img_size, model_device(model)))
            per_l, combined, _ = gmae_edges(model, g, h, w, layers, rule)
            if LUMINANCE_ORDER in baselines:
                _, by_luminance, _ = gmae_edges(model, g, h, w, layers, rule, order="luminance")
            for i, photo in enumerate(batch):
                maps = {f"gmae_L{L}": e[i].cpu().numpy() for L, e in per_l.items()}
                maps["gmae_combined"] = combined[i].cpu().numpy()
                for name in baselines:
                    if name == LUMINANCE_ORDER:
                        maps[name] = by_luminance[i].cpu().numpy()
                    elif name != SHUFFLED:
                        maps[name] = baseline_edges(name, photo.pixels)
                yield photo, maps
            bar.update(len(batch))
    finally:
        bar.close()


def write_edges(
    model,
    photos: Sequence[Photo],
    out: str | os.PathLike,
    layers: Sequence[int] = (4, 8, 16, 32),
    rule: str = "median",
    baselines: Sequence[str] = (),
    batch_size: int = 4,
    progress: bool = False,
) -> list[Path]:
    """Write OUT/<method>/<photo>.png (16-bit) for every method; returns the method folders.

    Baseline ``shuffled`` (a control): each photo gets the GMAE combined map of the next photo
    (wrapping around), resized to its size. A map that ignores the image scores the same matched
    or shuffled, so the gap between ``gmae_combined`` and ``shuffled`` is what the edges owe to
    the photo itself.
    """
    out = Path(out)
    dirs: set[Path] = set()
    combined: list[np.ndarray] = []
    for photo, maps in edge_maps(model, photos, layers, rule, baselines, batch_size, progress):
        for method, m in maps.items():
            save_gray16(out / method / f"{photo.name}.png", m)
            dirs.add(out / method)
        if SHUFFLED in baselines:
            combined.append(maps["gmae_combined"].astype(np.float32))
    if SHUFFLED in baselines:
        for i, photo in enumerate(photos):
            other = Image.fromarray(combined[(i + 1) % len(photos)])  # float32: mode "F"
            h, w = photo.size
            resized = np.asarray(other.resize((w, h), Image.Resampling.BILINEAR))
            save_gray16(out / SHUFFLED / f"{photo.name}.png", resized)
        dirs.add(out / SHUFFLED)
    gio.write_json(
        out / "settings.json",
        {"layers": list(layers), "rule": rule, "baselines": list(baselines),
         "images": [p.name for p in photos], "png": "16-bit, higher = more boundary"},
    )  # fmt: skip
    return sorted(dirs)


def run_figure_ground(
    model,
    photos: Sequence[Photo],
    out: str | os.PathLike | None,
    masks_dir: str | os.PathLike | None = None,
    mae_model=None,
    batch_size: int = 4,
    progress: bool = False,
    gt: dict[str, np.ndarray] | None = None,
) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Masks of every method (written to OUT/<method>/<photo>.png when ``out`` is given) and,
    with ground truth (``masks_dir`` or ``gt``), the scores.

    Returns (a JSON-ready summary with ``scores`` per method, {method: {photo: bool mask}}).
    """
    if masks_dir is not None:
        paths = find_masks(masks_dir, [p.name for p in photos])
        gt = {n: load_mask(p) for n, p in paths.items()}
    if gt is not None:
        for p in photos:
            if gt[p.name].shape != p.size:
                raise GmaeError(
                    f"mask of {p.name} is {gt[p.name].shape[1]}x{gt[p.name].shape[0]}, "
                    f"the photo {p.size[1]}x{p.size[0]}"
                )
    masks = figure_ground(model, photos, mae_model, batch_size, progress)
    if out is not None:
        for method, per in masks.items():
            for name, m in per.items():
                save_png(Path(out) / method / f"{name}.png", m.astype(np.uint8) * 255)
    result: dict = {"methods": list(masks), "n_images": len(photos)}
    if gt is not None:
        result["scores"] = {method: score_masks(per, gt) for method, per in masks.items()}
    return result, masks
