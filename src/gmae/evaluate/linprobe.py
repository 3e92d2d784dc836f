"""Linear probing of a frozen encoder: ``BatchNorm1d(affine=False) + Linear`` (MAE's head) on
the cls token and on the mean of the patch tokens, reported separately.

Two recipes:

- ``cached`` (default, CPU-friendly, deterministic): features of the un-augmented train and val
  images are extracted once; the BatchNorm uses the train set's statistics (what a BatchNorm
  converges to) and the Linear layer is an L2-regularised multinomial logistic regression
  solved full-batch with L-BFGS (CLIP's linear-probe protocol). The L2 strength is picked from a
  small grid on a held-out 10 % of the train set, then the head is refit on all of it.
- ``mae``: MAE's ``main_linprobe``: RandomResizedCrop + flip every epoch, LARS (momentum 0.9,
  trust coefficient 0.001, no weight decay), lr = 0.1 x batch / 256, warm-up then half-cycle
  cosine per step, 90 epochs; the encoder runs on every batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.optim import Lars
from torch import Tensor, nn
from tqdm.auto import tqdm

from gmae.errors import ArgumentError, GmaeError
from gmae.evaluate.common import FEATURE_KINDS, Features, pool_tokens, topk_accuracy
from gmae.schedules import lr_at, set_lr

DEFAULT_WDS = (1e-6, 1e-5, 1e-4, 1e-3)
RECIPES = ("cached", "mae")


def probe_head(dim: int, num_classes: int) -> nn.Sequential:
    """MAE's linear-probe head: BatchNorm1d without affine (eps 1e-6), Linear (std 0.01)."""
    linear = nn.Linear(dim, num_classes)
    trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


# --------------------------------------------------------------------------------------------
# Cached features + L-BFGS
# --------------------------------------------------------------------------------------------


def fit_cached_head(
    x: Tensor, y: Tensor, num_classes: int, wd: float, max_iter: int = 1000
) -> nn.Sequential:
    """BatchNorm (set to the statistics of ``x``) + Linear fit by L-BFGS; eval mode."""
    head = probe_head(x.shape[1], num_classes)
    bn, linear = head[0], head[1]
    x = x.float()
    bn.running_mean.copy_(x.mean(dim=0))
    bn.running_var.copy_(x.var(dim=0, unbiased=False))
    head.eval()
    with torch.no_grad():
        z = bn(x)
    nn.init.zeros_(linear.weight)  # a convex problem: start at 0 for a deterministic answer
    opt = torch.optim.LBFGS(
        linear.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), y) + 0.5 * wd * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with _few_threads(x.numel()):
        opt.step(closure)
    return head


@contextlib.contextmanager
def _few_threads(numel: int, small: int = 1 << 20):
    """One intra-op thread for small problems: L-BFGS runs thousands of tiny ops, and thread
    hand-offs then cost more than the arithmetic (40x slower on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    if numel < small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@torch.no_grad()
def _logits(head: nn.Module, x: Tensor) -> Tensor:
    return head.eval()(x.float())


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_hold = max(1, int(round(n * fraction)))
    return perm[n_hold:], perm[:n_hold]


def cached_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    num_classes: int,
    wds: Sequence[float] = DEFAULT_WDS,
    max_iter: int = 1000,
    holdout: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Pick the L2 strength on a held-out part of train, refit on all of train, score val."""
    if not wds:
        raise ArgumentError("wds", "give at least one {wds} value")
    if any(w < 0 for w in wds):
        raise ArgumentError("wds", f"values must be >= 0, got {list(wds)}")
    selection: dict[str, float] = {}
    wd = float(wds[0])
    if len(wds) > 1:
        if not 0 < holdout < 1:
            raise ArgumentError("holdout", f"must be in (0, 1), got {holdout}")
        fit, hold = holdout_split(train_x.shape[0], holdout, seed)
        best = -1.0
        for w in sorted(wds, reverse=True):  # ties keep the stronger regulariser
            head = fit_cached_head(train_x[fit], train_y[fit], num_classes, w, max_iter)
            acc = topk_accuracy(_logits(head, train_x[hold]), train_y[hold], (1,))["top1"]
            selection[f"{w:g}"] = acc
            if acc > best:
                best, wd = acc, float(w)
    head = fit_cached_head(train_x, train_y, num_classes, wd, max_iter)
    result = topk_accuracy(_logits(head, val_x), val_y)
    result["train_top1"] = topk_accuracy(_logits(head, train_x), train_y, (1,))["top1"]
    result["wd"] = wd
    if selection:
        result["holdout_top1"] = selection
    return result


