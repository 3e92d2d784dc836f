"""Command-line entry points of gmae.export (registered by gmae.cli): ``gmae export timm``,
``gmae export hf``, ``gmae export checkpoint`` and ``gmae export gaussians``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.devices import DEVICE_HELP
from gmae.errors import GmaeError
from gmae.loading import CKPT_HELP, GMAE_CKPT_HELP


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

    p = group.add_parser(
        "gaussians",
        help="one image's Gaussians as a 3D Gaussian Splatting PLY",
        description="Predict one image's Gaussians (mask ratio 0) and write them as a binary "
        "3DGS PLY that common splat viewers open (see docs/zeroshot.md for the frame and the "
        "camera to view it from).",
    )
    p.add_argument("--ckpt", required=True, type=Path, help=GMAE_CKPT_HELP)
    p.add_argument(
        "--image", required=True, type=Path, help="the photo (resized to the model input)"
    )
    p.add_argument("--out", required=True, type=Path, help="output .ply")
    p.add_argument(
        "--frame",
        default="pinhole",
        choices=["pinhole", "gmae"],
        help="pinhole: for splat viewers; gmae: GMAE's own camera (docs/zeroshot.md)",
    )
    p.add_argument(
        "--cameras",
        type=Path,
        help="also write the viewpoint as an INRIA 3DGS cameras.json here (default: cameras.json "
        "next to --out; pinhole frame only)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_gaussians, out_kind="file")


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


def cmd_gaussians(args: argparse.Namespace) -> int:
    from gmae import io as gio
    from gmae.export.ply import DISTANCE, viewer_camera, write_ply
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.photos import load_photo, predict_gaussians

    photo = load_photo(args.image)
    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    g = predict_gaussians(model, [photo])
    if g.colors.shape[-1] != 3:
        raise GmaeError(
            f"PLY export needs an RGB model, this one has {g.colors.shape[-1]} channels"
        )
    write_ply(
        args.out, g.means[0], g.scales[0], g.quats[0], g.colors[0], g.opacities[0],
        frame=args.frame, comments=(f"source {Path(args.image).name}",),
    )  # fmt: skip
    h, w = photo.size
    if args.frame == "pinhole":
        cameras = args.cameras or Path(args.out).with_name("cameras.json")
        gio.write_json(cameras, [viewer_camera(w, h, Path(args.image).stem)])
        view = (
            f"pinhole camera at (0, 0, -{DISTANCE:g}) looking down +z, y down; "
            f"fx = {DISTANCE * w / 2:g}, fy = {DISTANCE * h / 2:g} px at {w}x{h} (written to "
            f"{cameras})"
        )
    else:
        view = f"gmae.render.Camera(mode='gmae', height={h}, width={w})"
    print(f"wrote {g.num_gaussians} Gaussians to {args.out}; view with a {view}")
    return 0
