"""Data sets: offline archives, dataset specs, transforms, and image loading that skips bad files.

Public API (other subpackages code against exactly these names)::

    build_dataset(spec, split="train", transform=None, data_root=None) -> Dataset
    load_image(path) -> PIL.Image.Image (RGB)
    pretrain_transform(img_size, scale=(0.2, 1.0)); eval_transform(img_size, crop_pct=1.0)
    bsds500_pairs(split); load_bsds_ground_truth(mat_path); weizmann_horses()
    prepare(name); dataset_root(name); data_dir(); ARCHIVES

Everything that needs torch/torchvision is imported on first attribute access, so ``gmae --help``
and ``gmae data prepare`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gmae.data.archives import (
    ARCHIVES,
    data_dir,
    dataset_root,
    is_prepared,
    prepare,
    shared_data_root,
    verify,
)
from gmae.lazy import lazy_exports

if TYPE_CHECKING:
    from gmae.data.datasets import (
        NAMED_SPECS,
        ArrayImageDataset,
        build_dataset,
        dataset_splits,
    )
    from gmae.data.images import SafeImageFolder, UnreadableImageWarning, load_image
    from gmae.data.segmentation import bsds500_pairs, load_bsds_ground_truth, weizmann_horses
    from gmae.data.transforms import eval_transform, pretrain_transform

_LAZY = {
    "NAMED_SPECS": "gmae.data.datasets",
    "ArrayImageDataset": "gmae.data.datasets",
    "build_dataset": "gmae.data.datasets",
    "dataset_splits": "gmae.data.datasets",
    "SafeImageFolder": "gmae.data.images",
    "UnreadableImageWarning": "gmae.data.images",
    "load_image": "gmae.data.images",
    "bsds500_pairs": "gmae.data.segmentation",
    "load_bsds_ground_truth": "gmae.data.segmentation",
    "weizmann_horses": "gmae.data.segmentation",
    "eval_transform": "gmae.data.transforms",
    "pretrain_transform": "gmae.data.transforms",
}

__all__ = [
    "ARCHIVES",
    "NAMED_SPECS",
    "ArrayImageDataset",
    "SafeImageFolder",
    "UnreadableImageWarning",
    "build_dataset",
    "bsds500_pairs",
    "data_dir",
    "dataset_root",
    "dataset_splits",
    "eval_transform",
    "is_prepared",
    "load_bsds_ground_truth",
    "load_image",
    "prepare",
    "pretrain_transform",
    "shared_data_root",
    "verify",
    "weizmann_horses",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