def cached_linprobe(
    train: Features, val: Features, num_classes: int, **kwargs: Any
) -> dict[str, dict[str, Any]]:
    """``cached_probe`` for cls and mean-pooled features."""
    out = {}
    for kind in tqdm(FEATURE_KINDS, desc="linear heads", leave=False):
        out[kind] = cached_probe(
            train.get(kind), train.labels, val.get(kind), val.labels, num_classes, **kwargs
        )
    return out


# --------------------------------------------------------------------------------------------
# MAE's recipe: augmentation every epoch, LARS
# --------------------------------------------------------------------------------------------


def lars_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """MAE's LARS: weights (ndim > 1) get weight decay and the trust ratio, biases neither."""
    weights = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": weights, "weight_decay": weight_decay, "always_adapt": True},
        {"params": others, "weight_decay": 0.0, "always_adapt": False},
    ]


def mae_linprobe(
    model: nn.Module,
    train_loader,
    val_loader,
    num_classes: int,
    device: torch.device,
    epochs: int = 90,
    warmup_epochs: float = 10,
    base_lr: float = 0.1,
    weight_decay: float = 0.0,
    accum_iter: int = 1,
    max_steps: int | None = None,
    amp: bool = True,
) -> dict[str, Any]:
    """Train both heads together (one encoder pass per batch) with LARS; score val at the end."""
    if epochs < 1 or accum_iter < 1:
        raise ArgumentError(
            "epochs", "{epochs} and {accum_iter} must be at least 1", mentions=("accum_iter",)
        )
    if len(train_loader) < accum_iter:
        raise ArgumentError(
            "accum_iter",
            f"one optimiser step needs {accum_iter} batches, the train split has "
            f"{len(train_loader)}: lower {{accum_iter}} or {{batch_size}}",
        )
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    dim = model.encoder.embed_dim
    heads = nn.ModuleDict({k: probe_head(dim, num_classes) for k in FEATURE_KINDS}).to(device)
    opt = Lars(lars_param_groups(heads, weight_decay), lr=0.0, momentum=0.9, trust_coeff=0.001)
    batch = train_loader.batch_size * accum_iter
    lr = base_lr * batch / 256
    steps_per_epoch = max(1, len(train_loader) // accum_iter)
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if max_steps is not None:
        total = min(total, max_steps)
    use_amp = amp and device.type == "cuda"
    step, losses = 0, []
    bar = tqdm(total=total, desc="linprobe (mae)", unit="step", dynamic_ncols=True)
    while step < total:
        heads.train()
        opt.zero_grad(set_to_none=True)  # drop a partial accumulation from the last epoch
        for i, (imgs, y) in enumerate(train_loader):
            imgs, y = imgs.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                cls, mean = pool_tokens(model.forward_features(imgs).float())
            feats = {"cls": cls, "mean": mean}
            loss = sum(F.cross_entropy(heads[k](feats[k]), y) for k in FEATURE_KINDS)
            if not math.isfinite(loss.item()):
                raise GmaeError(f"linear probe loss is {loss.item()} at step {step}")
            (loss / accum_iter).backward()
            if (i + 1) % accum_iter:
                continue
            set_lr(opt, lr_at(step, total, warmup, lr, 0.0))
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item() / len(FEATURE_KINDS))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step >= total:
                break
    bar.close()

    heads.eval()
    logits: dict[str, list[Tensor]] = {k: [] for k in FEATURE_KINDS}
    labels = []
    with torch.no_grad():
        for imgs, y in tqdm(val_loader, desc="val", unit="batch", leave=False):
            with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                tokens = model.forward_features(imgs.to(device))
            cls, mean = pool_tokens(tokens.float())
            feats = {"cls": cls, "mean": mean}
            for k in FEATURE_KINDS:
                logits[k].append(heads[k](feats[k]).float().cpu())
            labels.append(torch.as_tensor(y))
    labels_t = torch.cat(labels)
    out: dict[str, Any] = {k: topk_accuracy(torch.cat(v), labels_t) for k, v in logits.items()}
    out["train"] = {
        "steps": step,
        "lr": lr,
        "effective_batch": batch,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    return out
