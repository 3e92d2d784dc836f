"""Command-line entry points of gmae.export (registered by gmae.cli):
``gmae export timm``, ``gmae export hf`` and ``gmae export checkpoint``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.loading import CKPT_HELP


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    from gmae.cli import command_group

    group = command_group(subparsers, groups, "export", "Export models to other formats")

    p = group.add_parser(
        "timm",
        help="the encoder as a timm VisionTransformer (directory, or one .safetensors file)",
        description="Write the encoder as a timm VisionTransformer. --out DIR writes config.json "
        "(architecture, model_args, pretrained_cfg with our input size, mean / std and crop) and "
        "model.safetensors: timm.create_model('local-dir:DIR', pretrained=True) loads it and "
        "timm.data.resolve_data_config gives our eval preprocessing. --out FILE.safetensors "
        "writes one file with the timm name and kwargs in its metadata (load with "
        "gmae.export.create_timm_model). See docs/evaluation.md.",
    )
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument("--config", help="with --ckpt random: preset name or YAML file")
    p.add_argument(
        "--out", required=True, type=Path, help="output directory, or a .safetensors file"
    )
    p.add_argument(
        "--model-name",
        help="timm architecture name; it picks the ViT family, the stored model_args set the "
        "size (default: the standard ViT of that width and depth)",
    )
    p.add_argument(
        "--global-pool",
        choices=["token", "avg"],
        default="token",
        help="timm pooling: cls token or mean of patch tokens (default token)",
    )
    p.add_argument("--img-size", type=int, help="export for this input size (default: the model's)")
    p.set_defaults(func=cmd_timm, out_kind="file-or-dir")

    p = group.add_parser(
        "hf",
        help="a Hugging Face transformers directory (ViTMAEForPreTraining or ViTModel)",
        description="Write a transformers directory (config.json, model.safetensors, "
        "preprocessor_config.json): an MAE as ViTMAEForPreTraining (encoder, decoder, loss), any "
        "other model's encoder as ViTModel without pooler. Load with "
        "ViTModel.from_pretrained(DIR, add_pooling_layer=False) / "
        "ViTMAEForPreTraining.from_pretrained(DIR) "
        "and AutoImageProcessor.from_pretrained(DIR). Needs transformers.",
    )
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument("--config", help="with --ckpt random: preset name or YAML file")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--arch",
        choices=["auto", "vit", "vitmae"],
        default="auto",
        help="vitmae: ViTMAEForPreTraining (MAE only); vit: the encoder as ViTModel; auto: "
        "vitmae for MAE, vit otherwise (default auto)",
    )
    p.set_defaults(func=cmd_hf, out_kind="dir")

    p = group.add_parser(
        "checkpoint",
        help="a training checkpoint as a compact .safetensors (weights + config)",
        description="Keep only the model weights (optionally fp16) and the resolved training "
        "config (JSON in the safetensors metadata): the format for committed models. Every "
        "gmae eval command and gmae.export.load_model read it.",
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help="a gmae checkpoint that carries its training config: training .pt, compact "
        ".safetensors or save_pretrained directory",
    )
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


def cmd_hf(args: argparse.Namespace) -> int:
    from gmae.export.hf import export_hf

    info = export_hf(args.ckpt, args.out, args.arch, args.config)
    print(f"wrote {info['out']}: transformers {info['class']} ({', '.join(info['files'])})")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from gmae.export.checkpoints import export_checkpoint

    info = export_checkpoint(args.ckpt, args.out, fp16=args.fp16)
    mb = info["bytes"] / 2**20
    print(f"wrote {info['out']}: {info['tensors_numel']:,} values, {mb:.1f} MiB")
    return 0
