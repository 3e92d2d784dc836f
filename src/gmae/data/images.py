"""Image loading that survives bad files: ``load_image`` and a skipping ``ImageFolder``.

A long pretraining run should not die in a DataLoader worker because one JPEG in a million is
truncated. ``SafeImageFolder`` replaces an unreadable sample by the next readable one (so batches
keep their size and the substitution is reproducible), remembers it as bad, and warns once per
dataset object per process with the count so far; ``.skipped`` lists every file it gave up on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from gmae.errors import GmaeError

# What PIL raises on a missing, truncated, non-image or absurdly large file. UnidentifiedImageError
# and "image file is truncated" are OSErrors; some broken headers surface as ValueError/SyntaxError.
_LOAD_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImageWarning(UserWarning):
    """A data set skipped one or more files that could not be decoded."""


# 16-bit (and 32-bit integer) grayscale modes: PIL's convert("RGB") clips them at 255 (a
# 16-bit PNG comes out almost white), so they are scaled to 8 bits first.
_WIDE_GRAY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _WIDE_GRAY:
        arr = np.asarray(img, dtype=np.float64)
        top = _WIDE_GRAY[img.mode]
        if img.mode == "I" and arr.size and arr.max() > top:  # a true 32-bit image
            top = 2**32 - 1 if arr.min() >= 0 else 2**31 - 1
        arr = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")


def _open_rgb(path: str | os.PathLike) -> Image.Image:
    # Open from a file object we close ourselves (PIL keeps lazy files open otherwise);
    # convert() forces the full decode, so truncation is detected here and not later.
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
        return _to_rgb(img)


def _reason(exc: BaseException) -> str:
    # PIL's UnidentifiedImageError repeats the file object's repr; the path is reported anyway.
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image file"
    return str(exc) or type(exc).__name__


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load an image file as an RGB PIL image; ``GmaeError`` if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"image {path} not found")
    try:
        return _open_rgb(path)
    except _LOAD_ERRORS as exc:
        raise GmaeError(f"cannot read image {path}: {_reason(exc)}") from exc


def is_image_file(path: str) -> bool:
    """An image extension (case-insensitive) and not a hidden file (e.g. macOS ``._x.jpg``)."""
    return not os.path.basename(path).startswith(".") and has_file_allowed_extension(
        path, IMG_EXTENSIONS
    )


class SafeImageFolder(ImageFolder):
    """``torchvision.datasets.ImageFolder`` that skips unreadable images instead of raising.

    Same layout (``root/<class>/**/<image>``), attributes (``classes``, ``class_to_idx``,
    ``samples``, ``targets``, ``imgs``) and items (``(image, label)``; a PIL RGB image when
    ``transform`` is None). Hidden class folders and hidden files are ignored. A missing root, no
    class folders, or a class folder without images is a ``GmaeError`` naming the folder.

    When ``samples[i]`` cannot be decoded, item ``i`` is the next readable sample (wrapping
    around), with that sample's label. Only decoding is guarded; errors in ``transform`` propagate.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise GmaeError(f"image folder {root} not found")
        super().__init__(
            str(root),
            transform=transform,
            target_transform=target_transform,
            loader=_open_rgb,
            is_valid_file=is_image_file,
            allow_empty=True,  # checked below, with a message that names the folder
        )
        found = set(self.targets)
        empty = [c for i, c in enumerate(self.classes) if i not in found]
        if empty:
            more = " ..." if len(empty) > 5 else ""
            raise GmaeError(
                f"no images in class folder(s) {', '.join(empty[:5])}{more} of {root} "
                f"(image extensions: {', '.join(IMG_EXTENSIONS)})"
            )
        self._bad: set[int] = set()
        self.skipped: list[tuple[str, str]] = []  # (path, reason), in the order found
        self._warned_pid: int | None = None

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        """Class folders, sorted, ignoring hidden ones (``.ipynb_checkpoints``, ``.git``)."""
        classes = sorted(
            e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
        )
        if not classes:
            raise GmaeError(
                f"no class folders in {directory}: expected {directory}/<class>/<image>"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for k in range(n):
            j = (index + k) % n
            if j in self._bad:
                continue
            path, target = self.samples[j]
            try:
                sample = self.loader(path)
            except _LOAD_ERRORS as exc:
                self._bad.add(j)
                self.skipped.append((path, _reason(exc)))
                continue
            self._warn_once()
            if self.transform is not None:
                sample = self.transform(sample)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return sample, target
        raise GmaeError(f"no readable images in {self.root} ({len(self._bad)} unreadable)")

    def _warn_once(self) -> None:
        # Once per object per process: DataLoader workers each hold a copy and warn for themselves.
        if not self.skipped or self._warned_pid == os.getpid():
            return
        self._warned_pid = os.getpid()
        path, reason = self.skipped[0]
        warnings.warn(
            f"{self.root}: skipped {len(self.skipped)} unreadable image(s) so far, substituting "
            f"the next readable one (first: {path}: {reason}); the dataset's .skipped lists them",
            UnreadableImageWarning,
            stacklevel=3,
        )
