"""Our encoder as a timm ``VisionTransformer``: state-dict conversion, export and loading.

The encoder is built from timm's ``PatchEmbed`` and ``Block`` with timm's parameter names, so the
conversion is: the encoder's state dict, plus ``pos_embed`` (a fixed sin-cos buffer here,
including the all-zero cls row; timm's learnable ``pos_embed`` parameter with
``class_token=True, no_embed_class=False``). The final LayerNorm is timm's ``norm`` (``fc_norm``
off), so timm's ``forward_features`` equals our ``forward_features``.

**Normalisation.** gmae models take [0, 1] images and normalise inside; a timm model expects
normalised images. Feed it ``(x - mean) / std`` with the mean / std stored in the export
(ImageNet's unless the model was trained with others); ``timm.data.resolve_data_config(model=m)``
picks them up from the pretrained config.

The ``.safetensors`` export carries, as metadata: ``timm_model`` (a timm architecture name),
``timm_kwargs`` (JSON: img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
global_pool, ...), ``pretrained_cfg_overlay`` (JSON: mean, std, input_size, num_classes 0, ...)
and ``source``. Load it with :func:`create_timm_model` or directly::

    timm.create_model(name, pretrained=True, num_classes=0,
                      pretrained_cfg_overlay=dict(file=path, custom_load=False), **kwargs)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save, save_file
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from gmae import __version__
from gmae import io as gio
from gmae.errors import ArgumentError, GmaeError
from gmae.loading.formats import TIMM_FORMAT, read_metadata
from gmae.loading.loaders import load_any

FORMAT = TIMM_FORMAT  # read back by gmae.loading (a timm export is a --ckpt)
GLOBAL_POOLS = ("token", "avg")

# (embed_dim, depth, num_heads) of timm's standard ViTs -> a timm model name.
TIMM_ARCHS = {
    (192, 12, 3): "vit_tiny_patch16_224",
    (384, 12, 6): "vit_small_patch16_224",
    (768, 12, 12): "vit_base_patch16_224",
    (1024, 24, 16): "vit_large_patch16_224",
    (1280, 32, 16): "vit_huge_patch14_224",
}


def timm_state_dict(encoder: nn.Module) -> dict[str, Tensor]:
    """The encoder's weights under timm ``VisionTransformer`` names (fp32, CPU)."""
    state = {k: v.detach().float().cpu() for k, v in encoder.state_dict().items()}
    state["pos_embed"] = encoder.pos_embed.detach().float().cpu()  # [1, 1 + N, D], cls row first
    return state


def timm_kwargs(encoder: nn.Module, global_pool: str = "token") -> dict[str, Any]:
    """``VisionTransformer`` keyword arguments that rebuild ``encoder``'s architecture.

    ``global_pool="token"`` (cls token) or ``"avg"`` (mean of patch tokens); either way the
    final ``norm`` stays before pooling (``fc_norm=False``), so features match ours exactly.
    """
    if global_pool not in GLOBAL_POOLS:
        raise GmaeError(
            f"unknown global_pool {global_pool!r}; choose from {', '.join(GLOBAL_POOLS)}"
        )
    mlp_ratio = encoder.blocks[0].mlp.fc1.out_features / encoder.embed_dim if encoder.depth else 4.0
    return {
        "img_size": encoder.img_size,
        "patch_size": encoder.patch_size,
        "in_chans": encoder.in_chans,
        "embed_dim": encoder.embed_dim,
        "depth": encoder.depth,
        "num_heads": encoder.num_heads,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": True,
        "class_token": True,
        "no_embed_class": False,
        "global_pool": global_pool,
        "fc_norm": False,
    }


def timm_name(encoder: nn.Module) -> str:
    """A timm architecture of the same family; the kwargs override its size anyway."""
    return TIMM_ARCHS.get(
        (encoder.embed_dim, encoder.depth, encoder.num_heads), "vit_base_patch16_224"
    )


def save_timm(
    model: nn.Module,
    out: str | os.PathLike,
    model_name: str | None = None,
    global_pool: str = "token",
    source: str = "",
) -> dict[str, Any]:
    """Write ``model.encoder`` as a timm state dict with its timm recipe in the metadata."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise GmaeError(f"timm exports are .safetensors files, got {out}")
    encoder = model.encoder
    name, kwargs = _timm_target(encoder, model_name, global_pool)
    cfg = pretrained_cfg(model)
    mean, std = cfg["mean"], cfg["std"]
    # custom_load False: some timm ViT names default to .npz loaders.
    overlay = {k: cfg[k] for k in OVERLAY_KEYS}
    metadata = {
        "format": FORMAT,
        "timm_model": name,
        "timm_kwargs": json.dumps(kwargs),
        "pretrained_cfg_overlay": json.dumps(overlay),
        "input_normalization": f"(x - mean) / std with mean={mean}, std={std}; x in [0, 1]",
        "gmae_version": __version__,
        "source": source,
    }
    tensors = {k: v.contiguous().clone() for k, v in timm_state_dict(encoder).items()}
    with gio.atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return {"out": str(out), "timm_model": name, "timm_kwargs": kwargs, "mean": mean, "std": std}


# The pretrained_cfg keys a single-file export stores as timm's pretrained_cfg_overlay.
OVERLAY_KEYS = ("custom_load", "num_classes", "mean", "std", "input_size", "interpolation",
                "crop_pct")  # fmt: skip


def _timm_target(
    encoder: nn.Module, model_name: str | None, global_pool: str
) -> tuple[str, dict[str, Any]]:
    """The timm architecture name (checked) and create_model kwargs for ``encoder``."""
    name = model_name or timm_name(encoder)
    if not timm.is_model(name.split(".")[0]):
        raise GmaeError(f"unknown timm model name {name!r} (see timm.list_models('vit_*'))")
    return name, timm_kwargs(encoder, global_pool)


def pretrained_cfg(model: nn.Module, crop_pct: float = 1.0) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for ``model.encoder``: our input size, normalisation and eval
    crop (``gmae.data.eval_transform``: short side to ``size / crop_pct``, bicubic, centre
    crop), so ``timm.data.resolve_data_config`` + ``create_transform`` preprocess as we do."""
    encoder = model.encoder
    return {
        "custom_load": False,
        "input_size": [encoder.in_chans, encoder.img_size, encoder.img_size],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "mean": [round(float(v), 6) for v in model.normalize.mean.flatten()],
        "std": [round(float(v), 6) for v in model.normalize.std.flatten()],
        "num_classes": 0,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
    }


