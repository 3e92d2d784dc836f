"""AdamW with MAE's weight-decay groups, and setting the learning rate of every group (the
per-step warmup + cosine schedule, ``lr_at``, lives in gmae.schedules)."""

from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from gmae.schedules import lr_at as lr_at  # lived here; gmae.train.optim.lr_at still works


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
