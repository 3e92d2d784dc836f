"""The model files gmae reads: their names, how each is recognised, and their raw readers.

Nothing here executes code from a file: ``.pt`` / ``.pth`` go through
``torch.load(weights_only=True)``, everything else is safetensors or JSON. What a file *says*
(configs, shapes, head counts) is untrusted: :mod:`gmae.loading.checks` validates it.

- **training checkpoint** ``.pt`` (``gmae pretrain``): a dict with ``config`` and ``model``
  (and optimiser, RNG ... state, see ``gmae.train.checkpoint``).
- **compact checkpoint** ``.safetensors`` (``gmae export checkpoint``): the state dict with
  ``format: gmae.checkpoint``, ``format_version``, ``config`` (JSON) ... in its metadata.
- **save_pretrained directory**: ``config.json`` (``format: gmae.pretrained``, ``config``) and
  ``model.safetensors`` (a compact checkpoint).
- **MAE release** ``.pth`` (facebookresearch/mae): ``{"model": state_dict}`` with timm key names.
- **timm / Hugging Face ViT weights**: ``.safetensors`` files or directories with a
  ``model.safetensors`` (``gmae export timm`` / ``hf``, or anyone's).

torch is imported where it is used: ``gmae.hub`` (imported by ``import gmae``) reads the names
below, and ``import gmae`` does not load torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gmae.errors import GmaeError

if TYPE_CHECKING:
    from torch import Tensor

RANDOM = "random"  # --ckpt random: a fresh initialisation of a config's architecture
COMPACT_FORMAT = "gmae.checkpoint"
COMPACT_FORMAT_VERSION = "1"
PRETRAINED_FORMAT = "gmae.pretrained"
PRETRAINED_FORMAT_VERSION = "1"
TIMM_FORMAT = "gmae.timm-vit"  # gmae export timm FILE.safetensors
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# --- safetensors ------------------------------------------------------------------------------


@contextmanager
def _open_safetensors(path: str | os.PathLike) -> Iterator[tuple[Any, dict[str, str]]]:
    """``(handle, metadata)`` of a safetensors file; anything unreadable, while opening or
    while the caller reads, is a one-line error naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise GmaeError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, with one-line errors."""
    with _open_safetensors(path) as (f, metadata):
        return {k: f.get_tensor(k) for k in f.keys()}, metadata


def read_header(path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """``(shapes, metadata)`` of a safetensors file: the header only, no tensor is read."""
    with _open_safetensors(path) as (f, metadata):
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (no tensors read)."""
    with _open_safetensors(path) as (_, metadata):
        return metadata


def is_compact(metadata: dict[str, str]) -> bool:
    return metadata.get("format") == COMPACT_FORMAT


def compact_config(path: Path, metadata: dict[str, str]) -> Any:
    """The raw training config a compact checkpoint's metadata carries (format checked)."""
    if not is_compact(metadata):
        if "timm_model" in metadata:
            raise GmaeError(
                f"{path} is a timm export (gmae export timm), not a gmae checkpoint: load it with "
                "gmae.export.create_timm_model or gmae.loading.load_any"
            )
        raise GmaeError(
            f"{path} is not a gmae compact checkpoint (no 'format: {COMPACT_FORMAT}' metadata)"
        )
    if metadata.get("format_version") != COMPACT_FORMAT_VERSION:
        raise GmaeError(
            f"{path} has compact-checkpoint format version {metadata.get('format_version')!r}; "
            f"this gmae reads version {COMPACT_FORMAT_VERSION}"
        )
    try:
        return json.loads(metadata["config"])
    except (KeyError, ValueError, RecursionError) as exc:  # RecursionError: [[[[...]]]]
        raise GmaeError(f"{path} has no readable config in its metadata") from exc


# --- PyTorch files ----------------------------------------------------------------------------


def read_training_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A ``gmae pretrain`` checkpoint (weights-only load); one line if it is not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise GmaeError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if not is_training(ckpt):
        raise GmaeError(f"{path} is not a gmae pretraining checkpoint")
    return ckpt


def read_weights_only(path: Path) -> Any:
    """Whatever a ``.pt`` / ``.pth`` holds, loaded weights-only (no code runs)."""
    import torch

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


def is_training(obj: Any) -> bool:
    """Whether a loaded ``.pt`` is a training checkpoint (a config and a model state dict)."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("model"), dict)
        and isinstance(obj.get("config"), dict)
    )


# --- MAE release and timm ViT weights ---------------------------------------------------------


def is_mae_release(state: Any) -> bool:
    """timm ``VisionTransformer`` names, as in MAE's release checkpoints (tensors or shapes)."""
    return isinstance(state, dict) and "patch_embed.proj.weight" in state and "cls_token" in state


def map_release_keys(state: dict[str, Any], has_decoder: bool) -> dict[str, Any]:
    """MAE-release (timm) names -> ours: the encoder under ``encoder.``, MAE's decoder as is
    (its fixed ``decoder_pos_embed`` is recomputed, so it is dropped)."""
    enc_keys = ("cls_token", "patch_embed.", "blocks.", "norm.")
    mapped: dict[str, Any] = {}
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


# --- Hugging Face ViT weights -----------------------------------------------------------------

# timm block names -> HF ViT layer names (``qkv`` is split into query / key / value).
HF_BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
HF_QKV = ("query", "key", "value")
_HF_PATCH = "embeddings.patch_embeddings.projection.weight"


def block_indices(state: dict[str, Any], stem: str) -> list[int]:
    """The ``N`` of every ``{stem}.N.`` key, sorted."""
    return sorted({int(m.group(1)) for k in state if (m := re.match(rf"{stem}\.(\d+)\.", k))})


