"""Photos in: RGB photos at their own resolution, and the model input and Gaussians made from
them (shared by gmae.zeroshot, gmae.export's ``gaussians`` command and gmae.report).

Aspect handling [choice]: a model sees every photo squashed to its square input (``img_size``,
bicubic, no crop, so nothing is cut off). Renders use ``Camera(height=H, width=W)`` at the photo's
own size: the GMAE camera's intrinsics are fx = W/2, fy = H/2, so the square render is stretched
back to the photo's aspect ratio, which undoes the squash pixel for pixel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from gmae.data import load_image
from gmae.errors import GmaeError

if TYPE_CHECKING:
    from gmae.models import Gaussians

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Photo:
    """An RGB photo at its own resolution: ``pixels`` uint8 (H, W, 3)."""

    name: str  # file stem; output files are named after it
    pixels: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def load_photo(path: str | os.PathLike) -> Photo:

    path = Path(path)
    return Photo(path.stem, np.asarray(load_image(path)))


def shrink_photo(photo: Photo, max_side: int) -> Photo:
    """``photo`` shrunk in place (Lanczos) so that its longer side is at most ``max_side``
    (0: never shrink); returned for chaining."""
    h, w = photo.size
    if max_side <= 0 or max(h, w) <= max_side:
        return photo
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    photo.pixels = np.asarray(Image.fromarray(photo.pixels).resize(size, Image.Resampling.LANCZOS))
    return photo


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
    arrs = [
        np.asarray(Image.fromarray(p.pixels).resize((size, size), Image.Resampling.BICUBIC))
        for p in photos
    ]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.to(device) if device is not None else x


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def predict_gaussians(model, photos: Sequence[Photo]) -> Gaussians:
    """The Gaussians a GMAE predicts for ``photos`` (mask ratio 0, no gradients), each photo
    squashed to the model's input size (``model_input``)."""
    with torch.no_grad():
        return model.predict_gaussians(model_input(photos, model.img_size, model_device(model)))
