"""The one ``--device`` rule of every command: ``auto`` (CUDA if available, else CPU), ``cpu``,
``cuda`` or ``cuda:N``. A CUDA device that is not there is an error, never a silent fallback.
(Pretraining maps ``cuda`` to each torchrun process's own GPU: ``gmae.train.distributed``.)"""

from __future__ import annotations

import os
import platform
from typing import Any

from gmae.errors import GmaeError

DEVICE_HELP = "auto (CUDA if available, else CPU), cpu, cuda or cuda:N (default auto)"


def resolve_device(name: str = "auto") -> Any:
    """``--device`` -> ``torch.device``, with one-line errors."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise GmaeError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type not in ("cpu", "cuda"):
        raise GmaeError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GmaeError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GmaeError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA devices exist"
            )
    return device


def add_device_argument(parser: Any) -> None:
    """``--device`` with the shared rule and help."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def cpu_affinity() -> list[int] | None:
    """The CPUs this process may run on (``taskset``): context for a benchmark's numbers."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
