"""Command-line entry points of gmae.export (registered by gmae.cli):
``gmae export timm`` and ``gmae export checkpoint``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    from gmae.cli import command_group

    group = command_group(subparsers, groups, "export", "Export models to other formats")

    p = group.add_parser(
        "timm",
        help="the encoder as a timm VisionTransformer state dict (.safetensors)",
        description="Write the encoder as a timm VisionTransformer state dict with the timm "
        "model name and kwargs in the safetensors metadata. The timm model expects normalised "
        "images: (x - mean) / std with the stored mean / std (ImageNet's by default). Load with "
        "gmae.export.create_timm_model(path) or timm.create_model (see docs/evaluation.md).",
    )
    p.add_argument(
        "--ckpt", required=True, help="training .pt, compact .safetensors, MAE release or random"
    )
    p.add_argument("--config", help="with --ckpt random: preset name or YAML file")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--model-name", help="timm architecture name (default: by size)")
    p.add_argument(
        "--global-pool",
        choices=["token", "avg"],
        default="token",
        help="timm pooling: cls token or mean of patch tokens (default token)",
    )
    p.add_argument("--img-size", type=int, help="export for this input size")
    p.set_defaults(func=cmd_timm, out_kind="file")

    p = group.add_parser(
        "checkpoint",
        help="a training checkpoint as a compact .safetensors (weights + config)",
        description="Keep only the model weights (optionally fp16) and the resolved training "
        "config (JSON in the safetensors metadata): the format for committed models. Every "
        "gmae eval command and gmae.export.load_model read it.",
    )
    p.add_argument("--ckpt", required=True, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--fp16", action="store_true", help="store floating-point weights as fp16")
    p.set_defaults(func=cmd_checkpoint, out_kind="file")


def cmd_timm(args: argparse.Namespace) -> int:
    from gmae.export.timm import export_timm

    info = export_timm(
        args.ckpt, args.out, args.model_name, args.global_pool, args.config, args.img_size
    )
    kw = info["timm_kwargs"]
    print(
        f"wrote {info['out']}: timm {info['timm_model']} (embed_dim {kw['embed_dim']}, depth "
        f"{kw['depth']}, heads {kw['num_heads']}, patch {kw['patch_size']}, img {kw['img_size']}, "
        f"pool {kw['global_pool']}); feed it (x - {info['mean']}) / {info['std']}"
    )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from gmae.export.checkpoints import export_checkpoint

    info = export_checkpoint(args.ckpt, args.out, fp16=args.fp16)
    mb = info["bytes"] / 2**20
    print(f"wrote {info['out']}: {info['tensors_numel']:,} values, {mb:.1f} MiB")
    return 0
