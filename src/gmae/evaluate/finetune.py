"""End-to-end fine-tuning of the encoder as a timm ``VisionTransformer`` (MAE's recipe).

The model is timm's ViT initialised from the pretrained encoder (``gmae.export.timm``): global
average pooling of the patch tokens, a fresh ``fc_norm`` and head (std 2e-5), stochastic depth.
Optimiser and augmentation come from timm: AdamW with layer-wise lr decay
(``create_optimizer_v2(layer_decay=...)``, no decay on biases / norms / pos-embed / cls token),
RandAugment + RandomResizedCrop + flip + random erasing (``create_transform``), mixup / cutmix
(``Mixup``) with soft-target cross-entropy (label smoothing inside Mixup, else
``LabelSmoothingCrossEntropy``), optional EMA (``ModelEmaV3``). Per-step warm-up + cosine lr,
each layer's lr scaled by its ``lr_scale``. AMP (bf16 by default) on CUDA.

Presets: ``mae`` is MAE's ViT-B ImageNet recipe (docs/method.md); ``cpu`` is a few-epoch,
small-batch version for CPUs and tiny models. The timm model takes *normalised* images (the
model's own mean / std), so the transforms normalise.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import RandAugment
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchvision import transforms as T
from tqdm.auto import tqdm

from gmae.data import eval_transform
from gmae.errors import ArgumentError, GmaeError
from gmae.evaluate.common import make_loader, topk_accuracy
from gmae.export.timm import timm_vit_from_model
from gmae.schedules import lr_at, set_lr


@dataclass
class FinetuneConfig:
    epochs: int = 100
    batch_size: int = 128  # per step (micro-batch)
    accum_iter: int = 8  # micro-batches per optimiser step (128 x 8 = MAE's 1024)
    base_lr: float = 5e-4  # lr = base_lr x batch_size x accum_iter / 256
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    clip_grad: float | None = None
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25  # random erasing probability ("pixel" mode, one box)
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    ema_decay: float | None = None  # e.g. 0.9999; None: no EMA
    eval_crop_pct: float = 0.875  # resize to img / 0.875 then centre crop (MAE: 256 -> 224)
    amp: str = "bf16"  # bf16 | fp16 | none (CUDA only)
    max_steps: int | None = None  # stop after this many optimiser steps (quick runs)
    seed: int = 0


PRESETS: dict[str, dict[str, Any]] = {
    "mae": {},  # MAE ViT-B/16 ImageNet-1k: 100 epochs, batch 1024, blr 5e-4, ld 0.65, dp 0.1
    # A few hundred steps on a CPU: MAE's recipe at a 4x base lr, without mixup / cutmix (they
    # slow convergence and only pay off over long schedules) and with a milder layer decay. At
    # MAE's settings 3 epochs barely move the loss (Imagenette-64: 33 % top-1, below the
    # frozen linear probe's 49 %; docs/results.md).
    "cpu": {
        "epochs": 3,
        "batch_size": 64,
        "accum_iter": 1,
        "base_lr": 2e-3,
        "warmup_epochs": 0.5,
        "layer_decay": 0.75,
        "mixup": 0.0,
        "cutmix": 0.0,
        "eval_crop_pct": 1.0,
        "amp": "none",
    },
}


def finetune_config(preset: str = "mae", **overrides: Any) -> FinetuneConfig:
    """A preset with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise GmaeError(f"unknown fine-tune preset {preset!r}; choose from {', '.join(PRESETS)}")
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    values = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in names:
            raise GmaeError(f"unknown fine-tune setting {key!r}")
        if value is not None:
            values[key] = value
    cfg = FinetuneConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: FinetuneConfig) -> None:
    for key in ("epochs", "batch_size", "accum_iter"):
        if getattr(cfg, key) < 1:
            raise GmaeError(f"fine-tune {key} must be at least 1, got {getattr(cfg, key)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ArgumentError("max_steps", f"must be at least 1, got {cfg.max_steps}")
    if not 0 < cfg.layer_decay <= 1:
        raise ArgumentError("layer_decay", f"must be in (0, 1], got {cfg.layer_decay}")
    if cfg.amp not in ("bf16", "fp16", "none"):
        raise ArgumentError("amp", f"must be bf16, fp16 or none, got {cfg.amp!r}")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        raise ArgumentError("ema_decay", f"must be in (0, 1), got {cfg.ema_decay}")


def finetune_transforms(cfg: FinetuneConfig, img_size: int, mean, std):
    """(train, val) transforms producing normalised tensors, as timm / MAE build them."""
    aa = None if cfg.auto_augment in (None, "", "none") else cfg.auto_augment
    train = create_transform(
        input_size=img_size,
        is_training=True,
        auto_augment=aa,
        color_jitter=None,  # MAE: no colour jitter (RandAugment covers it)
        interpolation="bicubic",
        re_prob=cfg.reprob,
        re_mode="pixel",
        re_count=1,
        mean=tuple(mean),
        std=tuple(std),
    )
    _patch_posterize(train)
    val = T.Compose([eval_transform(img_size, cfg.eval_crop_pct), T.Normalize(mean, std)])
    return train, val


def _posterize(img, bits_to_keep: int, **_):
    """timm's posterize, with 0 bits giving a black image as Pillow < 12 did.

    RandAugment's ``PosterizeIncreasing`` asks for 0 bits at magnitude 10, which ``mstd0.5``
    reaches a few percent of the time; current Pillow raises ValueError for that, killing a
    fine-tuning run after a few thousand images.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _patch_posterize(transform) -> None:
    """Swap ``_posterize`` into the RandAugment ops of ``transform`` (this instance only)."""
    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if "Posterize" in op.name:
                    op.aug_fn = _posterize


def _criterion(cfg: FinetuneConfig, mixup_active: bool) -> nn.Module:
    if mixup_active:
        return SoftTargetCrossEntropy()  # smoothing is applied by Mixup to the targets
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp_dtype=None) -> dict[str, float]:
    """Top-1 / top-5 (percent) and the mean cross-entropy on a loader of normalised images."""
    model.eval()
    logits, labels = [], []
    for imgs, y in loader:
        with torch.autocast(device.type, amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(imgs.to(device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(torch.as_tensor(y))
    logits_t, labels_t = torch.cat(logits), torch.cat(labels)
    result = topk_accuracy(logits_t, labels_t)
    result["loss"] = nn.functional.cross_entropy(logits_t, labels_t).item()
    return result


def finetune(
    model: nn.Module,
    train_ds,
    val_ds,
    num_classes: int,
    cfg: FinetuneConfig,
    device: torch.device,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Fine-tune ``model.encoder`` on ``train_ds`` (normalised tensors, see
    :func:`finetune_transforms`), evaluating on ``val_ds`` after every epoch."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)  # timm's augmentations draw from python's and numpy's global RNGs
    np.random.seed(cfg.seed)  # noqa: NPY002
    vit = timm_vit_from_model(model, num_classes, drop_path_rate=cfg.drop_path).to(device)
    mixup_active = cfg.mixup > 0 or cfg.cutmix > 0
    if mixup_active and cfg.batch_size % 2:
        raise ArgumentError("batch_size", "mixup / cutmix need an even {batch_size}")
    train_loader = make_loader(
        train_ds, cfg.batch_size, num_workers, shuffle=True, drop_last=True, seed=cfg.seed,
        device=device,
    )  # fmt: skip
    if len(train_loader) == 0:
        raise GmaeError(
            f"fewer training images ({len(train_ds)}) than one batch ({cfg.batch_size})"
        )
    val_loader = make_loader(val_ds, cfg.batch_size, num_workers, device=device)
    mixup_fn = None
    if mixup_active:
        mixup_fn = Mixup(
            mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )  # fmt: skip
    criterion = _criterion(cfg, mixup_active)

    eff_batch = cfg.batch_size * cfg.accum_iter
    lr = cfg.base_lr * eff_batch / 256
    opt = create_optimizer_v2(
        vit, "adamw", lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay
    )
    steps_per_epoch = max(1, len(train_loader) // cfg.accum_iter)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    stop_at = min(total, cfg.max_steps) if cfg.max_steps else total
    ema = ModelEmaV3(vit, decay=cfg.ema_decay) if cfg.ema_decay else None

    use_amp = device.type == "cuda" and cfg.amp != "none"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    history: list[dict[str, Any]] = []
    losses: list[float] = []
    step, epoch, start = 0, 0, time.time()
    bar = tqdm(total=stop_at, desc="finetune", unit="step", dynamic_ncols=True)
    while step < stop_at and epoch < cfg.epochs:
        vit.train()
        opt.zero_grad(set_to_none=True)  # drop a partial accumulation from the last epoch
        epoch_losses = []
        for i, (imgs, y) in enumerate(train_loader):
            imgs, y = imgs.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixup_fn is not None:
                imgs, y = mixup_fn(imgs, y)
            with torch.autocast(device.type, amp_dtype or torch.float32, enabled=use_amp):
                loss = criterion(vit(imgs), y)
            if not math.isfinite(loss.item()):
                raise ArgumentError(
                    "amp", f"fine-tune loss is {loss.item()} at step {step} (try {{amp}} bf16)"
                )
            scaler.scale(loss / cfg.accum_iter).backward()
            epoch_losses.append(loss.item())
            if (i + 1) % cfg.accum_iter:
                continue
            set_lr(opt, lr_at(step, total, warmup, lr, cfg.min_lr))
            if cfg.clip_grad:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(vit.parameters(), cfg.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(vit, step=step)
            losses.append(sum(epoch_losses[-cfg.accum_iter :]) / cfg.accum_iter)
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
            if step >= stop_at:
                break
        epoch += 1
        metrics = evaluate(vit, val_loader, device, amp_dtype)
        record = {"epoch": epoch, "step": step, "train_loss": _mean(epoch_losses), **metrics}
        if ema is not None:
            record["ema"] = evaluate(ema.module, val_loader, device, amp_dtype)
        history.append(record)
        bar.write(
            f"epoch {epoch}: train loss {record['train_loss']:.4f}  val top-1 "
            f"{metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}"
        )
    bar.close()
    final = history[-1]
    result: dict[str, Any] = {
        "top1": final["top1"],
        "top5": final["top5"],
        "best_top1": max(h["top1"] for h in history),
        "steps": step,
        "epochs_run": epoch,
        "lr": lr,
        "effective_batch": eff_batch,
        "seconds": time.time() - start,
        "history": history,
        "step_losses": losses,
    }
    if ema is not None:
        result["ema"] = {"top1": final["ema"]["top1"], "top5": final["ema"]["top5"]}
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
