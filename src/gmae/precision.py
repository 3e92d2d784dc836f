"""fp32 islands inside mixed-precision training.

CUDA autocast runs matmul-like ops (``linear``, ``@``, ``einsum``, ...) in bf16 / fp16, and with
TF32 on (the training default on CUDA) fp32 matmuls keep only 10 mantissa bits. That is right for
the transformer blocks but not for the few places where the rounding changes what is learned:
the renderer, the losses (render vs target), GMAE's Gaussian head (a bf16 centre is off by up to
a quarter pixel at 224) and Latent MIM's InfoNCE logits. Those run inside ``fp32_island()``.

The island is exact in the forward only. TF32 is a process-wide flag that the island restores on
exit, so the backward of its ops (run later by autograd) follows the flag outside: training
therefore turns TF32 on only without autocast (``run.tf32`` with ``run.amp=none``), where it is
the one speed-up for the transformer's fp32 matmuls; under bf16 / fp16 autocast those matmuls
are half precision anyway and TF32 stays off, so the islands' backward is fp32 too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Device types whose autocast state an island switches off (whichever are on).
AUTOCAST_DEVICES = ("cuda", "cpu", "xpu", "mps")


@contextmanager
def fp32_island() -> Iterator[None]:
    """Autocast off for every device type where it is on, and TF32 matmuls off, both restored
    on exit. Callers still cast their inputs with ``.float()``."""
    enabled = []
    for device_type in AUTOCAST_DEVICES:
        try:
            if torch.is_autocast_enabled(device_type):
                enabled.append(device_type)
        except (RuntimeError, ValueError):  # device type unknown to this build of torch
            continue
    for device_type in enabled:
        torch.set_autocast_enabled(device_type, False)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for device_type in enabled:
            torch.set_autocast_enabled(device_type, True)


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA fp32 matmuls and convolutions on or off inside, the previous (process-wide)
    flags restored on exit, so a training run or benchmark leaves the process as it found it."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
