"""Checks on what a model file says before it is believed: its stored config, its keys, shapes,
dtypes and values. Every failure is one ``GmaeError`` line naming the file.

A file is untrusted: a few bytes of metadata can ask for a ViT with a thousand blocks, and a
tensor can hold NaN. So the config is checked against sane bounds (``check_model``), the
architecture it describes is compared with the file's tensors on the ``meta`` device before
anything is allocated (``gmae.loading.loaders.check_metadata``), and weights are refused unless
they fit exactly and are finite.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gmae.errors import GmaeError
from gmae.train.config import (
    MODEL_INT_BOUNDS,
    Config,
    check_model,
    config_from_dict,
    config_to_dict,
)


def stored_config(raw: Any, source: Any) -> Config:
    """The ``Config`` stored in a checkpoint, with errors naming the file."""
    if not isinstance(raw, dict):
        raise GmaeError(f"checkpoint {source}: its stored config is not a mapping")
    try:
        return config_from_dict(raw)
    except GmaeError as exc:
        raise GmaeError(f"checkpoint {source}: its stored config is invalid: {exc}") from exc


def config_at_size(cfg: Config, img_size: int | None) -> Config:
    """``cfg`` with ``data.img_size`` = ``img_size`` (checked against the model), or ``cfg``."""
    if img_size is None or img_size == cfg.data.img_size:
        return cfg
    check_model(cfg.model, img_size)
    raw = config_to_dict(cfg)
    raw["data"]["img_size"] = img_size
    return config_from_dict(raw)


def config_with_overrides(cfg: Config, overrides: dict[str, Any], source: Any) -> Config:
    """``cfg`` with model arguments replaced (``img_size`` goes to the data section); the
    result is checked like a stored config."""
    if not overrides:
        return cfg
    raw = config_to_dict(cfg)
    for key, value in overrides.items():
        if key == "img_size":
            raw["data"]["img_size"] = value
        elif key == "name":
            raise GmaeError(f"{source}: the model name comes from the checkpoint, not an override")
        else:
            raw["model"][key] = value
    new = config_from_dict(raw)
    check_model(new.model, new.data.img_size)
    return new


def check_tensors(state: Any, source: Any) -> None:
    """A state dict read from a ``.pt`` file: string keys and dense tensors (a weights-only
    load can still yield ints, lists, sparse or ``meta`` tensors)."""
    if not isinstance(state, dict):
        raise GmaeError(f"checkpoint {source}: its weights are not a state dict")
    bad = [repr(k) for k in state if not isinstance(k, str)]
    bad += [f"{k} ({_what(v)})" for k, v in state.items() if isinstance(k, str) and _what(v)]
    if bad:
        raise GmaeError(
            f"checkpoint {source}: its weights are not a state dict of dense tensors: {few(bad)}"
        )


def _what(value: Any) -> str:
    """What is wrong with a state-dict value ("" if it is a dense tensor)."""
    if not isinstance(value, torch.Tensor):
        return type(value).__name__
    if value.is_meta:
        return "meta tensor"
    return "" if value.layout == torch.strided else f"{value.layout} tensor"


def check_shapes(expected: dict[str, Any], tensors: dict[str, Any], source: Any) -> None:
    """The file's tensors (or shapes) must be exactly the keys and shapes of ``expected`` (the
    state dict of a model built on the ``meta`` device)."""

    def shape(v: Any) -> tuple[int, ...]:
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    problems = _misfits(expected, tensors, shape)
    if problems:
        raise GmaeError(
            f"checkpoint {source} does not fit the model it describes (its tensors do not match: "
            f"{'; '.join(problems)})"
        )


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: Any) -> None:
    """Strict ``load_state_dict`` with a one-line error naming what does not fit: keys that
    are not tensors, missing or unexpected keys, shapes, dtypes (a floating-point weight must
    come as floating point), and non-finite values."""
    check_tensors(state, source)
    expected = module.state_dict()
    problems = _misfits(expected, state, lambda v: tuple(v.shape))
    dtypes = [
        f"{k} {state[k].dtype}"
        for k, v in expected.items()
        if k in state and v.is_floating_point() and not state[k].is_floating_point()
    ]
    if dtypes:
        problems.append(f"dtype {few(dtypes)} (floating point expected)")
    if problems:
        raise GmaeError(
            f"checkpoint {source} does not fit {type(module).__name__}: {'; '.join(problems)}"
        )
    check_finite(state, source)
    module.load_state_dict(state)


def _misfits(expected: dict[str, Any], given: dict[str, Any], shape) -> list[str]:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {list(shape(given[k]))} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in given and shape(given[k]) != tuple(v.shape)
    ]
    return [
        f"{what} {few(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]


def check_finite(state: dict[str, torch.Tensor], source: Any) -> None:
    """Refuse weights with NaN or inf values (a diverged or corrupted model scores garbage)."""
    bad = [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
        and (v.is_floating_point() or v.is_complex())
        and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise GmaeError(
            f"checkpoint {source} has non-finite (NaN or inf) weights in {len(bad)} tensor(s): "
            f"{few(bad)}"
        )


def check_release_shapes(state: dict[str, Any], source: str) -> None:
    """The tensors an MAE-release / timm ViT architecture is read off must have the ranks and
    matching widths of a ViT: cls_token [1, 1, D], pos_embed [1, 1 + N, D],
    patch_embed.proj.weight [D, C, P, P], norm.weight [D], blocks.0.mlp.fc1.weight [H, D]."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    width = shapes.get("cls_token", (0, 0, 0))[-1]
    rules = {
        "cls_token": lambda s: len(s) == 3 and s[:2] == (1, 1) and s[2] >= 1,
        "pos_embed": lambda s: len(s) == 3 and s[0] == 1 and s[1] >= 2 and s[2] == width,
        "patch_embed.proj.weight": lambda s: len(s) == 4 and s[0] == width and s[2] == s[3] >= 1,
        "norm.weight": lambda s: s == (width,),
        "blocks.0.mlp.fc1.weight": lambda s: len(s) == 2 and s[1] == width,
        "decoder_embed.weight": lambda s: len(s) == 2 and s[1] == width,
    }
    for key, fits in rules.items():
        if key in state and (key not in shapes or not fits(shapes[key])):
            raise GmaeError(
                f"{source}: {key} has shape {list(shapes.get(key, ()))}, not that of a ViT of "
                f"width {width}"
            )


