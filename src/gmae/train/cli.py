"""Command-line entry points of gmae.train (registered by gmae.cli): ``gmae pretrain`` and
``gmae bench train``. Heavy imports (torch) happen inside the command functions."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.errors import GmaeError


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    from gmae.cli import command_group
    from gmae.devices import add_device_argument
    from gmae.train.config import preset_names

    p = subparsers.add_parser(
        "pretrain",
        help="pretrain MAE or GMAE (torchrun for several GPUs / nodes)",
        description="Pretrain MAE or GMAE. Multi-GPU: torchrun --nproc_per_node N -m gmae "
        "pretrain ... (see docs/training.md).",
    )
    p.add_argument(
        "--config",
        help=f"preset name ({', '.join(preset_names())}) or a YAML file; "
        "default with --resume: the checkpoint's config",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set optim.epochs=10 model.num_gaussians=64 "
        "(values parsed as YAML)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="continue from PATH, or from OUT/last.pt if there is one (else start fresh)",
    )
    p.add_argument("--max-steps", type=int, help="stop (saving last.pt) after this many steps")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an --out that gmae did not create even if it holds files the run "
        "replaces (config.yaml, metrics.jsonl, tb/, vis/, checkpoint-*.pt)",
    )
    p.set_defaults(func=cmd_pretrain)

    bench = command_group(subparsers, groups, "bench", "Speed and memory benchmarks")
    b = bench.add_parser(
        "train",
        help="training step time of GMAE vs MAE, and the renderer's share",
        description="Median forward+backward+optimizer step time of GMAE and MAE (same encoder "
        "and decoder) on the CPU presets, and the share of the GMAE step spent rendering.",
    )
    b.add_argument(
        "--presets",
        nargs="+",
        default=["imagenette64", "cifar10"],
        help="preset suffixes: gmae_tiny_<X> and mae_tiny_<X> are compared",
    )
    b.add_argument("--batch-size", type=int, help="default: the presets' batch size")
    b.add_argument("--repeats", type=int, default=5, help="timed steps (median reported)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    add_device_argument(b)
    b.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="autocast dtype of the timed steps (CUDA only), as run.amp in training",
    )
    b.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's); 1 gives the steadiest CPU times on a "
        "shared machine",
    )
    b.add_argument("--json", type=Path, help="write the results here")
    b.add_argument(
        "--k-curve",
        nargs="+",
        metavar="K[:C]",
        help="instead: the GMAE step of the first preset at these k (scale cap C), the "
        "renderer's compiled kernel vs its PyTorch loops side by side, with the render share",
    )
    b.set_defaults(func=cmd_bench_train)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from gmae.train import distributed
    from gmae.train.config import config_from_dict, config_to_dict
    from gmae.train.engine import pretrain

    if args.max_steps is not None and args.max_steps < 1:
        raise GmaeError("--max-steps must be at least 1")
    # Everything a user can get wrong is checked here, before data or model are built, by rank
    # 0 alone: under torchrun the other ranks get its config (or its error), so ranks whose
    # --out is not on a shared file system cannot disagree (the engine's decide_resume then
    # tells every rank which checkpoint rank 0 resumes from).
    raw = distributed.from_rank0(lambda: config_to_dict(_checked_config(args)), "pretrain")
    cfg = config_from_dict(raw)
    summary = pretrain(
        cfg, args.out, resume=args.resume, max_steps=args.max_steps, force=args.force
    )
    if summary["interrupted"]:
        return 3  # stopped early by SIGTERM / SIGUSR1 / Ctrl-C, last.pt saved: resume later
    if summary["rank"] == 0:
        print(f"done: step {summary['step']}, epoch {summary['epoch']}, run in {summary['out']}")
    return 0


def _checked_config(args: argparse.Namespace):
    """The run's config (--config, or the checkpoint's with --resume), checked with --out."""
    from gmae.train.checkpoint import check_metadata, load_checkpoint, model_kwargs, stored_config
    from gmae.train.config import apply_overrides, config_from_dict, load_config
    from gmae.train.outputs import LAST, check_run_dir, resume_path

    if args.config is not None:
        cfg = load_config(args.config, args.overrides)
    else:
        if args.resume is None:
            raise GmaeError("--config is required (unless resuming with --resume)")
        path = args.out / LAST if args.resume is True else Path(args.resume)
        ckpt = load_checkpoint(path)
        # The stored config is untrusted: check it against the checkpoint's own tensors.
        check_metadata(stored_config(ckpt["config"], path), ckpt["model"], path)
        cfg = config_from_dict(apply_overrides(ckpt["config"], args.overrides))
        del ckpt
    model_kwargs(cfg)  # the model section against the model's signature and sane bounds
    resume_path(args.out, args.resume)
    check_run_dir(args.out, args.force)
    return cfg


def cmd_bench_train(args: argparse.Namespace) -> int:
    from gmae.train.bench import bench_train

    bench_train(
        args.presets,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        threads=args.threads,
        amp=args.amp,
        json_path=args.json,
        k_curve=args.k_curve,
    )
    return 0
