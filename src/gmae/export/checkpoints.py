"""The compact ``.safetensors`` format for committed models: writing it (:func:`save_compact`,
``gmae export checkpoint``).

A compact checkpoint holds the model's state dict (fp32, or fp16 with ``fp16=True``) and, in
the safetensors metadata, ``format`` (``gmae.checkpoint``), ``format_version``, ``config`` (the
resolved training config as JSON), ``gmae_version``, ``dtype`` and ``source``.

Reading it, and every other format, is ``gmae.loading``; the loading names this module used to
define (``load_any``, ``load_model``, ``LoadedModel``, ``read_metadata`` ...) are re-exported
from there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import nn

from gmae import __version__
from gmae import io as gio
from gmae.errors import GmaeError
from gmae.loading.formats import (
    COMPACT_FORMAT,
    COMPACT_FORMAT_VERSION,
    RANDOM,
    is_mae_release,
    read_header,
    read_metadata,
    read_safetensors,
)
from gmae.loading.loaders import (
    HEADS_BY_WIDTH,
    LoadedModel,
    load_any,
    load_mae_release,
    load_model,
    random_like,
)
from gmae.train.config import config_to_dict

__all__ = [
    "FORMAT", "FORMAT_VERSION", "HEADS_BY_WIDTH", "RANDOM", "LoadedModel", "export_checkpoint",
    "is_mae_release", "load_any", "load_mae_release", "load_model", "random_like",
    "read_header", "read_metadata", "read_safetensors", "save_compact",
]  # fmt: skip

FORMAT = COMPACT_FORMAT
FORMAT_VERSION = COMPACT_FORMAT_VERSION


def save_compact(
    model: nn.Module,
    config: Any,
    path: str | os.PathLike,
    fp16: bool = False,
    source: str = "",
) -> Path:
    """Write ``model``'s weights and its ``Config`` to ``path`` (``.safetensors``), atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise GmaeError(f"compact checkpoints are .safetensors files, got {path}")
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if fp16 and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous().clone()  # no shared storage (safetensors refuses it)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config_to_dict(config)),
        "gmae_version": __version__,
        "dtype": "float16" if fp16 else "float32",
        "source": source,
    }
    # Serialised in memory and written by gmae's atomic writer: safetensors' own save_file
    # leaves a hidden .tmpXXXXXX file behind when killed mid-write.
    try:
        gio.write_bytes(path, save(tensors, metadata=metadata))
    except OSError as exc:
        raise GmaeError(f"cannot write {path}: {gio.describe_os_error(exc)}") from exc
    return path


def export_checkpoint(
    ckpt: str | os.PathLike, out: str | os.PathLike, fp16: bool = False
) -> dict[str, Any]:
    """``gmae export checkpoint``: a training checkpoint (or compact file) -> compact file."""
    loaded = load_any(str(ckpt))
    if loaded.config is None:
        raise GmaeError(
            f"{ckpt} carries no gmae training config ({loaded.kind} checkpoint): only gmae "
            "training checkpoints can be exported to the compact format"
        )
    path = save_compact(loaded.model, loaded.config, out, fp16=fp16, source=str(ckpt))
    n = sum(t.numel() for t in loaded.model.state_dict().values())
    return {"out": str(path), "tensors_numel": n, "bytes": path.stat().st_size, "fp16": fp16}