def stored_int(value: Any, key: str, source: Any) -> int:
    """A size a file's metadata states (``num_heads`` ...): a whole number within the bounds a
    config may ask for."""
    lo, hi = MODEL_INT_BOUNDS[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise GmaeError(
            f"{source}: the stored {key} {value!r} is not a whole number in [{lo}, {hi}]"
        )
    return value


def stored_bool(value: Any, key: str, source: Any) -> bool:
    if not isinstance(value, bool):
        raise GmaeError(f"{source}: the stored {key} {value!r} is not true or false")
    return value


def check_release_sizes(sizes: dict[str, Any], source: str) -> None:
    """An architecture read off a file's tensor shapes must be within the config's bounds."""
    for key, value in sizes.items():
        if key in MODEL_INT_BOUNDS and isinstance(value, int):
            lo, hi = MODEL_INT_BOUNDS[key]
            if not lo <= value <= hi:
                raise GmaeError(f"{source}: {key} {value} read off the weights is out of range")
    if not 0 < sizes["mlp_ratio"] <= 64:
        raise GmaeError(f"{source}: MLP ratio {sizes['mlp_ratio']} is out of range")


def channel_values(values: Any, what: str, path: Path) -> list[float]:
    """A stored per-channel mean or std as a list of finite floats (one line if it is not)."""
    ok = isinstance(values, list | tuple) and values
    ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    if not ok:
        raise GmaeError(f"{path}: the stored {what} {values!r} is not a list of numbers")
    return [float(v) for v in values]


def small_positive(value: Any, what: str, path: Path) -> float:
    """A stored epsilon: a number in (0, 1)."""
    if not isinstance(value, int | float) or not 0 < value < 1:
        raise GmaeError(f"{path}: {what} {value!r} is not a small positive number")
    return float(value)


def few(items: list[str], n: int = 3) -> str:
    """The first ``n`` items and how many more: error lines stay one line."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more
