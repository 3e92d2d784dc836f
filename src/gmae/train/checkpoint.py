"""Checkpoints: atomic writes, ``weights_only`` loads, RNG states, compatibility checks.

A checkpoint is a dict of tensors and plain Python containers only, so that
``torch.load(path, weights_only=True)`` can read it (no pickled classes, no numpy arrays):

    format, gmae_version, config (plain dict), model (state dict), probe (state dict or None),
    optimizer, scaler (state dicts or None), schedule {step, total_steps, effective_batch, lr},
    epoch, step_in_epoch (optimizer steps done in ``epoch``), step (global), skipped,
    rng [one dict per rank: torch, cuda (that rank's GPU only, or None), numpy, python],
    data {seed, world_size}
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gmae import io as gio
from gmae.errors import GmaeError

FORMAT = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the old file intact.

    A failed write (disk full, file-size limit, I/O error) is a ``GmaeError`` saying so; the
    temporary file is removed and the previous ``path`` (if any) is left as it was.
    """
    path = Path(path)
    existed = path.exists()
    try:
        with gio.atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as exc:
        kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
        raise GmaeError(
            f"cannot save checkpoint {path}: {gio.describe_os_error(exc)} ({kept})"
        ) from exc


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise GmaeError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model"), dict)
        or not isinstance(ckpt.get("config"), dict)
    ):
        raise GmaeError(f"{path} is not a gmae pretraining checkpoint")
    return ckpt


def check_compatible(ckpt_config: dict, config: dict, path: str | os.PathLike) -> None:
    """The model (and image size) of a checkpoint must match the run that loads it."""
    old = {**ckpt_config.get("model", {}), "img_size": ckpt_config.get("data", {}).get("img_size")}
    new = {**config.get("model", {}), "img_size": config.get("data", {}).get("img_size")}
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        what = ", ".join(f"{k}: {old.get(k)!r} vs {new.get(k)!r}" for k in diff)
        raise GmaeError(f"checkpoint {path} has a different model config ({what})")


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Any) -> None:
    """Strict ``load_state_dict`` with a one-line error naming what does not fit."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{what} {_few(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    if problems:
        raise GmaeError(
            f"checkpoint {source} does not fit {type(module).__name__}: {'; '.join(problems)}"
        )
    check_finite(state, source)
    module.load_state_dict(state)


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
            f"{_few(bad)}"
        )


def stored_config(raw: Any, source: Any):
    """The ``Config`` stored in a checkpoint, with errors naming the file."""
    from gmae.train.config import config_from_dict

    if not isinstance(raw, dict):
        raise GmaeError(f"checkpoint {source}: its stored config is not a mapping")
    try:
        return config_from_dict(raw)
    except GmaeError as exc:
        raise GmaeError(f"checkpoint {source}: its stored config is invalid: {exc}") from exc


def check_metadata(cfg, tensors: dict[str, Any], source: Any) -> None:
    """Check a file's stored model config against the tensors it actually holds, before the
    model is built: the architecture the config describes is instantiated on the ``meta``
    device (no memory) and its state dict must have exactly the file's keys and shapes.

    ``tensors``: key -> tensor or shape (a safetensors header gives shapes without reading).
    Sane bounds on the config itself are checked first (``config.check_model``), so a few-byte
    file cannot ask for a ViT with a thousand blocks or a billion Gaussians.
    """
    from gmae.models import create_model
    from gmae.train.config import check_model

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


def check_shapes(expected: dict[str, Any], tensors: dict[str, Any], source: Any) -> None:
    """The file's tensors (or shapes) must be exactly the keys and shapes of ``expected`` (the
    state dict of a model built on the ``meta`` device)."""

    def shape(v: Any) -> tuple[int, ...]:
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k} {list(shape(tensors[k]))} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in tensors and shape(tensors[k]) != tuple(v.shape)
    ]
    problems = [
        f"{what} {_few(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    if problems:
        raise GmaeError(
            f"checkpoint {source} does not fit the model it describes (its tensors do not match: "
            f"{'; '.join(problems)})"
        )


def _few(items: list[str], n: int = 3) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# --- RNG states -----------------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states, as tensors and tuples (``weights_only``-loadable).

    CUDA: only the generator of this process's own GPU (``device``; default the current one),
    so a checkpoint restores on a machine with any number of GPUs.
    """
    # numpy's legacy global RNG is what third-party code uses, so that is the state to keep
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    elif device is None and torch.cuda.is_available():
        cuda = torch.cuda.get_rng_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore ``rng_state``'s states; the CUDA one goes to ``device`` (default: the current
    GPU). Older checkpoints hold every visible GPU's state: this GPU's index is used when it
    exists there, else the first (never an IndexError on a machine with fewer GPUs)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device is not None and device.type != "cuda":
        cuda = None
    if isinstance(cuda, list | tuple):  # format of gmae <= 0.1: get_rng_state_all()
        index = device.index if device is not None else None
        if index is None and torch.cuda.is_available():
            index = torch.cuda.current_device()
        if not cuda:
            cuda = None
        else:
            cuda = cuda[index] if index is not None and index < len(cuda) else cuda[0]
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda, device if device is not None else "cuda")
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# --- for evaluation code ----------------------------------------------------------------------


def load_pretrained(path: str | os.PathLike, map_location: Any = "cpu"):
    """``(model, config)`` from a pretraining checkpoint; the model is in eval mode.

    The model is rebuilt from the config stored in the checkpoint, so no other file is needed.
    """
    from gmae.models import create_model

    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = stored_config(ckpt["config"], path)
    check_metadata(cfg, ckpt["model"], path)
    model = create_model(**model_kwargs(cfg))
    load_state(model, ckpt["model"], path)
    return model.eval(), cfg


def model_kwargs(cfg) -> dict[str, Any]:
    """``create_model`` arguments of a config: the model section plus the image size (checked:
    types from the model's signature, finite numbers, sane sizes)."""
    from gmae.train.config import check_model

    check_model(cfg.model, cfg.data.img_size)
    return {**cfg.model, "img_size": cfg.data.img_size}
