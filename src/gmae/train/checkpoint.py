"""Training checkpoints: atomic writes, resume, RNG states, compatibility checks.

A checkpoint is a dict of tensors and plain Python containers only, so that
``torch.load(path, weights_only=True)`` can read it (no pickled classes, no numpy arrays):

    format, gmae_version, config (plain dict), model (state dict), probe (state dict or None),
    optimizer, scaler (state dicts or None), schedule {step, total_steps, effective_batch, lr},
    epoch, step_in_epoch (optimizer steps done in ``epoch``), step (global), skipped,
    rng [one dict per rank: torch, cuda (that rank's GPU only, or None), numpy, python],
    data {seed, world_size}

This module writes checkpoints and restores a run from them (``gmae pretrain --resume``).
Reading model files for anything else is ``gmae.loading``; the loading names this module used
to define (``load_pretrained``, ``load_checkpoint``, ``model_kwargs``, ``load_state`` ...) are
re-exported from there.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gmae import io as gio
from gmae.errors import GmaeError

# Loading lives in gmae.loading; these names are kept here for callers (and for resume).
from gmae.loading.checks import check_finite, check_shapes, load_state, stored_config
from gmae.loading.formats import read_training_checkpoint as load_checkpoint
from gmae.loading.loaders import check_metadata, load_pretrained, model_kwargs

__all__ = [
    "FORMAT",
    "check_compatible",
    "check_finite",
    "check_metadata",
    "check_shapes",
    "load_checkpoint",
    "load_pretrained",
    "load_state",
    "model_kwargs",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "stored_config",
]

FORMAT = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the old file intact.

    A failed write (disk full, file-size limit, I/O error) is a ``GmaeError`` saying so; the
    temporary file is removed and the previous ``path`` (if any) is left as it was.
    """
    path = Path(path)
    existed = path.exists()
    try:
        with gio.atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as exc:
        kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
        raise GmaeError(
            f"cannot save checkpoint {path}: {gio.describe_os_error(exc)} ({kept})"
        ) from exc


def check_compatible(ckpt_config: dict, config: dict, path: str | os.PathLike) -> None:
    """The model (and image size) of a checkpoint must match the run that loads it."""
    old = {**ckpt_config.get("model", {}), "img_size": ckpt_config.get("data", {}).get("img_size")}
    new = {**config.get("model", {}), "img_size": config.get("data", {}).get("img_size")}
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        what = ", ".join(f"{k}: {old.get(k)!r} vs {new.get(k)!r}" for k in diff)
        raise GmaeError(f"checkpoint {path} has a different model config ({what})")


# --- RNG states -----------------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states, as tensors and tuples (``weights_only``-loadable).

    CUDA: only the generator of this process's own GPU (``device``; default the current one),
    so a checkpoint restores on a machine with any number of GPUs.
    """
    # numpy's legacy global RNG is what third-party code uses, so that is the state to keep
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    elif device is None and torch.cuda.is_available():
        cuda = torch.cuda.get_rng_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore ``rng_state``'s states; the CUDA one goes to ``device`` (default: the current
    GPU). Older checkpoints hold every visible GPU's state: this GPU's index is used when it
    exists there, else the first (never an IndexError on a machine with fewer GPUs)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device is not None and device.type != "cuda":
        cuda = None
    if isinstance(cuda, list | tuple):  # format of gmae <= 0.1: get_rng_state_all()
        index = device.index if device is not None else None
        if index is None and torch.cuda.is_available():
            index = torch.cuda.current_device()
        if not cuda:
            cuda = None
        else:
            cuda = cuda[index] if index is not None and index < len(cuda) else cuda[0]
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda, device if device is not None else "cuda")
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
