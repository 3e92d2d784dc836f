"""Train and eval transforms. No normalisation: models take [0, 1] images and normalise inside,
so reconstructions, renders and the data all live in the same space."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor
from torchvision import transforms as T

from gmae.errors import GmaeError


def _check_size(img_size: int) -> None:
    if not isinstance(img_size, numbers.Integral) or img_size <= 0:
        raise GmaeError(f"image size must be a positive integer, got {img_size!r}")


def pretrain_transform(
    img_size: int, scale: tuple[float, float] = (0.2, 1.0), uint8: bool = False
) -> T.Compose:
    """MAE pretraining augmentation: RandomResizedCrop (bicubic) + horizontal flip -> [0, 1].

    ``uint8``: stop at a uint8 tensor (0-255) instead; ``to_unit_float`` on the device then gives
    exactly ``ToTensor``'s values, with a quarter of the bytes through workers, pinned memory
    and the host-to-device copy.
    """
    _check_size(img_size)
    lo, hi = scale
    if not 0.0 < lo <= hi <= 1.0:
        raise GmaeError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale!r}")
    return T.Compose(
        [
            T.RandomResizedCrop(
                img_size, scale=(lo, hi), interpolation=T.InterpolationMode.BICUBIC
            ),
            T.RandomHorizontalFlip(),
            T.PILToTensor() if uint8 else T.ToTensor(),
        ]
    )


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images (0-255) -> float32 in [0, 1], as ``ToTensor`` computes it (x / 255); float
    images pass through. Run it after the copy to the GPU."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images


def eval_transform(img_size: int, crop_pct: float = 1.0) -> T.Compose:
    """Resize the short side to ``img_size / crop_pct`` (bicubic), centre-crop -> [0, 1].

    ``crop_pct=1.0`` keeps the whole (short-side) view; ImageNet evaluation often uses 0.875.
    """
    _check_size(img_size)
    if not 0.0 < crop_pct <= 1.0:
        raise GmaeError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    return T.Compose(
        [
            T.Resize(math.floor(img_size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(img_size),
            T.ToTensor(),
        ]
    )
