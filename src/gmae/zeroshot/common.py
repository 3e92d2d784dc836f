"""Shared plumbing of the zero-shot tools: photos, batching, health, PNG output (models load
through ``gmae.loading.load_mae_or_gmae``, also reachable here as ``load_model``).

Aspect handling [choice]: a model sees every photo squashed to its square input (``img_size``,
bicubic, no crop, so nothing is cut off). Renders use ``Camera(height=H, width=W)`` at the photo's
own size: the GMAE camera's intrinsics are fx = W/2, fy = H/2, so the square render is stretched
back to the photo's aspect ratio, which undoes the squash pixel for pixel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gmae import io as gio
from gmae.errors import ArgumentError, GmaeError

if TYPE_CHECKING:
    import torch

    from gmae.models import Gaussians

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# --- models -----------------------------------------------------------------------------------


def __getattr__(name: str):
    """``load_model``: the old name of ``gmae.loading.load_mae_or_gmae``, imported on first use
    (it needs torch; this module does not)."""
    if name == "load_model":
        from gmae.loading.loaders import load_mae_or_gmae

        return load_mae_or_gmae
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def check_health(model, photos: Sequence[Photo], max_images: int = 32) -> dict:
    """Gaussian health on (up to ``max_images`` of) the photos a command works on, at the
    model's training mask ratio with a fixed mask; prints a warning to stderr unless healthy.

    Zero-shot results of a degenerate model (saturation collapse) are artefacts of the query
    index, not of the image: docs/models.md, "Gaussian health".
    """
    import sys

    import torch

    from gmae.models.health import describe, gaussian_health

    imgs = model_input(list(photos[:max_images]), model.img_size, model_device(model))
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(imgs.shape[0], model.encoder.num_patches, generator=gen).to(imgs.device)
    health = gaussian_health(model, imgs, noise=noise)
    if health["verdict"] == "degenerate":
        print(
            f"gmae: WARNING: this checkpoint is degenerate ({describe(health)}). Its layers, "
            "depth order and edges are artefacts of the query index, not of the image. Check "
            "with `gmae inspect`.",
            file=sys.stderr,
        )
    elif health["verdict"] == "degraded":
        print(f"gmae: warning: {describe(health)}", file=sys.stderr)
    return health


# --- photos -----------------------------------------------------------------------------------


@dataclass
class Photo:
    """An RGB photo at its own resolution: ``pixels`` uint8 (H, W, 3)."""

    name: str  # file stem; output files are named after it
    pixels: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def load_photo(path: str | os.PathLike) -> Photo:
    from gmae.data import load_image

    path = Path(path)
    return Photo(path.stem, np.asarray(load_image(path)))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GmaeError(f"image folder {folder} not found")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise GmaeError(f"no images in {folder} (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise GmaeError(f"{folder} has several images named {dup[0]} (outputs are named by stem)")
    return files


def model_input(photos: Sequence[Photo], size: int, device=None) -> torch.Tensor:
    """Photos squashed to ``size x size`` (bicubic; PIL antialiases when shrinking), [B, 3, S, S]
    in [0, 1]."""
    import torch
    from PIL import Image

    arrs = [
        np.asarray(Image.fromarray(p.pixels).resize((size, size), Image.Resampling.BICUBIC))
        for p in photos
    ]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.to(device) if device is not None else x


def size_batches(photos: Sequence[Photo], batch_size: int) -> Iterator[list[Photo]]:
    """Batches of photos of one size (a render batch shares one camera), in input order."""
    if batch_size < 1:
        raise ArgumentError("batch_size", f"must be at least 1, got {batch_size}")
    by_size: dict[tuple[int, int], list[Photo]] = {}
    for p in photos:
        by_size.setdefault(p.size, []).append(p)
    for group in by_size.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


# --- Gaussians --------------------------------------------------------------------------------


def take_images(g: Gaussians, idx) -> Gaussians:
    """Select / repeat images of a Gaussians batch (``idx`` indexes the batch dimension)."""
    from gmae.models import Gaussians

    return Gaussians(**{f.name: getattr(g, f.name)[idx] for f in fields(g)})


def with_colors(g: Gaussians, colors) -> Gaussians:
    from gmae.models import Gaussians

    return Gaussians(g.means, g.scales, g.quats, colors, g.opacities)


# --- output -----------------------------------------------------------------------------------


def to_uint8(img) -> np.ndarray:
    """[0, 1] float HxW / HxWxC / CHW (array or tensor) -> uint8 HxW(xC)."""
    arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | os.PathLike, img) -> None:
    """An 8-bit PNG (RGB or grayscale) of a [0, 1] float or uint8 picture, written atomically."""
    from gmae.report.html import to_png_bytes

    gio.write_bytes(path, to_png_bytes(to_uint8(img)))


def save_gray16(path: str | os.PathLike, arr01) -> None:
    """A 16-bit grayscale PNG of a [0, 1] map (boundary maps: higher = more boundary)."""
    import io

    from PIL import Image

    arr = np.asarray(arr01, dtype=np.float64)
    u16 = (np.clip(arr, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(u16).save(buf, format="PNG")
    gio.write_bytes(path, buf.getvalue())


def strip(images: Sequence[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Pictures of one height side by side (uint8, gray ones made RGB), ``gap`` px apart."""
    rgb = [to_uint8(im) for im in images]
    rgb = [np.repeat(im[..., None], 3, axis=-1) if im.ndim == 2 else im for im in rgb]
    h = rgb[0].shape[0]
    if any(im.shape[0] != h for im in rgb):
        raise ValueError("strip: pictures must have the same height")
    spacer = np.full((h, gap, 3), fill, np.uint8)
    parts: list[np.ndarray] = []
    for i, im in enumerate(rgb):
        parts += [spacer, im] if i else [im]
    return np.concatenate(parts, axis=1)


def colormap(values: np.ndarray, name: str = "viridis") -> np.ndarray:
    """[0, 1] map -> uint8 RGB through a matplotlib colour map."""
    from matplotlib import colormaps

    rgba = colormaps[name](np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)