def is_hf_vit(state: dict[str, Any]) -> bool:
    """Whether a state dict (or header) has HF ViT / ViTMAE encoder names."""
    return any(k.endswith(_HF_PATCH) for k in state)


def hf_name_pairs(
    blocks: list[int], decoder_blocks: list[int] | None, prefix: str = ""
) -> list[tuple[str, str | tuple[str, str, str]]]:
    """Every (timm name, HF name) pair of a ViT (and MAE decoder when ``decoder_blocks`` is not
    None), the one table both directions read. A fused ``qkv`` pairs with HF's three
    query / key / value names. ``prefix`` (``"vit."`` in ``ViTMAEForPreTraining``) goes on the
    encoder's HF names."""
    e = f"{prefix}embeddings"
    pairs: list[tuple[str, str | tuple[str, str, str]]] = [
        ("cls_token", f"{e}.cls_token"),
        ("pos_embed", f"{e}.position_embeddings"),
    ]
    stacks = [(f"blocks.{i}", f"{prefix}encoder.layer.{i}") for i in blocks]
    if decoder_blocks is not None:
        pairs += [("mask_token", "decoder.mask_token"),
                  ("decoder_pos_embed", "decoder.decoder_pos_embed")]  # fmt: skip
        stacks += [(f"decoder_blocks.{i}", f"decoder.decoder_layers.{i}") for i in decoder_blocks]
    for p in ("weight", "bias"):
        pairs += [(f"patch_embed.proj.{p}", f"{e}.patch_embeddings.projection.{p}"),
                  (f"norm.{p}", f"{prefix}layernorm.{p}")]  # fmt: skip
        if decoder_blocks is not None:
            pairs += [(f"{n}.{p}", f"decoder.{n}.{p}")
                      for n in ("decoder_embed", "decoder_norm", "decoder_pred")]  # fmt: skip
        for ours, theirs in stacks:
            pairs += [(f"{ours}.{a}.{p}", f"{theirs}.{b}.{p}") for a, b in HF_BLOCK_NAMES.items()]
            qkv = tuple(f"{theirs}.attention.attention.{n}.{p}" for n in HF_QKV)
            pairs.append((f"{ours}.attn.qkv.{p}", qkv))  # type: ignore[arg-type]
    return pairs


def hf_to_timm(state: dict[str, Tensor], source: str = "<state dict>") -> dict[str, Tensor]:
    """HF ``ViTModel`` / ``ViTMAEModel`` / ``ViTMAEForPreTraining`` (or ``ViTFor...``) weights
    -> timm names (the reverse of ``gmae.export.hf.timm_to_hf``); heads and poolers are
    dropped."""
    import torch

    keys = [k for k in state if k.endswith(_HF_PATCH)]
    if len(keys) != 1:
        raise GmaeError(f"{source} is not a Hugging Face ViT checkpoint (no patch embeddings)")
    prefix = keys[0][: -len(_HF_PATCH)]
    # The encoder without its prefix; MAE's decoder keeps its "decoder." names.
    hf = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    hf.update((k, v) for k, v in state.items() if k.startswith("decoder."))
    decoder = (
        block_indices(hf, "decoder.decoder_layers")
        if "decoder.decoder_embed.weight" in hf
        else None
    )
    out: dict[str, Tensor] = {}
    try:
        for ours, theirs in hf_name_pairs(block_indices(hf, "encoder.layer"), decoder):
            if isinstance(theirs, tuple):
                out[ours] = torch.cat([hf[t] for t in theirs], 0)
            else:
                out[ours] = hf[theirs]
    except KeyError as exc:
        raise GmaeError(f"{source}: Hugging Face ViT weights without {exc.args[0]}") from exc
    return out


# --- directories and the JSON beside weights --------------------------------------------------


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory written by ``save_pretrained``."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == PRETRAINED_FORMAT
    except (OSError, ValueError, RecursionError, AttributeError):
        return False


def read_dir_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a ``save_pretrained`` directory (format and version checked)."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise GmaeError(f"{directory} has no {CONFIG_NAME}: not a gmae save_pretrained directory")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise GmaeError(f"cannot read {path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        raise GmaeError(
            f"{path} is not a gmae config (no 'format: {PRETRAINED_FORMAT}'); for timm or "
            "Hugging Face directories use gmae.loading.load_any"
        )
    if meta.get("format_version") != PRETRAINED_FORMAT_VERSION:
        raise GmaeError(
            f"{path} has format version {meta.get('format_version')!r}; this gmae reads "
            f"version {PRETRAINED_FORMAT_VERSION}"
        )
    if not isinstance(meta.get("config"), dict):
        raise GmaeError(f"{path} has no 'config' mapping")
    return meta


def sibling_json(path: Path, name: str) -> dict[str, Any]:
    """The JSON file ``name`` beside a weights file as a mapping, or {} (absent or not a
    mapping); timm and HF directories keep ``config.json`` there."""
    other = path.parent / name
    try:
        raw = json.loads(other.read_text()) if other.is_file() else {}
    except (OSError, ValueError, RecursionError) as exc:
        raise GmaeError(f"cannot read {other}: not valid JSON ({exc})") from exc
    return raw if isinstance(raw, dict) else {}


def json_or_empty(text: str | None) -> dict[str, Any]:
    """A JSON mapping from a metadata string, or {} (absent, invalid or not a mapping)."""
    try:
        raw = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    return raw if isinstance(raw, dict) else {}
