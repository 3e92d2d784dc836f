"""The one model loader: anything a ``--ckpt`` argument can name -> a model in eval mode.

    load_any(ckpt, config=None, img_size=None, seed=0) -> LoadedModel   every format, "random"
    load_model(path, img_size=None) -> (model, config)  compact .safetensors or training .pt
    load_pretrained(path) -> (model, config)             a training .pt
    load_mae_or_gmae(path, kind=None, device="cpu")      load_any + a model-class check
    model_kwargs(cfg) -> create_model arguments of a training config

Formats are recognised and read by :mod:`gmae.loading.formats`; what they say is validated by
:mod:`gmae.loading.checks` (and :func:`check_metadata`) before a model is allocated.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from gmae.devices import resolve_device
from gmae.errors import ArgumentError, GmaeError
from gmae.loading import formats
from gmae.loading.checks import (
    channel_values,
    check_release_shapes,
    check_release_sizes,
    check_shapes,
    check_tensors,
    config_at_size,
    config_with_overrides,
    load_state,
    small_positive,
    stored_bool,
    stored_config,
    stored_int,
)
from gmae.models import GMAE, MAE, EncoderConfig, MaskedImageModel, create_model
from gmae.models.vit import sincos_pos_embed_2d
from gmae.train.config import Config, check_model, config_to_dict, load_config

# Widths of the standard ViTs -> their head counts (not recoverable from the weights).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass
class LoadedModel:
    """A model ready for evaluation and where it came from.

    ``model`` has ``.encoder``, ``.normalize``, ``.img_size`` and ``forward_features``; MAE and
    GMAE (not encoder-only release checkpoints) also have ``reconstruct``. ``config`` is the
    training config (``gmae.train.config.Config``) when the file carries one.
    """

    model: nn.Module
    kind: (
        str  # "training" | "compact" | "pretrained-dir" | "mae-release" | "timm" | "hf" | "random"
    )
    source: str
    name: str  # "mae" | "gmae" | "vit" (encoder only)
    config: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def img_size(self) -> int:
        return self.model.img_size

    @property
    def mask_ratio(self) -> float:
        return float(getattr(self.model, "mask_ratio", 0.75))

    def describe(self) -> dict[str, Any]:
        """What the JSON outputs record about the model."""
        enc = self.model.encoder
        return {
            "ckpt": self.source,
            "kind": self.kind,
            "name": self.name,
            "img_size": enc.img_size,
            "patch_size": enc.patch_size,
            "embed_dim": enc.embed_dim,
            "depth": enc.depth,
            "num_heads": enc.num_heads,
            "mask_ratio": self.mask_ratio,
            **self.info,
        }


# --------------------------------------------------------------------------------------------
# Models from training configs
# --------------------------------------------------------------------------------------------


def model_kwargs(cfg: Config) -> dict[str, Any]:
    """``create_model`` arguments of a config: the model section plus the image size (checked:
    types from the model's signature, finite numbers, sane sizes)."""
    check_model(cfg.model, cfg.data.img_size)
    return {**cfg.model, "img_size": cfg.data.img_size}


def build_model(cfg: Config) -> nn.Module:
    """The model of a training config, freshly initialised."""
    model = create_model(**model_kwargs(cfg))
    # The whole config (data, normalisation, recipe) at the size built, not create_model's
    # model-only record: save_pretrained after loading writes back what was loaded.
    model.gmae_config = config_to_dict(cfg)
    return model


def check_metadata(cfg: Config, tensors: dict[str, Any], source: Any) -> None:
    """Check a file's stored model config against the tensors it actually holds, before the
    model is built: the architecture the config describes is instantiated on the ``meta``
    device (no memory) and its state dict must have exactly the file's keys and shapes.

    ``tensors``: key -> tensor or shape (a safetensors header gives shapes without reading).
    Sane bounds on the config itself are checked first (``config.check_model``), so a few-byte
    file cannot ask for a ViT with a thousand blocks or a billion Gaussians.
    """
    try:
        check_model(cfg.model, cfg.data.img_size)
    except GmaeError as exc:
        raise GmaeError(f"checkpoint {source}: its stored config is invalid: {exc}") from exc
    try:
        with torch.device("meta"):
            expected = create_model(**model_kwargs(cfg)).state_dict()
    except GmaeError as exc:
        raise GmaeError(f"checkpoint {source}: its stored config is invalid: {exc}") from exc
    except (TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GmaeError(f"checkpoint {source}: its stored config is invalid: {first}") from exc
    check_shapes(expected, tensors, source)


def _float_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 compact weights -> fp32 (models are built and evaluated in fp32)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


# --------------------------------------------------------------------------------------------
# gmae's own formats
# --------------------------------------------------------------------------------------------


def load_compact(path: Path, img_size: int | None = None) -> LoadedModel:
    """A compact ``.safetensors`` checkpoint (``gmae export checkpoint``)."""
    shapes, meta = formats.read_header(path)
    cfg = stored_config(formats.compact_config(path, meta), path)
    check_metadata(cfg, shapes, path)  # before anything is allocated
    tensors, _ = formats.read_safetensors(path)
    cfg = config_at_size(cfg, img_size)  # what the model is built at, also in .config
    model = build_model(cfg)
    load_state(model, _float_state(tensors), path)
    return LoadedModel(
        model.eval(), "compact", str(path), cfg.model["name"], cfg, {"dtype": meta.get("dtype")}
    )


def load_training(
    path: Path,
    img_size: int | None = None,
    map_location: Any = "cpu",
    ckpt: dict | None = None,
) -> LoadedModel:
    """A ``gmae pretrain`` checkpoint (``ckpt``: its contents, when already read)."""
    if ckpt is None:
        ckpt = formats.read_training_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt["model"], dict):
        raise GmaeError(f"{path} is not a gmae pretraining checkpoint")
    check_tensors(ckpt["model"], path)
    cfg = stored_config(ckpt["config"], path)
    check_metadata(cfg, ckpt["model"], path)  # before anything is allocated
    cfg = config_at_size(cfg, img_size)
    model = build_model(cfg)
    load_state(model, ckpt["model"], path)
    info = {"epoch": ckpt.get("epoch"), "step": ckpt.get("step")}
    return LoadedModel(model.eval(), "training", str(path), cfg.model["name"], cfg, info)


def load_dir(directory: str | os.PathLike, **overrides: Any) -> LoadedModel:
    """A ``save_pretrained`` directory (``config.json`` + ``model.safetensors``).

    ``overrides``: model arguments that do not change the weights' shapes (``img_size``,
    ``mask_ratio``, ``render_backend`` ...); the weights must still fit exactly.
    """
    directory = Path(directory)
    meta = formats.read_dir_config(directory)
    weights = directory / formats.WEIGHTS_NAME
    cfg = stored_config(meta["config"], directory / formats.CONFIG_NAME)
    shapes, _ = formats.read_header(weights)
    check_metadata(cfg, shapes, weights)  # before anything is allocated
    cfg = config_with_overrides(cfg, overrides, directory)
    tensors, _ = formats.read_safetensors(weights)
    model = build_model(cfg)
    load_state(model, _float_state(tensors), weights)
    return LoadedModel(model.eval(), "pretrained-dir", str(directory), cfg.model["name"], cfg)


def with_overrides(loaded: LoadedModel, overrides: dict[str, Any]) -> LoadedModel:
    """``loaded`` rebuilt with model arguments replaced; its weights must still fit."""
    cfg = config_with_overrides(loaded.config, overrides, loaded.source)  # img_size included
    model = build_model(cfg)
    load_state(model, loaded.model.state_dict(), loaded.source)  # one line if shapes change
    return LoadedModel(model.eval(), loaded.kind, loaded.source, loaded.name, cfg, loaded.info)


# --------------------------------------------------------------------------------------------
# MAE release checkpoints
# --------------------------------------------------------------------------------------------


def load_mae_release(
    state: dict[str, torch.Tensor],
    source: str = "<state dict>",
    img_size: int | None = None,
    num_heads: int | None = None,
    decoder_num_heads: int = 16,
    norm_pix_loss: bool = False,
    pixel_mean: list[float] | None = None,
    pixel_std: list[float] | None = None,
    layer_norm_eps: float | None = None,
) -> LoadedModel:
    """An MAE-release (timm-style) state dict -> our encoder (+ MAE decoder if present).

    The architecture is read off the weights (width, depth, patch, MLP ratio, grid); the head
    count is the standard one for the width (``num_heads`` overrides). A ``pos_embed`` equal to
    the fixed sin-cos table is recomputed (any image size works); a learned one is kept, and
    resampled if ``img_size`` changes the grid. Visualisation checkpoints with a decoder become a
    full ``MAE`` (pixel targets, no norm-pix: that is how MAE trained them).
    ``pixel_mean`` / ``pixel_std``: the input normalisation (default ImageNet's, MAE's own);
    ``layer_norm_eps``: every LayerNorm's epsilon (default ours and MAE's, 1e-6).
    """
    check_tensors(state, source)
    if "norm.weight" not in state and "fc_norm.weight" in state:
        raise GmaeError(
            f"{source} is a fine-tuned (global-pool) MAE checkpoint; use a pretrained encoder "
            "checkpoint (e.g. mae_pretrain_vit_base.pth)"
        )
    missing = [
        k
        for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
        if k not in state
    ]
    if missing:
        raise GmaeError(
            f"{source} is not an MAE/timm ViT checkpoint (missing {', '.join(missing)})"
        )
    check_release_shapes(state, source)
    embed_dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    in_chans = state["patch_embed.proj.weight"].shape[1]
    depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth and "blocks.0.mlp.fc1.weight" not in state:
        raise GmaeError(f"{source}: blocks are not timm ViT blocks (no blocks.0.mlp.fc1.weight)")
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if depth else 4.0
    n_pos = state["pos_embed"].shape[1] - 1
    grid = int(round(n_pos**0.5))
    if grid * grid != n_pos:
        raise GmaeError(f"{source}: pos_embed has {n_pos} patch rows, not a square grid")
    heads = num_heads or HEADS_BY_WIDTH.get(embed_dim) or max(1, embed_dim // 64)
    size = img_size or grid * patch
    common = dict(
        img_size=size, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
        num_heads=heads, mlp_ratio=mlp_ratio,
    )  # fmt: skip
    has_decoder = "decoder_embed.weight" in state
    if has_decoder:
        dec_dim = state["decoder_embed.weight"].shape[0]
        dec_depth = len(
            {m.group(1) for k in state if (m := re.match(r"decoder_blocks\.(\d+)\.", k))}
        )
        decoder = dict(
            decoder_dim=dec_dim, decoder_depth=dec_depth, decoder_num_heads=decoder_num_heads
        )

        def build() -> nn.Module:
            return MAE(
                **common, **decoder, norm_pix_loss=norm_pix_loss, pixel_mean=pixel_mean,
                pixel_std=pixel_std,
            )  # fmt: skip
    else:
        decoder = {}

        def build() -> nn.Module:
            return MaskedImageModel(
                encoder=EncoderConfig(**common), pixel_mean=pixel_mean, pixel_std=pixel_std
            )

    # The architecture read off the file must be sane and match the file's tensors exactly
    # before the real model is allocated.
    check_release_sizes({**common, **decoder}, source)
    mapped = formats.map_release_keys(state, has_decoder)
    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except (GmaeError, TypeError, ValueError, RuntimeError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GmaeError(
            f"{source}: the ViT read off its weights cannot be built ({first})"
        ) from exc
    check_shapes(expected, mapped, source)
    model = build()
    if layer_norm_eps is not None:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = layer_norm_eps
    # Fixed sin-cos tables are recomputed; a learned table is loaded into the buffer.
    pos = state["pos_embed"].float()
    learned = not torch.allclose(pos, sincos_pos_embed_2d(embed_dim, grid), atol=1e-4)
    load_state(model, mapped, source)
    if learned:
        if model.encoder.grid_size != grid:
            pos = resample_abs_pos_embed(pos, new_size=[model.encoder.grid_size] * 2)
        model.encoder.pos_embed.copy_(pos)
    info = {"learned_pos_embed": learned, "has_decoder": has_decoder}
    return LoadedModel(
        model.eval(), "mae-release", source, "mae" if has_decoder else "vit", None, info
    )


def random_like(loaded: LoadedModel, seed: int = 0) -> LoadedModel:
    """A freshly initialised model of ``loaded``'s architecture (the random-encoder baseline)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if loaded.config is not None:
            model = build_model(config_at_size(loaded.config, loaded.img_size))
        else:  # release checkpoint: rebuild the encoder from its dimensions
            model = MaskedImageModel(encoder=loaded.model.encoder.config)
    info = {"random_like": loaded.source, "seed": seed}
    return LoadedModel(model.eval(), "random", formats.RANDOM, loaded.name, loaded.config, info)


# --------------------------------------------------------------------------------------------
# Plain timm and Hugging Face ViT weights (encoders), files or directories
# --------------------------------------------------------------------------------------------


def load_vit_safetensors(
    path: Path, meta: dict[str, str], img_size: int | None = None
) -> LoadedModel:
    """timm ``VisionTransformer`` or HF ``ViTModel`` / ``ViTMAE*`` weights -> encoder (+ MAE
    decoder for ``ViTMAEForPreTraining``). Head counts come from the export's metadata or the
    ``config.json`` beside the file, else the standard one for the width."""
    shapes, _ = formats.read_header(path)
    side = formats.sibling_json(path, formats.CONFIG_NAME)
    kwargs: dict[str, Any] = {}
    # Where the input normalisation comes from, first found wins: (file, mean, std).
    norms: list[tuple[str, Any, Any]] = []
    if formats.is_hf_vit(shapes):
        kind = "hf"
        tensors, _ = formats.read_safetensors(path)
        state = formats.hf_to_timm(tensors, str(path))
        config_json = path.parent / formats.CONFIG_NAME
        if "num_attention_heads" in side:
            kwargs["num_heads"] = stored_int(side["num_attention_heads"], "num_heads", config_json)
        if "decoder_num_attention_heads" in side:
            kwargs["decoder_num_heads"] = stored_int(
                side["decoder_num_attention_heads"], "decoder_num_heads", config_json
            )
        if "norm_pix_loss" in side:
            kwargs["norm_pix_loss"] = stored_bool(
                side["norm_pix_loss"], "norm_pix_loss", config_json
            )
        if "layer_norm_eps" in side:  # HF's ViTConfig default is 1e-12, ours 1e-6
            kwargs["layer_norm_eps"] = small_positive(
                side["layer_norm_eps"], "layer_norm_eps", path
            )
        processor = formats.sibling_json(path, "preprocessor_config.json")
        norms.append(
            ("preprocessor_config.json", processor.get("image_mean"), processor.get("image_std"))
        )
        norms.append(("config.json", side.get("image_mean"), side.get("image_std")))
    elif formats.is_mae_release(shapes):
        kind = "timm"
        state, _ = formats.read_safetensors(path)
        if meta.get("format") == formats.TIMM_FORMAT:
            timm_kwargs = formats.json_or_empty(meta.get("timm_kwargs"))
            if "num_heads" not in timm_kwargs:
                raise GmaeError(f"{path}: its timm_kwargs metadata has no num_heads")
            kwargs["num_heads"] = stored_int(timm_kwargs["num_heads"], "num_heads", path)
            overlay = formats.json_or_empty(meta.get("pretrained_cfg_overlay"))
            norms.append(("its metadata", overlay.get("mean"), overlay.get("std")))
        elif isinstance(side.get("model_args"), dict) and "num_heads" in side["model_args"]:
            kwargs["num_heads"] = stored_int(
                side["model_args"]["num_heads"], "num_heads", path.parent / formats.CONFIG_NAME
            )
        pretrained = side.get("pretrained_cfg")
        if isinstance(pretrained, dict):
            norms.append(("config.json", pretrained.get("mean"), pretrained.get("std")))
    else:
        raise GmaeError(
            f"{path} is not a gmae compact checkpoint (no 'format: {formats.COMPACT_FORMAT}' "
            "metadata), nor timm or Hugging Face ViT weights"
        )
    found = next(((src, m, sd) for src, m, sd in norms if m is not None and sd is not None), None)
    if found is None:
        warnings.warn(
            f"{path} stores no input normalisation (mean / std): assuming ImageNet's",
            stacklevel=2,
        )
        normalization = "ImageNet (assumed: none stored)"
    else:
        normalization = found[0]
        kwargs["pixel_mean"] = channel_values(found[1], "mean", path)
        kwargs["pixel_std"] = channel_values(found[2], "std", path)
        if min(kwargs["pixel_std"]) <= 0:
            raise GmaeError(f"{path}: the stored std {kwargs['pixel_std']} is not positive")
    loaded = load_mae_release(state, str(path), img_size=img_size, **kwargs)
    loaded.kind = kind
    loaded.info["normalization"] = normalization
    return loaded


def load_any_dir(path: Path, img_size: int | None = None) -> LoadedModel:
    """A ``save_pretrained`` directory, or a timm / HF directory with ``model.safetensors``."""
    if formats.is_pretrained_dir(path):
        return load_dir(path, **({} if img_size is None else {"img_size": img_size}))
    weights = path / formats.WEIGHTS_NAME
    if not weights.is_file():
        raise GmaeError(
            f"{path} is a directory without {formats.WEIGHTS_NAME}: not a model directory"
        )
    return load_vit_safetensors(weights, formats.read_metadata(weights), img_size)


# --------------------------------------------------------------------------------------------
# Anything a --ckpt argument can name
# --------------------------------------------------------------------------------------------


def load_any(
    ckpt: str,
    config: str | None = None,
    img_size: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    """``--ckpt`` -> :class:`LoadedModel`.

    ``ckpt`` is a training checkpoint (``.pt``), a compact checkpoint (``.safetensors``), an MAE
    release checkpoint, plain timm or Hugging Face ViT ``.safetensors`` weights, a directory
    (``save_pretrained``, ``gmae export timm`` / ``hf`` or their timm / HF equivalents), or
    ``"random"``: a freshly initialised model (``seed``) built from
    ``config`` (a preset name or YAML file), the baseline for every protocol.
    """
    if ckpt == formats.RANDOM:
        if config is None:
            raise ArgumentError(
                "config",
                "{ckpt} random needs {config} PRESET (the architecture to initialise)",
                mentions=("ckpt",),
            )
        cfg = config_at_size(load_config(config), img_size)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_model(cfg)
        info = {"config": str(config), "seed": seed}
        return LoadedModel(model.eval(), "random", formats.RANDOM, cfg.model["name"], cfg, info)
    if config is not None:
        raise ArgumentError(
            "config",
            "is only used with {ckpt} random (checkpoints carry their own)",
            mentions=("ckpt",),
        )
    path = Path(ckpt).expanduser()
    if path.is_dir():
        return load_any_dir(path, img_size)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        meta = formats.read_metadata(path)
        if formats.is_compact(meta):
            return load_compact(path, img_size)
        return load_vit_safetensors(path, meta, img_size)
    obj = formats.read_weights_only(path)
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "model" in obj:
        return load_training(path, img_size, ckpt=obj)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if formats.is_mae_release(state):
        return load_mae_release(state, str(path), img_size=img_size)
    raise GmaeError(
        f"{path} is not a gmae training checkpoint, a compact .safetensors checkpoint or an MAE "
        "release checkpoint"
    )


def load_model(
    path: str | os.PathLike, img_size: int | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, Config]:
    """``(model, config)`` from a compact ``.safetensors`` or a training ``.pt`` checkpoint.

    The model is rebuilt from the stored config (at ``img_size`` if given: the sin-cos position
    embeddings are recomputed for the new grid) and returned in eval mode, in float32.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        loaded = load_compact(path, img_size)
    else:
        loaded = load_training(path, img_size, map_location)
    return loaded.model, loaded.config


def load_pretrained(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[nn.Module, Config]:
    """``(model, config)`` from a pretraining checkpoint; the model is in eval mode.

    The model is rebuilt from the config stored in the checkpoint, so no other file is needed.
    """
    loaded = load_training(Path(path), map_location=map_location)
    return loaded.model, loaded.config


def load_mae_or_gmae(path: str | os.PathLike, kind: str | None = None, device: Any = "cpu"):
    """A pretrained MAE or GMAE (eval mode, on ``device``) from anything ``--ckpt`` names
    (:func:`load_any`: a training ``.pt``, a compact ``.safetensors``, a ``save_pretrained``
    directory, an HF ``ViTMAEForPreTraining`` export ...). ``kind`` ("gmae" / "mae") checks
    what the file holds."""
    model = load_any(str(path)).model
    wanted = {"gmae": GMAE, "mae": MAE}.get(kind or "", (GMAE, MAE))
    if not isinstance(model, wanted):
        need = kind.upper() if kind else "an MAE or GMAE"
        raise GmaeError(f"{path} holds a {type(model).__name__}; this needs a {need} checkpoint")
    return model.to(resolve_device(device) if isinstance(device, str) else device).eval()
