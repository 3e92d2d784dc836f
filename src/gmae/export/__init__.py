"""Model interop: writing timm and Hugging Face exports and the compact ``.safetensors``
checkpoint format (see docs/evaluation.md).

    save_compact(model, config, path, fp16=False)
    save_timm(model, path); create_timm_model(path) -> timm VisionTransformer

Loading any checkpoint a ``--ckpt`` argument can name is ``gmae.loading``; its ``load_any``,
``load_model``, ``load_mae_release`` and ``LoadedModel`` are re-exported here.

Names are imported on first access, so ``gmae --help`` (which imports ``gmae.export.cli``)
does not pay for torch.
"""

from __future__ import annotations

from gmae.lazy import lazy_exports

_LAZY = {
    "LoadedModel": "gmae.loading.loaders",
    "export_checkpoint": "gmae.export.checkpoints",
    "load_any": "gmae.loading.loaders",
    "load_mae_release": "gmae.loading.loaders",
    "load_model": "gmae.loading.loaders",
    "save_compact": "gmae.export.checkpoints",
    "create_timm_model": "gmae.export.timm",
    "export_timm": "gmae.export.timm",
    "save_timm": "gmae.export.timm",
    "timm_kwargs": "gmae.export.timm",
    "timm_state_dict": "gmae.export.timm",
    "timm_vit_from_model": "gmae.export.timm",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