def save_timm_dir(
    model: nn.Module,
    out: str | os.PathLike,
    model_name: str | None = None,
    global_pool: str = "token",
) -> dict[str, Any]:
    """Write ``model.encoder`` as a timm Hub-style directory (``config.json`` with
    ``architecture``, ``model_args`` and ``pretrained_cfg``, plus ``model.safetensors``) that
    ``timm.create_model("local-dir:OUT", pretrained=True)`` loads; each file is atomic."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArgumentError("out", f"{out} exists and is not a directory")
    encoder = model.encoder
    name, kwargs = _timm_target(encoder, model_name, global_pool)
    cfg = pretrained_cfg(model)
    config = {
        "architecture": name,
        "num_classes": 0,
        "num_features": encoder.embed_dim,
        "global_pool": global_pool,
        # The architecture name only picks timm's ViT family; these arguments set the size.
        "model_args": {k: v for k, v in kwargs.items() if k != "num_classes"},
        "pretrained_cfg": cfg,
    }
    tensors = {k: v.contiguous().clone() for k, v in timm_state_dict(encoder).items()}
    out.mkdir(parents=True, exist_ok=True)
    gio.write_bytes(out / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    gio.write_json(out / "config.json", config)
    return {"out": str(out), "timm_model": name, "timm_kwargs": kwargs, "mean": cfg["mean"],
            "std": cfg["std"]}  # fmt: skip


def export_timm(
    ckpt: str,
    out: str | os.PathLike,
    model_name: str | None = None,
    global_pool: str = "token",
    config: str | None = None,
    img_size: int | None = None,
) -> dict[str, Any]:
    """``gmae export timm``: any checkpoint ``load_any`` reads -> a timm directory
    (``local-dir:``), or a single ``.safetensors`` file when ``out`` ends in ``.safetensors``."""
    loaded = load_any(ckpt, config=config, img_size=img_size)
    if Path(out).suffix == ".safetensors":
        return save_timm(loaded.model, out, model_name, global_pool, source=loaded.source)
    return save_timm_dir(loaded.model, out, model_name, global_pool)


def read_timm_export(path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(timm_model, timm_kwargs, pretrained_cfg_overlay)`` of a timm export."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise GmaeError(f"{path} is not a gmae timm export (no 'format: {FORMAT}' metadata)")
    # JSON has no tuples; timm's configs use them (input_size, mean, std).
    overlay = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in json.loads(meta["pretrained_cfg_overlay"]).items()
    }
    return meta["timm_model"], json.loads(meta["timm_kwargs"]), overlay


def create_timm_model(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """The timm model of an export, weights loaded, in eval mode.

    ``overrides`` go to ``timm.create_model`` (e.g. ``num_classes=10``, ``global_pool="avg"``,
    ``drop_path_rate=0.1``). Feed it ImageNet-normalised images (see the module docstring).
    """
    name, kwargs, overlay = read_timm_export(path)
    overlay = {**overlay, "file": str(Path(path))}
    try:
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, **{**kwargs, **overrides}
        )
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise GmaeError(f"timm export {path} does not fit {name}: {first}") from exc
    return model.eval()


def timm_vit_from_model(
    model: nn.Module,
    num_classes: int,
    global_pool: str = "avg",
    fc_norm: bool = True,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm ``VisionTransformer`` initialised from ``model.encoder``, for fine-tuning.

    MAE's fine-tune model: global average pooling of the patch tokens followed by a fresh
    ``fc_norm`` (the pretrained final norm is dropped, as MAE does), a head initialised with
    std 2e-5, and stochastic depth. ``fc_norm=False`` keeps the pretrained norm instead.
    """
    kwargs = timm_kwargs(model.encoder, "token")
    kwargs.update(global_pool=global_pool, fc_norm=fc_norm, num_classes=num_classes)
    vit = VisionTransformer(**kwargs, drop_path_rate=drop_path_rate)
    state = timm_state_dict(model.encoder)
    if fc_norm:
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    result = vit.load_state_dict(state, strict=False)
    fresh = {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    if result.unexpected_keys or set(result.missing_keys) - fresh:
        raise GmaeError(
            f"encoder does not fit timm VisionTransformer: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    if num_classes > 0:
        trunc_normal_(vit.head.weight, std=2e-5)
        nn.init.zeros_(vit.head.bias)
    return vit


@torch.no_grad()
def timm_features(vit: nn.Module, imgs: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """timm ``forward_features`` of [0, 1] images (normalised here): [B, 1 + N, D]."""
    return vit.forward_features((imgs - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
