"""Build models by name: ``create_model("gmae", encoder="tiny", img_size=32, patch_size=4)``."""

from __future__ import annotations

import inspect
import os
from typing import Any

from torch import nn

from gmae.errors import GmaeError
from gmae.models.config import DecoderConfig, EncoderConfig
from gmae.models.gmae import GMAE
from gmae.models.latent_mim import LatentMIM
from gmae.models.mae import MAE
from gmae.models.vit import ViTEncoder

# ViT widths / depths / heads (Dosovitskiy et al., DeiT for tiny and small); MLP ratio 4.
ENCODER_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}

MODELS: dict[str, type[nn.Module]] = {"mae": MAE, "gmae": GMAE, "latent_mim": LatentMIM}


def _encoder_args(preset: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Preset width / depth / heads, overridden by any explicit embed_dim, depth, num_heads."""
    if preset not in ENCODER_PRESETS:
        raise GmaeError(
            f"unknown encoder preset {preset!r}; choose from {', '.join(ENCODER_PRESETS)}"
        )
    return {**ENCODER_PRESETS[preset], **kwargs}


def _flat_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``encoder=EncoderConfig(...)`` / ``decoder=DecoderConfig(...)`` spelled out as the flat
    keyword arguments that checkpoints and configs record."""
    flat = dict(kwargs)
    if isinstance(flat.get("encoder"), EncoderConfig):
        flat.update(flat.pop("encoder").flat())
    if isinstance(flat.get("decoder"), DecoderConfig):
        flat.update(flat.pop("decoder").flat())
    return flat


def _check_keys(what: str, cls: type, kwargs: dict[str, Any]) -> None:
    allowed = set(inspect.signature(cls).parameters) | {"encoder"}
    for key in kwargs:
        if key not in allowed:
            raise GmaeError(f"unknown argument {key!r} for {what}")


def create_model(
    name: str, pretrained: str | os.PathLike | None = None, **kwargs: Any
) -> nn.Module:
    """MAE, GMAE or Latent MIM by name ("mae" | "gmae" | "latent_mim").

    kwargs: img_size, patch_size, in_chans, encoder (preset name, default "base", or an
    ``EncoderConfig``) and/or explicit embed_dim / depth / num_heads / mlp_ratio, decoder_dim,
    decoder_depth, decoder_num_heads (or ``decoder=DecoderConfig(...)``), mask_ratio,
    pixel_mean, pixel_std, and the model's own knobs (MAE: norm_pix_loss; GMAE: num_gaussians,
    scale_cap, rotation, camera, background, loss_on, norm_pix_loss, render_backend;
    Latent MIM: patch_gap, proj_hidden_dim, proj_depth, temperature, momentum, visual_cues,
    sim_coeff, sim_target_start, sim_target_end).

    ``pretrained``: anything ``gmae.from_pretrained`` reads (a ``save_pretrained`` directory, a
    checkpoint file, a Hub id); the architecture then comes from the checkpoint, which must hold
    a ``name`` model, and ``kwargs`` may only override arguments that keep the weights' shapes
    (``img_size``, ``mask_ratio``, ``render_backend`` ...).
    """
    if name not in MODELS:
        raise GmaeError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    cls = MODELS[name]
    kwargs = _flat_kwargs(kwargs)
    _check_keys(f"model {name!r}", cls, kwargs)
    if pretrained is not None:
        from gmae.hub import from_pretrained

        model = from_pretrained(pretrained, **kwargs)
        if not isinstance(model, cls):
            raise GmaeError(
                f"{pretrained} holds a {type(model).__name__}, not a {cls.__name__} ({name!r})"
            )
        return model
    # Recorded so that save_pretrained can write the config without being given one.
    img_size = kwargs.get("img_size", inspect.signature(cls).parameters["img_size"].default)
    recorded = {"model": {"name": name, **{k: v for k, v in kwargs.items() if k != "img_size"}},
                "data": {"img_size": img_size}}  # fmt: skip
    preset = kwargs.pop("encoder", "base")
    model = cls(**_encoder_args(preset, kwargs))
    model.gmae_config = recorded
    return model


def create_encoder(preset: str = "base", **kwargs: Any) -> ViTEncoder:
    """A bare ViT encoder (for fine-tuning): preset plus ViTEncoder keyword overrides."""
    _check_keys("the encoder", ViTEncoder, kwargs)
    return ViTEncoder(**_encoder_args(preset, kwargs))
