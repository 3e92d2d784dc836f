"""Model files gmae can read, and the compact ``.safetensors`` format for committed models.

Formats (all loaded without unpickling code: ``torch.load(weights_only=True)`` or safetensors):

- **training checkpoint** ``.pt`` (``gmae.train.checkpoint``): config, model, optimiser, RNG ...
- **compact checkpoint** ``.safetensors`` (written by :func:`save_compact`): the model's state
  dict (fp32, or fp16 with ``fp16=True``) and, in the safetensors metadata, ``format``
  (``gmae.checkpoint``), ``format_version``, ``config`` (the resolved training config as JSON),
  ``gmae_version`` and ``source``.
- **MAE release checkpoint** ``.pth`` (facebookresearch/mae): ``{"model": state_dict}`` with
  timm key names (``cls_token``, ``pos_embed``, ``patch_embed.proj.weight``,
  ``blocks.0.attn.qkv.weight``, ``norm.weight``); encoder-only for the released ViT-B/L/H, with
  the decoder (``decoder_embed.weight`` ...) for the visualisation checkpoints.

:func:`load_any` turns any of them (or ``"random"`` with a config preset) into a
:class:`LoadedModel`, which is what the evaluation commands use.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gmae.errors import GmaeError
from gmae.train.checkpoint import check_shapes, load_state

FORMAT = "gmae.checkpoint"
FORMAT_VERSION = "1"
RANDOM = "random"

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
# Compact format
# --------------------------------------------------------------------------------------------


def save_compact(
    model: nn.Module,
    config: Any,
    path: str | os.PathLike,
    fp16: bool = False,
    source: str = "",
) -> Path:
    """Write ``model``'s weights and its ``Config`` to ``path`` (``.safetensors``), atomically."""
    from safetensors.torch import save

    from gmae import __version__
    from gmae import io as gio
    from gmae.train.config import config_to_dict

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


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, with one-line errors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GmaeError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    return tensors, metadata


def read_header(path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """``(shapes, metadata)`` of a safetensors file: the header only, no tensor is read."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GmaeError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    return shapes, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (no tensors read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise GmaeError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc


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


def load_model(
    path: str | os.PathLike, img_size: int | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, Any]:
    """``(model, config)`` from a compact ``.safetensors`` or a training ``.pt`` checkpoint.

    The model is rebuilt from the stored config (at ``img_size`` if given: the sin-cos position
    embeddings are recomputed for the new grid) and returned in eval mode, in float32.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        loaded = _load_compact(path, img_size)
    else:
        loaded = _load_training(path, img_size, map_location)
    return loaded.model, loaded.config


def _at_size(cfg: Any, img_size: int | None) -> Any:
    """``cfg`` with ``data.img_size`` = ``img_size`` (checked against the model), or ``cfg``."""
    from gmae.train.config import check_model, config_from_dict, config_to_dict

    if img_size is None or img_size == cfg.data.img_size:
        return cfg
    check_model(cfg.model, img_size)
    raw = config_to_dict(cfg)
    raw["data"]["img_size"] = img_size
    return config_from_dict(raw)


def _build_from_config(cfg: Any, img_size: int | None) -> nn.Module:
    from gmae.models import create_model
    from gmae.train.checkpoint import model_kwargs
    from gmae.train.config import config_to_dict

    cfg = _at_size(cfg, img_size)
    model = create_model(**model_kwargs(cfg))
    # The whole config (data, normalisation, recipe) at the size built, not create_model's
    # model-only record: save_pretrained after loading writes back what was loaded.
    model.gmae_config = config_to_dict(cfg)
    return model


def _load_compact(path: Path, img_size: int | None) -> LoadedModel:
    from gmae.train.checkpoint import check_metadata, stored_config

    shapes, meta = read_header(path)
    if meta.get("format") != FORMAT:
        if "timm_model" in meta:
            raise GmaeError(
                f"{path} is a timm export (gmae export timm), not a gmae checkpoint: load it with "
                "gmae.export.create_timm_model or gmae.export.load_any"
            )
        raise GmaeError(f"{path} is not a gmae compact checkpoint (no 'format: {FORMAT}' metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise GmaeError(
            f"{path} has compact-checkpoint format version {meta.get('format_version')!r}; this "
            f"gmae reads version {FORMAT_VERSION}"
        )
    try:
        raw = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise GmaeError(f"{path} has no readable config in its metadata") from exc
    cfg = stored_config(raw, path)
    check_metadata(cfg, shapes, path)  # before anything is allocated
    tensors, _ = read_safetensors(path)
    cfg = _at_size(cfg, img_size)  # what the model is built at, also in LoadedModel.config
    model = _build_from_config(cfg, None)
    load_state(
        model, {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, path
    )
    return LoadedModel(
        model.eval(), "compact", str(path), cfg.model["name"], cfg, {"dtype": meta.get("dtype")}
    )


def _load_training(
    path: Path, img_size: int | None, map_location: Any = "cpu", ckpt: dict | None = None
) -> LoadedModel:
    from gmae.train.checkpoint import check_metadata, load_checkpoint, stored_config

    if ckpt is None:
        ckpt = load_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt["model"], dict):
        raise GmaeError(f"{path} is not a gmae pretraining checkpoint")
    cfg = stored_config(ckpt["config"], path)
    check_metadata(cfg, ckpt["model"], path)  # before anything is allocated
    cfg = _at_size(cfg, img_size)
    model = _build_from_config(cfg, None)
    load_state(model, ckpt["model"], path)
    info = {"epoch": ckpt.get("epoch"), "step": ckpt.get("step")}
    return LoadedModel(model.eval(), "training", str(path), cfg.model["name"], cfg, info)


# --------------------------------------------------------------------------------------------
# MAE release checkpoints
# --------------------------------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GmaeError(
            f"cannot read checkpoint {path}: not a weights-only PyTorch file "
            f"({type(exc).__name__}: {first[:200]})"
        ) from exc


