"""Command-line entry points of gmae.report (registered by gmae.cli): ``gmae report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.devices import DEVICE_HELP
from gmae.loading import GMAE_CKPT_HELP, MAE_CKPT_HELP


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    p = subparsers.add_parser(
        "report",
        help="one HTML page with every zero-shot result of a GMAE checkpoint",
        description="Reconstructions, depth layers, edges (BSDS500 val, with Canny and "
        "ODS/OIS/AP), figure-ground (Weizmann horses, mIoU), Gaussian statistics and, for a "
        "checkpoint trained on dead leaves, occlusion order on dead-leaves test scenes: "
        "OUT/index.html (self-contained) with its PNGs and OUT/report.json.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help=GMAE_CKPT_HELP)
    p.add_argument("--out", required=True, type=Path, help="output folder (index.html, PNGs)")
    p.add_argument("--mae-ckpt", type=Path, help=MAE_CKPT_HELP)
    p.add_argument("--num-images", type=int, help="BSDS500 and horse images, each (default 6)")
    p.add_argument("--quick", action="store_true", help="small and fast (2 images, 5 thresholds)")
    p.add_argument(
        "--metrics",
        type=Path,
        help="the run's metrics.jsonl, for the training curves (default: the one next to --ckpt)",
    )
    p.add_argument(
        "--occlusion-data",
        metavar="SPEC",
        help="dead-leaves spec for the occlusion section (default: the checkpoint's own data.spec "
        "when it is deadleaves...; no section otherwise)",
    )
    p.add_argument(
        "--occlusion-images",
        type=int,
        metavar="N",
        help="dead-leaves test scenes scored (default 24, quick 8)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.report.builders import build_report

    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    mae = load_mae_or_gmae(args.mae_ckpt, None, args.device) if args.mae_ckpt else None
    page = build_report(
        model, args.out, mae_model=mae, num_images=args.num_images, quick=args.quick,
        title=f"GMAE zero-shot report: {args.ckpt.name}", checkpoint=args.ckpt,
        metrics=args.metrics, occlusion_data=args.occlusion_data,
        occlusion_images=args.occlusion_images,
    )  # fmt: skip
    print(f"wrote {page}")
    return 0
