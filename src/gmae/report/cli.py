"""Command-line entry points of gmae.report (registered by gmae.cli): ``gmae zeroshot layers``
(its output is an HTML page, so it lives here and gmae.zeroshot never imports gmae.report) and
``gmae report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmae.devices import DEVICE_HELP
from gmae.errors import GmaeError
from gmae.loading import GMAE_CKPT_HELP, MAE_CKPT_HELP
from gmae.zeroshot.cli import GROUP_HELP as ZEROSHOT_HELP
from gmae.zeroshot.cli import add_common_options


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser. gmae.cli calls this before
    gmae.zeroshot.cli's ``register``, so that ``layers`` stays first in ``gmae zeroshot``."""
    from gmae.cli import command_group

    zs = command_group(subparsers, groups, "zeroshot", ZEROSHOT_HELP)
    p = zs.add_parser(
        "layers",
        help="depth-sorted Gaussians: first-K and depth-group renders, depth maps, scatter",
        description="Render one photo's Gaussians sorted by camera depth (nearest first): the "
        "first K, L equal depth groups alone and cumulative, two depth maps and a scatter of the "
        "centres, at the photo's own resolution. Writes PNGs and OUT/index.html.",
    )
    add_common_options(p, batch=False)
    p.add_argument("--image", required=True, type=Path, help="the photo (any size)")
    p.add_argument("--out", required=True, type=Path, help="output folder (PNGs and index.html)")
    p.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256],
                   help="numbers of nearest Gaussians to render (all is always added)")  # fmt: skip
    p.add_argument("--groups", type=int, default=8, help="equal depth groups L")
    p.add_argument("--max-side", type=int, default=0,
                   help="shrink photos whose longer side exceeds this (0: never)")  # fmt: skip
    p.set_defaults(func=cmd_layers)

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


def cmd_layers(args: argparse.Namespace) -> int:
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.photos import load_photo, shrink_photo
    from gmae.report.layers import layers_page
    from gmae.zeroshot.common import check_health

    if any(k < 0 for k in args.ks):
        raise GmaeError("--ks must be non-negative")
    photo = shrink_photo(load_photo(args.image), args.max_side)
    model = load_mae_or_gmae(args.ckpt, "gmae", args.device)
    page = layers_page(model, photo, args.out, ks=args.ks, groups=args.groups)
    print(f"wrote {page}")
    check_health(model, [photo])  # last, so that the warning is the last thing people see
    return 0


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