def is_mae_release(state: Any) -> bool:
    return isinstance(state, dict) and "patch_embed.proj.weight" in state and "cls_token" in state


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
    from gmae.models import MAE, MaskedImageModel
    from gmae.models.vit import sincos_pos_embed_2d

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
                **common, mask_ratio=0.75, pixel_mean=pixel_mean, pixel_std=pixel_std
            )

    # The architecture read off the file must be sane and match the file's tensors exactly
    # before the real model is allocated.
    _check_release_sizes({**common, **decoder}, source)
    mapped = _map_release_keys(state, has_decoder)
    with torch.device("meta"):
        expected = build().state_dict()
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
            from timm.layers import resample_abs_pos_embed

            pos = resample_abs_pos_embed(pos, new_size=[model.encoder.grid_size] * 2)
        model.encoder.pos_embed.copy_(pos)
    info = {"learned_pos_embed": learned, "has_decoder": has_decoder}
    return LoadedModel(
        model.eval(), "mae-release", source, "mae" if has_decoder else "vit", None, info
    )


def _check_release_sizes(sizes: dict[str, Any], source: str) -> None:
    from gmae.train.config import MODEL_INT_BOUNDS

    for key, value in sizes.items():
        if key in MODEL_INT_BOUNDS and isinstance(value, int):
            lo, hi = MODEL_INT_BOUNDS[key]
            if not lo <= value <= hi:
                raise GmaeError(f"{source}: {key} {value} read off the weights is out of range")
    if not 0 < sizes["mlp_ratio"] <= 64:
        raise GmaeError(f"{source}: MLP ratio {sizes['mlp_ratio']} is out of range")


def _map_release_keys(state: dict[str, torch.Tensor], has_decoder: bool) -> dict[str, Any]:
    enc_keys = ("cls_token", "patch_embed.", "blocks.", "norm.")
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(enc_keys):
            mapped[f"encoder.{key}"] = value
        elif (
            has_decoder
            and key.startswith(("decoder_", "mask_token"))
            and key != "decoder_pos_embed"
        ):
            mapped[key] = value
    return mapped


