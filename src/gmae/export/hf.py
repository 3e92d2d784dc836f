"""Hugging Face ``transformers`` interop: MAE as ``ViTMAEForPreTraining``, any encoder as
``ViTModel``, and the reverse mapping so that HF ViT weights load as gmae encoders.

Our blocks are timm's (fused ``qkv``); HF's ViT splits it into ``query`` / ``key`` / ``value``.
Everything else is a rename. HF stores the fixed sin-cos tables as (frozen) parameters, so the
exports carry them (``position_embeddings``, ``decoder_pos_embed``). HF models expect
normalised pixels; the exported ``preprocessor_config.json`` (a ``BitImageProcessor``: resize
the short side, centre crop, rescale, normalise) does what ``gmae.data.eval_transform`` does.

    save_hf(model, out, arch="auto")      # MAE -> vitmae, others -> vit (encoder only)

The reverse mapping (HF ViT weights as a ``--ckpt``) is ``gmae.loading.formats.hf_to_timm``,
re-exported here with ``is_hf_vit``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from gmae.errors import ArgumentError, GmaeError
from gmae.export.timm import timm_state_dict
from gmae.loading.formats import block_indices, hf_name_pairs, hf_to_timm, is_hf_vit
from gmae.loading.loaders import load_any
from gmae.models import MAE

__all__ = ["ARCHS", "build_hf", "export_hf", "hf_to_timm", "is_hf_vit", "preprocessor_config",
           "save_hf", "timm_to_hf"]  # fmt: skip

ARCHS = ("auto", "vit", "vitmae")


def timm_to_hf(state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """timm ViT names (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.i``,
    ``norm``; optionally MAE's ``decoder_*`` and ``mask_token``) -> HF ``ViTModel`` names, with
    ``prefix`` (``"vit."`` for ``ViTMAEForPreTraining``) on the encoder's."""
    decoder = block_indices(state, "decoder_blocks") if "decoder_embed.weight" in state else None
    out: dict[str, Tensor] = {}
    for ours, theirs in hf_name_pairs(block_indices(state, "blocks"), decoder, prefix):
        if isinstance(theirs, tuple):  # timm's fused qkv -> HF's query, key, value
            out.update(zip(theirs, state[ours].chunk(3)))
        else:
            out[theirs] = state[ours]
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def _encoder_config(enc: nn.Module) -> dict[str, Any]:
    return {
        "image_size": enc.img_size,
        "patch_size": enc.patch_size,
        "num_channels": enc.in_chans,
        "hidden_size": enc.embed_dim,
        "num_hidden_layers": enc.depth,
        "num_attention_heads": enc.num_heads,
        "intermediate_size": enc.blocks[0].mlp.fc1.out_features if enc.depth else 4 * enc.embed_dim,
        "hidden_act": "gelu",  # timm's nn.GELU: the exact (erf) GELU
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def _timm_state(model: nn.Module, with_decoder: bool) -> dict[str, Tensor]:
    state = timm_state_dict(model.encoder)
    if with_decoder:
        for key, value in model.state_dict().items():
            if not key.startswith("encoder."):
                state[key] = value
        state["decoder_pos_embed"] = model.decoder_pos_embed
    return state


def build_hf(model: nn.Module, arch: str = "auto") -> nn.Module:
    """The ``transformers`` model equal to ``model``: ``ViTMAEForPreTraining`` (arch "vitmae",
    MAE only) or ``ViTModel`` without pooler (arch "vit", the encoder of any model)."""
    try:
        import transformers
    except ImportError as exc:
        raise GmaeError("gmae export hf needs transformers (pip install transformers)") from exc
    if arch not in ARCHS:
        raise ArgumentError("arch", f"unknown {{arch}} {arch!r}; choose from {', '.join(ARCHS)}")
    is_mae = isinstance(model, MAE)
    if arch == "auto":
        arch = "vitmae" if is_mae else "vit"
    if arch == "vitmae" and not is_mae:
        raise ArgumentError(
            "arch",
            f"{{arch}} vitmae needs an MAE checkpoint, this is {type(model).__name__}: use "
            "{arch} vit (the encoder)",
        )
    common = _encoder_config(model.encoder)
    mean = [float(v) for v in model.normalize.mean.flatten()]
    std = [float(v) for v in model.normalize.std.flatten()]
    if arch == "vitmae":
        dec = model.decoder_blocks
        config = transformers.ViTMAEConfig(
            **common,
            decoder_hidden_size=model.decoder_embed.out_features,
            decoder_num_hidden_layers=len(dec),
            decoder_num_attention_heads=dec[0].attn.num_heads if len(dec) else 1,
            decoder_intermediate_size=dec[0].mlp.fc1.out_features if len(dec) else 1,
            mask_ratio=float(model.mask_ratio),
            norm_pix_loss=bool(model.norm_pix_loss),
        )
        hf = transformers.ViTMAEForPreTraining(config)
        state = timm_to_hf(_timm_state(model, True), prefix="vit.")
    else:
        config = transformers.ViTConfig(**common)
        hf = transformers.ViTModel(config, add_pooling_layer=False)
        state = timm_to_hf(_timm_state(model, False))
    # Our images are normalised inside the model; HF's are normalised by the processor.
    config.image_mean, config.image_std = mean, std
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GmaeError(
            f"the model does not map onto {type(hf).__name__}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return hf.eval()


def preprocessor_config(model: nn.Module) -> dict[str, Any]:
    """A ``BitImageProcessor`` doing ``gmae.data.eval_transform(img_size)`` + normalisation."""
    size = model.encoder.img_size
    return {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "resample": 3,  # PIL bicubic, as eval_transform
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(v) for v in model.normalize.mean.flatten()],
        "image_std": [float(v) for v in model.normalize.std.flatten()],
        "do_convert_rgb": True,
    }


def save_hf(model: nn.Module, out: str | os.PathLike, arch: str = "auto") -> dict[str, Any]:
    """Write ``model`` as a ``transformers`` directory (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``); each file replaces its old version atomically."""

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArgumentError("out", f"{out} exists and is not a directory")
    hf = build_hf(model, arch)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gmae-hf-", dir=out))
    try:
        hf.save_pretrained(tmp, safe_serialization=True)
        (tmp / "preprocessor_config.json").write_text(
            json.dumps(preprocessor_config(model), indent=2) + "\n"
        )
        names = sorted(p.name for p in tmp.iterdir())
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "class": type(hf).__name__, "files": names}


def export_hf(
    ckpt: str, out: str | os.PathLike, arch: str = "auto", config: str | None = None
) -> dict[str, Any]:
    """``gmae export hf``: any checkpoint ``load_any`` reads -> a ``transformers`` directory."""
    loaded = load_any(ckpt, config=config)
    return save_hf(loaded.model, out, arch)
