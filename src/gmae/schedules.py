"""Schedules: pure functions of the optimizer step, so a resumed run repeats them exactly.

``cosine_ramp`` is the half-cosine between two values; ``lr_at`` is the learning rate of
pretraining, fine-tuning and linear probing (linear warmup, then that cosine down to ``min_lr``),
and LatentMIM's EMA momentum rises along it (``gmae.models.latent_mim.ema_momentum``);
``set_lr`` gives an optimizer's groups that rate, each times its ``lr_scale``.
"""

from __future__ import annotations

import math


def cosine_ramp(start: float, end: float, progress: float) -> float:
    """Half-cosine from ``start`` (progress 0) to ``end`` (progress 1); progress is clamped."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup from 0, then cosine.

    Step-based (not epoch-based) so that it is smooth for short runs and exact on resume.
    """
    if step < warmup_steps:
        return lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    return cosine_ramp(lr, min_lr, (step - warmup_steps) / max(1, total_steps - warmup_steps))


def set_lr(optimizer, lr: float) -> None:
    """Every group of ``optimizer`` at ``lr`` times its ``lr_scale`` (default 1): timm's key for
    layer-wise decay in fine-tuning, and ``optim.decoder_lr_scale`` in pretraining."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
