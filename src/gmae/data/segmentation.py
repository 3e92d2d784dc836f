"""BSDS500 and Weizmann Horse file pairs and ground truth, for the zero-shot experiments.

Each helper prepares (verifies and extracts) its archive on first use. Pairs are sorted by image
id so results are reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from gmae.data.archives import dataset_root
from gmae.errors import GmaeError

BSDS_SPLITS = ("train", "val")  # the BSDS500 test split is deliberately not in the archive


def bsds500_pairs(
    split: str, data_root: str | os.PathLike | None = None
) -> list[tuple[Path, Path]]:
    """``(image .jpg, groundTruth .mat)`` pairs of a BSDS500 split (train: 200, val: 100)."""
    if split not in BSDS_SPLITS:
        raise GmaeError(
            f"unknown BSDS500 split {split!r}; valid: {', '.join(BSDS_SPLITS)} "
            "(the test split is not in the offline archive)"
        )
    root = dataset_root("bsds500", data_root)
    pairs = []
    for img in sorted((root / "images" / split).glob("*.jpg")):
        gt = root / "groundTruth" / split / f"{img.stem}.mat"
        if not gt.is_file():
            raise GmaeError(f"BSDS500 image {img} has no ground truth {gt}")
        pairs.append((img, gt))
    if not pairs:
        raise GmaeError(f"no BSDS500 images in {root / 'images' / split}")
    return pairs


def load_bsds_ground_truth(mat_path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """The human annotations in a BSDS ``.mat`` file (usually 4-9), one dict per annotator.

    ``segmentation``: ``np.uint16`` (H, W) region labels from 1; ``boundaries``: ``bool`` (H, W).
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise GmaeError(f"ground truth {mat_path} not found")
    try:
        cells = scipy.io.loadmat(str(mat_path))["groundTruth"]
        out = []
        for cell in cells.ravel():
            seg = np.asarray(cell["Segmentation"][0, 0], dtype=np.uint16)
            bdry = np.asarray(cell["Boundaries"][0, 0]).astype(bool)
            if seg.ndim != 2 or seg.shape != bdry.shape:
                raise ValueError(f"segmentation {seg.shape} vs boundaries {bdry.shape}")
            out.append({"segmentation": seg, "boundaries": bdry})
    # NotImplementedError: a MATLAB v7.3 (HDF5) file, which loadmat cannot read.
    except (
        MatReadError,
        NotImplementedError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
    ) as exc:
        raise GmaeError(f"cannot read BSDS ground truth {mat_path}: {exc}") from exc
    if not out:
        raise GmaeError(f"no annotations in BSDS ground truth {mat_path}")
    return out


def weizmann_horses(data_root: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """``(photo .jpg, mask .png)`` pairs of the Weizmann horses (0 = ground, 255 = figure)."""
    root = dataset_root("weizmann-horse", data_root)
    pairs = []
    for img in sorted((root / "images").glob("*.jpg")):
        mask = root / "masks" / f"{img.stem}.png"
        if not mask.is_file():
            raise GmaeError(f"horse image {img} has no mask {mask}")
        pairs.append((img, mask))
    if not pairs:
        raise GmaeError(f"no horse images in {root / 'images'}")
    return pairs
