"""Model interop: timm exports, the compact ``.safetensors`` checkpoint format, and loading of
any checkpoint a ``--ckpt`` argument can name (see docs/evaluation.md).

    load_model(path) -> (model, config)            compact .safetensors or training .pt
    load_any(ckpt, config=None) -> LoadedModel     also MAE release checkpoints and "random"
    save_compact(model, config, path, fp16=False)
    save_timm(model, path); create_timm_model(path) -> timm VisionTransformer

Names are imported on first access, so ``gmae --help`` (which imports ``gmae.export.cli``)
does not pay for torch.
"""

from __future__ import annotations

from gmae.lazy import lazy_exports

_LAZY = {
    "LoadedModel": "gmae.export.checkpoints",
    "export_checkpoint": "gmae.export.checkpoints",
    "load_any": "gmae.export.checkpoints",
    "load_mae_release": "gmae.export.checkpoints",
    "load_model": "gmae.export.checkpoints",
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
