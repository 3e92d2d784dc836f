"""What the report's summary box says about the checkpoint and its training run.

Everything is read from the files themselves: the config and schedule stored in a training
checkpoint (``.pt``, memory-mapped, so the optimizer state is not read into memory), the
config in a compact ``.safetensors`` file's metadata or a ``save_pretrained`` directory's
``config.json``, and the run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from gmae.errors import GmaeError
from gmae.loading import formats


def checkpoint_facts(path: str | os.PathLike) -> dict:
    """{"file", "kind", "config", "step", "total_steps", "epoch", "effective_batch"} (None
    where the file does not record it). ``path`` is anything ``--ckpt`` names; only gmae's own
    formats record a config."""
    path = Path(path)
    facts: dict = {"file": path.name, "kind": None, "config": None, "step": None}
    facts.update(total_steps=None, epoch=None, effective_batch=None)
    if path.is_dir():
        if formats.is_pretrained_dir(path):
            facts["kind"] = "save_pretrained directory"
            facts["config"] = formats.read_dir_config(path)["config"]
        return facts
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        meta = formats.read_metadata(path)
        facts["kind"] = "compact (.safetensors)"
        try:
            facts["config"] = json.loads(meta["config"])
        except (KeyError, json.JSONDecodeError):
            pass
        return facts
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format file: mmap needs one
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        return facts
    schedule = ckpt.get("schedule") or {}
    facts.update(
        kind="training (.pt)",
        config=ckpt.get("config"),
        step=ckpt.get("step"),
        epoch=ckpt.get("epoch"),
        total_steps=schedule.get("total_steps"),
        effective_batch=schedule.get("effective_batch"),
    )
    return facts


def budget_text(facts: dict, metrics: list[dict]) -> str:
    """One line: steps, epochs, batch and data the model was trained with."""
    cfg = facts.get("config") or {}
    optim, data = cfg.get("optim", {}), cfg.get("data", {})
    steps = [r for r in metrics if "step" in r]
    step = facts.get("step") or (steps[-1]["step"] if steps else None)
    parts = []
    if step is not None:
        total = facts.get("total_steps")
        parts.append(f"{step} of {total} steps" if total else f"{step} steps")
    if optim.get("epochs") is not None:
        done, epochs = facts.get("epoch"), optim["epochs"]
        parts.append(f"epoch {done} of {epochs}" if done is not None else f"{epochs} epochs")
    batch = facts.get("effective_batch") or optim.get("effective_batch")
    if batch:
        parts.append(f"batch {batch}")
    elif optim.get("batch_size"):
        parts.append(f"batch {optim['batch_size']} x {optim.get('accum_iter', 1)} per process")
    if data.get("spec"):
        parts.append(f"{data['spec']} at {data.get('img_size', '?')} px")
    return ", ".join(parts) or "not recorded in the file"


def last_value(metrics: list[dict], key: str) -> float | None:
    for row in reversed(metrics):
        v = row.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            return float(v)
    return None