def random_like(loaded: LoadedModel, seed: int = 0) -> LoadedModel:
    """A freshly initialised model of ``loaded``'s architecture (the random-encoder baseline)."""
    from gmae.models import MaskedImageModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if loaded.config is not None:
            model = _build_from_config(loaded.config, loaded.img_size)
        else:  # release checkpoint: rebuild the encoder from its dimensions
            enc = loaded.model.encoder
            mlp_ratio = enc.blocks[0].mlp.fc1.out_features / enc.embed_dim if enc.depth else 4.0
            model = MaskedImageModel(
                enc.img_size, enc.patch_size, enc.in_chans, enc.embed_dim, enc.depth,
                enc.num_heads, mlp_ratio, 0.75, None, None,
            )  # fmt: skip
    info = {"random_like": loaded.source, "seed": seed}
    return LoadedModel(model.eval(), "random", RANDOM, loaded.name, loaded.config, info)


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
    from gmae.train.config import load_config

    if ckpt == RANDOM:
        if config is None:
            raise GmaeError("--ckpt random needs --config PRESET (the architecture to initialise)")
        cfg = _at_size(load_config(config), img_size)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = _build_from_config(cfg, None)
        info = {"config": str(config), "seed": seed}
        return LoadedModel(model.eval(), "random", RANDOM, cfg.model["name"], cfg, info)
    if config is not None:
        raise GmaeError("--config is only used with --ckpt random (checkpoints carry their own)")
    path = Path(ckpt).expanduser()
    if path.is_dir():
        return _load_dir(path, img_size)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        meta = read_metadata(path)
        if meta.get("format") == FORMAT:
            return _load_compact(path, img_size)
        return _load_vit_safetensors(path, meta, img_size)
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "model" in obj:
        return _load_training(path, img_size, ckpt=obj)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if is_mae_release(state):
        return load_mae_release(state, str(path), img_size=img_size)
    raise GmaeError(
        f"{path} is not a gmae training checkpoint, a compact .safetensors checkpoint or an MAE "
        "release checkpoint"
    )


# --------------------------------------------------------------------------------------------
# Plain timm and Hugging Face ViT weights (encoders), files or directories
# --------------------------------------------------------------------------------------------


