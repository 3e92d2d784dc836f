"""The encoder and decoder settings MAE, GMAE and Latent MIM share, as frozen dataclasses.

``GMAE(encoder=EncoderConfig(embed_dim=192, depth=12, num_heads=3), decoder=DecoderConfig(...))``
is the same model as ``GMAE(embed_dim=192, depth=12, num_heads=3, decoder_dim=...)``: the flat
keyword arguments stay (checkpoints and YAML configs store them), the config objects are what the
models pass around inside. Plain data: importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gmae.errors import GmaeError


@dataclass(frozen=True)
class EncoderConfig:
    """The ViT encoder (``ViTEncoder``): geometry, width, depth, heads, MLP ratio."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0  # the decoder's Blocks use it too

    def flat(self) -> dict[str, int | float]:
        """The flat keyword arguments of this config (what checkpoints and YAML store)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder's width, depth and heads (flat arguments ``decoder_dim``, ``decoder_depth``,
    ``decoder_num_heads``); defaults are MAE's and GMAE's (Latent MIM's depth is 3)."""

    dim: int = 512
    depth: int = 8
    num_heads: int = 16

    def flat(self) -> dict[str, int]:
        """The flat keyword arguments of this config (what checkpoints and YAML store)."""
        return {
            "decoder_dim": self.dim,
            "decoder_depth": self.depth,
            "decoder_num_heads": self.num_heads,
        }


ConfigT = TypeVar("ConfigT", EncoderConfig, DecoderConfig)


def config_or_flat(
    given: ConfigT | None, flat: ConfigT, default: ConfigT, argument: str
) -> ConfigT:
    """``given`` (the ``encoder=`` / ``decoder=`` argument) or, if None, ``flat`` (the config the
    flat keyword arguments spell). Both at once only while the flat ones keep their defaults:
    otherwise one of them would be silently ignored."""
    if given is None:
        return flat
    if not isinstance(given, type(default)):
        raise GmaeError(
            f"{argument} must be a {type(default).__name__}, got {type(given).__name__}"
        )
    defaults = default.flat()
    changed = [key for key, value in flat.flat().items() if value != defaults[key]]
    if changed:
        raise GmaeError(
            f"give the {argument} either as {argument}={type(default).__name__}(...) or as flat "
            f"arguments, not both (flat {argument} arguments given: {', '.join(changed)})"
        )
    return given


def model_configs(
    encoder: EncoderConfig | None,
    decoder: DecoderConfig | None,
    flat: Mapping[str, Any],
    decoder_default: DecoderConfig = DecoderConfig(),
) -> tuple[EncoderConfig, DecoderConfig]:
    """A model's encoder and decoder configs from its ``encoder=`` / ``decoder=`` arguments or,
    where those are None, from its flat keyword arguments: ``flat`` is the constructor's
    arguments (``locals()`` at its top), read by field name, so a new ``EncoderConfig`` field
    needs only its flat parameter in each model's signature."""
    encoder_flat = EncoderConfig(
        **{f.name: flat[f.name] for f in dataclasses.fields(EncoderConfig)}
    )
    decoder_flat = DecoderConfig(
        **{f.name: flat[f"decoder_{f.name}"] for f in dataclasses.fields(DecoderConfig)}
    )
    return (
        config_or_flat(encoder, encoder_flat, default=EncoderConfig(), argument="encoder"),
        config_or_flat(decoder, decoder_flat, default=decoder_default, argument="decoder"),
    )
