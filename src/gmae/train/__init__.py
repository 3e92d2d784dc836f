"""The pretraining engine: config, loop, checkpoints, DDP (see docs/training.md).

Public API (imported lazily, so ``gmae --help`` stays fast)::

    load_config(preset_or_yaml, overrides=()) -> Config
    pretrain(cfg, out_dir, resume=None, max_steps=None) -> summary dict
    load_pretrained(checkpoint_path) -> (model in eval mode, Config)
"""

from __future__ import annotations

from gmae.lazy import lazy_exports

_LAZY = {
    "Config": "gmae.train.config",
    "load_config": "gmae.train.config",
    "pretrain": "gmae.train.engine",
    "load_pretrained": "gmae.loading.loaders",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
