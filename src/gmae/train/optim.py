"""AdamW with MAE's weight-decay groups, and the per-step warmup + cosine learning rate."""

from __future__ import annotations

import math

import torch
from timm.optim import param_groups_weight_decay
from torch import nn


def build_optimizer(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    no_weight_decay: set[str] | frozenset[str] = frozenset(),
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW; biases, norms (ndim <= 1) and the names in ``no_weight_decay`` get no decay.

    ``no_weight_decay`` holds parameter names of ``module`` (fnmatch patterns, as timm): position
    embeddings, cls token, GMAE's queries. Decaying them pulls them to zero for no benefit.
    ``fused``: one CUDA kernel for the whole update (CUDA parameters only).
    """
    groups = param_groups_weight_decay(module, weight_decay, no_weight_decay_list=no_weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup from 0, then cosine.

    Step-based (not epoch-based) so that it is smooth for short runs and exact on resume.
    """
    if step < warmup_steps:
        return lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
