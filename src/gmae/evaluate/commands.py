"""``gmae eval linprobe | knn | finetune | recon``: parsers and command functions.

``gmae.evaluate.cli`` calls :func:`add_parsers` with the ``eval`` group. Heavy imports happen
inside the command functions so that ``gmae --help`` stays fast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gmae.devices import DEVICE_HELP
from gmae.errors import GmaeError
from gmae.loading import CKPT_HELP

# Kept here (not imported from the protocol modules) so that building the parser imports no
# torch; tests check they match linprobe.DEFAULT_WDS / RECIPES and finetune.PRESETS.
LINPROBE_RECIPES = ("cached", "mae")
LINPROBE_WDS = (1e-6, 1e-5, 1e-4, 1e-3)
FINETUNE_PRESETS = ("mae", "cpu")

PRESET_DEFAULT = " (default: the --preset's value, see docs/evaluation.md)"


def _common(p: argparse.ArgumentParser, batch_size: int | None = 256, data: bool = True) -> None:
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument(
        "--config", help="with --ckpt random: preset name or YAML file giving the architecture"
    )
    if data:
        p.add_argument(
            "--data", required=True, help="data set spec: cifar10, imagenette-128, imagefolder:/p"
        )
        p.add_argument(
            "--train-split", default="train", help="split the classifier / kNN bank is fit on"
        )
        p.add_argument("--val-split", default="val", help="val (= test for cifar10)")
    p.add_argument("--img-size", type=int, help="input size (default: the checkpoint's)")
    p.add_argument(
        "--crop-pct",
        type=float,
        default=1.0,
        help="eval transform: resize to img/crop_pct then centre-crop (default 1.0)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="images per batch" + (PRESET_DEFAULT if batch_size is None else ""),
    )
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--limit", type=int, help="use at most this many images per split (seeded)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="subset, masks, random init, training")
    p.add_argument("--json", type=Path, help="write the results here (atomically)")


def add_parsers(group: argparse._SubParsersAction) -> None:
    """Add linprobe, knn, finetune and recon to the ``gmae eval`` group."""
    p = group.add_parser(
        "linprobe",
        help="linear probe on frozen features (cls token and mean of patch tokens)",
        description="Linear probe: BatchNorm1d(affine=False) + Linear on frozen cls and "
        "mean-pooled features. --recipe cached (default): features extracted once, L-BFGS "
        "logistic regression, L2 picked on 10% of train. --recipe mae: MAE's LARS recipe with "
        "RandomResizedCrop. See docs/evaluation.md.",
    )
    _common(p)
    p.add_argument(
        "--recipe",
        choices=LINPROBE_RECIPES,
        default="cached",
        help="cached: features once + L-BFGS; mae: MAE's LARS recipe with augmentation",
    )
    c = p.add_argument_group("--recipe cached")
    c.add_argument(
        "--wd",
        type=float,
        nargs="+",
        default=list(LINPROBE_WDS),
        help="L2 strengths to choose from (one value: no selection)",
    )
    c.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit")
    c.add_argument("--holdout", type=float, default=0.1, help="train fraction held out for --wd")
    m = p.add_argument_group("--recipe mae")
    m.add_argument("--epochs", type=int, default=90, help="training epochs")
    m.add_argument("--warmup-epochs", type=float, default=10, help="linear lr warm-up epochs")
    m.add_argument("--blr", type=float, default=0.1, help="lr = blr x batch x accum / 256")
    m.add_argument("--weight-decay", type=float, default=0.0, help="LARS weight decay")
    m.add_argument(
        "--accum-iter", type=int, default=1, help="micro-batches per step (MAE: 16384 in all)"
    )
    m.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.set_defaults(func=cmd_linprobe)

    p = group.add_parser(
        "knn",
        help="weighted kNN (k=20, T=0.07) and 1-NN leave-one-out on frozen features",
        description="Weighted kNN train -> val (cosine similarity, votes exp(sim/T); DINO / "
        "InstDisc) and Latent MIM's 1-NN leave-one-out on val, for cls and mean features.",
    )
    _common(p)
    p.add_argument("--k", type=int, default=20, help="neighbours that vote (weighted kNN)")
    p.add_argument(
        "--temperature", type=float, default=0.07, help="vote weight exp(cosine similarity / T)"
    )
    p.set_defaults(func=cmd_knn)

    p = group.add_parser(
        "finetune",
        help="fine-tune the encoder as a timm ViT (MAE recipe); top-1 / top-5 on val",
        description="End-to-end fine-tuning (MAE's recipe: layer decay, drop path, RandAugment, "
        "mixup / cutmix, label smoothing, random erasing; optional EMA). --preset mae is MAE's "
        "ViT-B ImageNet recipe, --preset cpu a few-epoch version for CPUs.",
    )
    _common(p, batch_size=None)
    p.add_argument(
        "--preset",
        choices=FINETUNE_PRESETS,
        default="mae",
        help="mae: MAE's ViT-B ImageNet recipe; cpu: a few epochs for CPUs. The options below "
        "override its values",
    )
    p.add_argument("--epochs", type=int, help="training epochs" + PRESET_DEFAULT)
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument(
        "--accum-iter", type=int, help="micro-batches per optimiser step" + PRESET_DEFAULT
    )
    p.add_argument(
        "--blr", type=float, help="base lr, lr = blr x effective batch / 256" + PRESET_DEFAULT
    )
    p.add_argument("--min-lr", type=float, help="cosine schedule floor" + PRESET_DEFAULT)
    p.add_argument("--warmup-epochs", type=float, help="linear lr warm-up" + PRESET_DEFAULT)
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay" + PRESET_DEFAULT)
    p.add_argument(
        "--layer-decay", type=float, help="lr factor per block from the top" + PRESET_DEFAULT
    )
    p.add_argument("--drop-path", type=float, help="stochastic depth rate" + PRESET_DEFAULT)
    p.add_argument(
        "--clip-grad", type=float, help="gradient norm clip, none if unset" + PRESET_DEFAULT
    )
    p.add_argument("--aa", help="timm auto-augment spec, or 'none'" + PRESET_DEFAULT)
    p.add_argument("--reprob", type=float, help="random erasing probability" + PRESET_DEFAULT)
    p.add_argument("--mixup", type=float, help="mixup alpha, 0 = off" + PRESET_DEFAULT)
    p.add_argument("--cutmix", type=float, help="cutmix alpha, 0 = off" + PRESET_DEFAULT)
    p.add_argument("--smoothing", type=float, help="label smoothing" + PRESET_DEFAULT)
    p.add_argument("--ema-decay", type=float, help="keep an EMA of the weights (e.g. 0.9999)")
    p.add_argument(
        "--amp",
        choices=["bf16", "fp16", "none"],
        help="mixed precision on CUDA" + PRESET_DEFAULT,
    )
    p.set_defaults(func=cmd_finetune)

    p = group.add_parser(
        "recon",
        help="PSNR / SSIM of reconstructions (masked patches and whole image)",
        description="PSNR and SSIM of MAE / GMAE reconstructions in [0, 1] on N val images, on "
        "the masked patches and on the whole image, at the training mask ratio and at 0.",
    )
    _common(p, batch_size=64)
    p.add_argument("--num-images", type=int, default=256, help="val images to use (seeded)")
    p.add_argument(
        "--mask-ratios", type=float, nargs="+", help="default: the training mask ratio and 0"
    )
    p.set_defaults(func=cmd_recon)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace):
    from gmae.devices import resolve_device
    from gmae.loading.loaders import load_any

    if args.img_size is not None and args.img_size < 1:
        raise GmaeError(f"--img-size must be positive, got {args.img_size}")
    if args.num_workers < 0:
        raise GmaeError(f"--num-workers must be >= 0, got {args.num_workers}")
    device = resolve_device(args.device)
    loaded = load_any(args.ckpt, args.config, args.img_size, args.seed)
    return loaded, device


def _finish(args: argparse.Namespace, result: dict[str, Any], lines: list[str], t0: float) -> int:
    from gmae.evaluate.common import write_result

    result["seconds"] = round(time.time() - t0, 2)
    print("\n".join(lines))
    write_result(args.json, result)
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def cmd_linprobe(args: argparse.Namespace) -> int:
    from gmae.evaluate.common import envelope, split_features

    t0 = time.time()
    loaded, device = _load(args)
    splits = [args.train_split, args.val_split]
    settings: dict[str, Any] = {"recipe": args.recipe, "seed": args.seed}
    if args.recipe == "cached":
        from gmae.evaluate.linprobe import cached_linprobe

        (train, val), data = split_features(
            loaded, args.data, splits, device, args.batch_size, args.num_workers, args.limit,
            args.seed, args.crop_pct,
        )  # fmt: skip
        settings.update(
            solver="lbfgs", wd_grid=args.wd, max_iter=args.max_iter, holdout=args.holdout
        )
        results = cached_linprobe(
            train, val, data["num_classes"], wds=args.wd, max_iter=args.max_iter,
            holdout=args.holdout, seed=args.seed,
        )  # fmt: skip
    else:
        results, data = _mae_linprobe(args, loaded, device, splits)
        settings.update(
            optimizer="lars", epochs=args.epochs, warmup_epochs=args.warmup_epochs,
            blr=args.blr, weight_decay=args.weight_decay, batch_size=args.batch_size,
            accum_iter=args.accum_iter, max_steps=args.max_steps,
        )  # fmt: skip
    result = envelope("linprobe", loaded, data, settings)
    result["results"] = results
    lines = [f"linear probe ({args.recipe}) on {args.data}: {data['splits']}"]
    for kind in ("cls", "mean"):
        r = results[kind]
        lines.append(f"  {kind:5s} top-1 {_fmt(r['top1'])}  top-5 {_fmt(r['top5'])}")
    return _finish(args, result, lines, t0)


def _mae_linprobe(args, loaded, device, splits):
    from gmae.data import eval_transform, pretrain_transform
    from gmae.evaluate.common import dataset_classes, load_split, make_loader
    from gmae.evaluate.linprobe import mae_linprobe

    size = loaded.img_size
    # MAE's linprobe augmentation: RandomResizedCrop (default scale 0.08-1, bicubic) + flip.
    train_ds = load_split(
        args.data, splits[0], pretrain_transform(size, (0.08, 1.0)), args.limit, args.seed
    )
    val_ds = load_split(
        args.data, splits[1], eval_transform(size, args.crop_pct), args.limit, args.seed
    )
    classes = dataset_classes(train_ds)
    if dataset_classes(val_ds) != classes:
        raise GmaeError(f"splits {', '.join(splits)} of {args.data!r} have different class lists")
    train_loader = make_loader(
        train_ds, args.batch_size, args.num_workers, shuffle=True, drop_last=True,
        seed=args.seed, device=device,
    )  # fmt: skip
    if len(train_loader) == 0:
        raise GmaeError(f"fewer training images ({len(train_ds)}) than one batch")
    val_loader = make_loader(val_ds, args.batch_size, args.num_workers, device=device)
    results = mae_linprobe(
        loaded.model, train_loader, val_loader, len(classes), device, epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, base_lr=args.blr, weight_decay=args.weight_decay,
        accum_iter=args.accum_iter, max_steps=args.max_steps,
    )  # fmt: skip
    data = {
        "spec": args.data,
        "splits": {splits[0]: len(train_ds), splits[1]: len(val_ds)},
        "num_classes": len(classes),
        "limit": args.limit,
        "img_size": size,
        "crop_pct": args.crop_pct,
    }
    return results, data


def cmd_knn(args: argparse.Namespace) -> int:
    from gmae.evaluate.common import envelope, split_features
    from gmae.evaluate.knn import knn_eval

    t0 = time.time()
    loaded, device = _load(args)
    (train, val), data = split_features(
        loaded, args.data, [args.train_split, args.val_split], device, args.batch_size,
        args.num_workers, args.limit, args.seed, args.crop_pct,
    )  # fmt: skip
    results = knn_eval(train, val, data["num_classes"], args.k, args.temperature)
    result = envelope(
        "knn", loaded, data, {"k": args.k, "temperature": args.temperature, "seed": args.seed}
    )
    result["results"] = results
    lines = [f"kNN (k={args.k}, T={args.temperature}) on {args.data}: {data['splits']}"]
    for kind, r in results.items():
        lines.append(
            f"  {kind:5s} kNN top-1 {_fmt(r['knn_top1'])}  top-5 {_fmt(r['knn_top5'])}  "
            f"1-NN (val, leave-one-out) {_fmt(r['nn1_loo_top1'])}"
        )
    return _finish(args, result, lines, t0)


def cmd_finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from gmae.evaluate.common import dataset_classes, envelope, load_split
    from gmae.evaluate.finetune import finetune, finetune_config, finetune_transforms

    t0 = time.time()
    cfg = finetune_config(
        args.preset, epochs=args.epochs, batch_size=args.batch_size, max_steps=args.max_steps,
        accum_iter=args.accum_iter, base_lr=args.blr, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        layer_decay=args.layer_decay, drop_path=args.drop_path, clip_grad=args.clip_grad,
        auto_augment=args.aa, reprob=args.reprob, mixup=args.mixup, cutmix=args.cutmix,
        smoothing=args.smoothing, ema_decay=args.ema_decay, amp=args.amp, seed=args.seed,
    )  # fmt: skip
    if args.crop_pct != 1.0:
        cfg.eval_crop_pct = args.crop_pct
    loaded, device = _load(args)
    mean = [float(v) for v in loaded.model.normalize.mean.flatten()]
    std = [float(v) for v in loaded.model.normalize.std.flatten()]
    train_tf, val_tf = finetune_transforms(cfg, loaded.img_size, mean, std)
    train_ds = load_split(args.data, args.train_split, train_tf, args.limit, args.seed)
    val_ds = load_split(args.data, args.val_split, val_tf, args.limit, args.seed)
    classes = dataset_classes(train_ds)
    if dataset_classes(val_ds) != classes:
        raise GmaeError(f"splits of {args.data!r} have different class lists")
    results = finetune(loaded.model, train_ds, val_ds, len(classes), cfg, device, args.num_workers)
    data = {
        "spec": args.data,
        "splits": {args.train_split: len(train_ds), args.val_split: len(val_ds)},
        "num_classes": len(classes),
        "limit": args.limit,
        "img_size": loaded.img_size,
    }
    result = envelope("finetune", loaded, data, {"preset": args.preset, **dataclasses.asdict(cfg)})
    result["results"] = results
    lines = [
        f"fine-tune ({args.preset}) on {args.data}: {results['steps']} steps, "
        f"top-1 {_fmt(results['top1'])}  top-5 {_fmt(results['top5'])}  "
        f"(best top-1 {_fmt(results['best_top1'])})"
    ]
    if "ema" in results:
        lines.append(f"  EMA top-1 {_fmt(results['ema']['top1'])}")
    return _finish(args, result, lines, t0)


def cmd_recon(args: argparse.Namespace) -> int:
    from gmae.data import eval_transform
    from gmae.evaluate.common import envelope, load_split, make_loader
    from gmae.evaluate.recon import is_mae, recon_eval

    t0 = time.time()
    loaded, device = _load(args)
    if not hasattr(loaded.model, "reconstruct"):
        raise GmaeError(f"{args.ckpt} has no decoder (encoder-only checkpoint): cannot reconstruct")
    if args.num_images < 1:
        raise GmaeError(f"--num-images must be at least 1, got {args.num_images}")
    limit = min(args.num_images, args.limit or args.num_images)
    ds = load_split(
        args.data, args.val_split, eval_transform(loaded.img_size, args.crop_pct), limit, args.seed
    )
    ratios = args.mask_ratios or sorted({loaded.mask_ratio, 0.0}, reverse=True)
    loader = make_loader(ds, args.batch_size, args.num_workers, device=device)
    results = recon_eval(loaded.model, loader, device, ratios, seed=args.seed)
    model = loaded.model
    data = {
        "spec": args.data,
        "splits": {args.val_split: len(ds)},
        "img_size": loaded.img_size,
        "crop_pct": args.crop_pct,
    }
    settings = {
        "mask_ratios": ratios,
        "seed": args.seed,
        "borrows_patch_stats": bool(is_mae(model) and model.norm_pix_loss),
    }
    result = envelope("recon", loaded, data, settings)
    result["results"] = results
    lines = [f"reconstruction ({loaded.name}) on {args.data} {args.val_split}: {len(ds)} images"]
    for r in results:
        lines.append(
            f"  mask {r['mask_ratio']:.2f}: masked PSNR {_fmt(r['masked_psnr'])} SSIM "
            f"{_fmt(r['masked_ssim'])} | whole PSNR {_fmt(r['psnr'])} SSIM {_fmt(r['ssim'])}"
        )
    return _finish(args, result, lines, t0)
