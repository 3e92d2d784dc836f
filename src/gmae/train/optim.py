"""AdamW with MAE's weight-decay groups (the per-step warmup + cosine schedule, ``lr_at``, and
``set_lr``, which applies it to every group, live in gmae.schedules)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from gmae.schedules import lr_at as lr_at  # lived here; gmae.train.optim.lr_at still works
from gmae.schedules import set_lr as set_lr


def build_optimizer(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    no_weight_decay: set[str] | frozenset[str] = frozenset(),
    fused: bool = False,
    lr_scale: Callable[[str], float] | None = None,
) -> torch.optim.AdamW:
    """AdamW; biases, norms (ndim <= 1) and the names in ``no_weight_decay`` get no decay.

    ``no_weight_decay`` holds parameter names of ``module`` (fnmatch patterns, as timm): position
    embeddings, cls token, GMAE's queries. Decaying them pulls them to zero for no benefit.
    ``fused``: one CUDA kernel for the whole update (CUDA parameters only).
    ``lr_scale``: parameter name -> multiplier of the learning rate (kept in each group as
    ``lr_scale``, which ``set_lr`` applies). Without it, or where every multiplier is 1, the
    groups are exactly the two weight-decay groups, so existing checkpoints still load.
    """
    groups = param_groups_weight_decay(module, weight_decay, no_weight_decay_list=no_weight_decay)
    if lr_scale is not None:
        groups = _split_by_lr_scale(module, groups, lr_scale)
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def _split_by_lr_scale(
    module: nn.Module, groups: list[dict], lr_scale: Callable[[str], float]
) -> list[dict]:
    """Each weight-decay group split by its parameters' multipliers (1 first, the rest in order
    of appearance); a group whose multiplier is 1 carries no ``lr_scale`` key."""
    name_of = {id(p): n for n, p in module.named_parameters()}
    split = []
    for group in groups:
        by_scale: dict[float, list[torch.Tensor]] = {1.0: []}
        for param in group["params"]:
            by_scale.setdefault(float(lr_scale(name_of[id(param)])), []).append(param)
        for scale, params in by_scale.items():
            if params:
                extra = {} if scale == 1.0 else {"lr_scale": scale}
                split.append({**group, "params": params, **extra})
    return split