def _sibling_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` beside a weights file (timm and HF directories have one), or {}."""
    cfg = path.parent / "config.json"
    try:
        raw = json.loads(cfg.read_text()) if cfg.is_file() else {}
    except (OSError, ValueError) as exc:
        raise GmaeError(f"cannot read {cfg}: not valid JSON ({exc})") from exc
    return raw if isinstance(raw, dict) else {}


def _load_vit_safetensors(path: Path, meta: dict[str, str], img_size: int | None) -> LoadedModel:
    """timm ``VisionTransformer`` or HF ``ViTModel`` / ``ViTMAE*`` weights -> encoder (+ MAE
    decoder for ``ViTMAEForPreTraining``). Head counts come from the export's metadata or the
    ``config.json`` beside the file, else the standard one for the width."""
    from gmae.export.hf import hf_to_timm, is_hf_vit
    from gmae.export.timm import FORMAT as TIMM_FORMAT

    shapes, _ = read_header(path)
    side = _sibling_config(path)
    kwargs: dict[str, Any] = {}
    # Where the input normalisation comes from, first found wins: (file, mean, std).
    norms: list[tuple[str, Any, Any]] = []
    if is_hf_vit(shapes):
        kind = "hf"
        tensors, _ = read_safetensors(path)
        state = hf_to_timm(tensors, str(path))
        if "num_attention_heads" in side:
            kwargs["num_heads"] = int(side["num_attention_heads"])
        if "decoder_num_attention_heads" in side:
            kwargs["decoder_num_heads"] = int(side["decoder_num_attention_heads"])
        if "norm_pix_loss" in side:
            kwargs["norm_pix_loss"] = bool(side["norm_pix_loss"])
        if "layer_norm_eps" in side:  # HF's ViTConfig default is 1e-12, ours 1e-6
            kwargs["layer_norm_eps"] = _positive(side["layer_norm_eps"], "layer_norm_eps", path)
        processor = _sibling_json(path, "preprocessor_config.json")
        norms.append(
            ("preprocessor_config.json", processor.get("image_mean"), processor.get("image_std"))
        )
        norms.append(("config.json", side.get("image_mean"), side.get("image_std")))
    elif is_mae_release(shapes):
        kind = "timm"
        state, _ = read_safetensors(path)
        if meta.get("format") == TIMM_FORMAT:
            kwargs["num_heads"] = int(json.loads(meta["timm_kwargs"])["num_heads"])
            overlay = _json_or_empty(meta.get("pretrained_cfg_overlay"))
            norms.append(("its metadata", overlay.get("mean"), overlay.get("std")))
        elif isinstance(side.get("model_args"), dict) and "num_heads" in side["model_args"]:
            kwargs["num_heads"] = int(side["model_args"]["num_heads"])
        pretrained = side.get("pretrained_cfg")
        if isinstance(pretrained, dict):
            norms.append(("config.json", pretrained.get("mean"), pretrained.get("std")))
    else:
        raise GmaeError(
            f"{path} is not a gmae compact checkpoint (no 'format: {FORMAT}' metadata), nor timm "
            "or Hugging Face ViT weights"
        )
    found = next(((src, m, sd) for src, m, sd in norms if m is not None and sd is not None), None)
    if found is None:
        import warnings

        warnings.warn(
            f"{path} stores no input normalisation (mean / std): assuming ImageNet's",
            stacklevel=2,
        )
        normalization = "ImageNet (assumed: none stored)"
    else:
        normalization = found[0]
        kwargs["pixel_mean"] = _channel_values(found[1], "mean", path)
        kwargs["pixel_std"] = _channel_values(found[2], "std", path)
        if min(kwargs["pixel_std"]) <= 0:
            raise GmaeError(f"{path}: the stored std {kwargs['pixel_std']} is not positive")
    loaded = load_mae_release(state, str(path), img_size=img_size, **kwargs)
    loaded.kind = kind
    loaded.info["normalization"] = normalization
    return loaded


def _sibling_json(path: Path, name: str) -> dict[str, Any]:
    """``name`` beside a weights file as a mapping, or {} (absent or not a mapping)."""
    other = path.parent / name
    try:
        raw = json.loads(other.read_text()) if other.is_file() else {}
    except (OSError, ValueError) as exc:
        raise GmaeError(f"cannot read {other}: not valid JSON ({exc})") from exc
    return raw if isinstance(raw, dict) else {}


def _json_or_empty(text: str | None) -> dict[str, Any]:
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def _channel_values(values: Any, what: str, path: Path) -> list[float]:
    """A stored per-channel mean or std as a list of finite floats (one line if it is not)."""
    import math

    ok = isinstance(values, list | tuple) and values
    ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    if not ok:
        raise GmaeError(f"{path}: the stored {what} {values!r} is not a list of numbers")
    return [float(v) for v in values]


def _positive(value: Any, what: str, path: Path) -> float:
    if not isinstance(value, int | float) or not 0 < value < 1:
        raise GmaeError(f"{path}: {what} {value!r} is not a small positive number")
    return float(value)


def _load_dir(path: Path, img_size: int | None) -> LoadedModel:
    """A ``save_pretrained`` directory, or a timm / HF directory with ``model.safetensors``."""
    from gmae.hub import WEIGHTS_NAME, is_pretrained_dir, load_dir

    if is_pretrained_dir(path):
        return load_dir(path, **({} if img_size is None else {"img_size": img_size}))
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise GmaeError(f"{path} is a directory without {WEIGHTS_NAME}: not a model directory")
    return _load_vit_safetensors(weights, read_metadata(weights), img_size)
