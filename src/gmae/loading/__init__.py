"""Model loading: every file format gmae reads, and the one loader behind every ``--ckpt``
(``gmae eval``, ``zeroshot``, ``report``, ``inspect``, ``export``) and ``gmae.from_pretrained``.
See docs/evaluation.md, "What --ckpt accepts".

    load_any(ckpt, config=None, img_size=None, seed=0) -> LoadedModel   any format, or "random"
    load_model(path, img_size=None) -> (model, config)   compact .safetensors or training .pt
    load_pretrained(path) -> (model, config)              a training .pt
    load_mae_or_gmae(path, kind=None, device="cpu")       load_any, checked to hold an MAE/GMAE
    model_kwargs(cfg) -> create_model arguments of a training config

Modules: ``formats`` (names, recognisers and raw readers of each format), ``checks``
(validation of untrusted metadata: configs, keys, shapes, dtypes, values) and ``loaders``
(models from them). This package sits below ``gmae.train``, ``evaluate``, ``zeroshot``,
``export`` and ``report`` and imports none of them (only the config schema,
``gmae.train.config``); they all load through it.

Names are imported on first access, so ``gmae --help`` does not pay for torch.
"""

from __future__ import annotations

from gmae.lazy import lazy_exports

# --ckpt help, shared by every command that takes one.
# --ckpt help, shared by every command that takes one (all read it with load_any).
CKPT_HELP = (
    "checkpoint: training .pt, compact .safetensors, save_pretrained / timm / HF directory, "
    "timm or HF .safetensors, MAE release .pth, or 'random' (with --config: a freshly "
    "initialised model of that architecture, the baseline)"
)
GMAE_CKPT_HELP = (
    "GMAE checkpoint: training .pt, compact .safetensors or save_pretrained directory (any "
    "--ckpt of gmae eval that holds a GMAE)"
)
MAE_CKPT_HELP = (
    "MAE checkpoint for the MAE baselines: training .pt, compact .safetensors, save_pretrained "
    "or HF ViTMAEForPreTraining directory"
)

_LAZY = {
    "LoadedModel": "gmae.loading.loaders",
    "build_model": "gmae.loading.loaders",
    "check_metadata": "gmae.loading.loaders",
    "load_any": "gmae.loading.loaders",
    "load_dir": "gmae.loading.loaders",
    "load_mae_or_gmae": "gmae.loading.loaders",
    "load_mae_release": "gmae.loading.loaders",
    "load_model": "gmae.loading.loaders",
    "load_pretrained": "gmae.loading.loaders",
    "model_kwargs": "gmae.loading.loaders",
    "random_like": "gmae.loading.loaders",
    "RANDOM": "gmae.loading.formats",
    "is_pretrained_dir": "gmae.loading.formats",
    "read_metadata": "gmae.loading.formats",
}

__all__ = sorted([*_LAZY, "CKPT_HELP", "GMAE_CKPT_HELP", "MAE_CKPT_HELP"])

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
