"""Shared plumbing of the zero-shot tools: batching, health, selecting Gaussians.

Re-exported here for callers: the photos (``Photo``, ``load_photo``, ``model_input``,
``predict_gaussians`` ...: ``gmae.photos``), the picture helpers (``to_uint8``, ``save_png``,
``strip`` ...: ``gmae.images``) and ``load_model`` (``gmae.loading.load_mae_or_gmae``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import fields

import torch

from gmae.errors import ArgumentError

# The picture helpers live in gmae.images and the photos in gmae.photos; these names are kept
# here for callers.
from gmae.images import colormap, save_gray16, save_png, strip, to_uint8
from gmae.loading.loaders import load_mae_or_gmae
from gmae.models import Gaussians
from gmae.models.health import describe, gaussian_health
from gmae.photos import (
    IMAGE_SUFFIXES,
    Photo,
    list_images,
    load_photo,
    model_device,
    model_input,
    predict_gaussians,
    shrink_photo,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Photo",
    "check_health",
    "colormap",
    "list_images",
    "load_photo",
    "model_device",
    "model_input",
    "predict_gaussians",
    "save_gray16",
    "save_png",
    "shrink_photo",
    "size_batches",
    "strip",
    "take_images",
    "to_uint8",
    "with_colors",
]


# --- models -----------------------------------------------------------------------------------


load_model = load_mae_or_gmae  # the old name of gmae.loading.load_mae_or_gmae


def check_health(model, photos: Sequence[Photo], max_images: int = 32) -> dict:
    """Gaussian health on (up to ``max_images`` of) the photos a command works on, at the
    model's training mask ratio with a fixed mask; prints a warning to stderr unless healthy.

    Zero-shot results of a degenerate model (saturation collapse) are artefacts of the query
    index, not of the image: docs/models.md, "Gaussian health".
    """
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


# --- batches ----------------------------------------------------------------------------------


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
    return Gaussians(**{f.name: getattr(g, f.name)[idx] for f in fields(g)})


def with_colors(g: Gaussians, colors) -> Gaussians:
    return Gaussians(g.means, g.scales, g.quats, colors, g.opacities)
