"""Pictures out: arrays and tensors to uint8, PNG bytes and files, strips and colour maps.

The one home of these helpers for every package (training's reconstruction grids, the zero-shot
tools, the report). Inputs are [0, 1] floats or uint8, as HxW, HxWxC or CxHxW arrays or tensors;
files are written atomically (``gmae.io``). Torch is never imported here.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib import colormaps
from PIL import Image

from gmae import io as gio


def to_uint8(img) -> np.ndarray:
    """[0, 1] float HxW / HxWxC / CxHxW (array or tensor) -> uint8 HxW(xC); uint8 passes
    through. Values are clipped to [0, 1] and rounded (as torchvision's ``save_image``)."""
    arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_png_bytes(image) -> bytes:
    """PNG bytes of a PIL image, or of anything ``to_uint8`` takes (8-bit gray or RGB)."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, img) -> None:
    """An 8-bit PNG (RGB or grayscale) of a [0, 1] float or uint8 picture, written atomically."""
    gio.write_bytes(path, to_png_bytes(img))


def save_gray16(path: str | os.PathLike, arr01) -> None:
    """A 16-bit grayscale PNG of a [0, 1] map (boundary maps: higher = more boundary),
    written atomically."""
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
    rgba = colormaps[name](np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def headless_pyplot():
    """matplotlib's pyplot on the Agg backend (figures to files, never a window). pyplot is
    imported here, on first use and after the backend is chosen, so no GUI backend loads."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
