"""``gmae demo``: pretrain a tiny GMAE on real photos for a few minutes, then write a report.

The README's first command. It uses the same engine and report as everything else: the
``gmae_tiny_imagenette64`` preset shrunk to fit a few CPU minutes, then ``gmae.report``'s page
(reconstructions, the Gaussians in 3-D, depth-ordered layers, edges, figure-ground) with the
training curves. The learning-rate schedule spans exactly --steps optimizer steps
(optim.total_steps). Re-running continues the same run instead of starting over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# A GMAE small enough to learn visible structure in a few CPU minutes: a 6-block ViT-Tiny-wide
# encoder and a 2-block decoder, 64 Gaussians for 64 patches of 8 px at 64 px.
DEMO_OVERRIDES = (
    "model.encoder=tiny",
    "model.depth=6",
    "model.decoder_dim=128",
    "model.decoder_depth=2",
    "model.decoder_num_heads=4",
    "model.num_gaussians=64",
    "optim.batch_size=32",
    "optim.base_lr=2.0e-3",
    "optim.warmup_epochs=0.05",
    "optim.epochs=1",
    "data.num_workers=1",
    "run.log_every=5",
    "run.vis_images=8",
)


def register(subparsers, groups) -> None:
    p = subparsers.add_parser(
        "demo",
        help="pretrain a tiny GMAE on real images for a few minutes and write an HTML report",
        description="Pretrain a tiny GMAE on real photos for a few minutes, then write an HTML "
        "report. The gmae_tiny_imagenette64 preset shrunk to a few CPU minutes, then the page of "
        "gmae report (reconstructions, depth-ordered layers, edges, figure-ground, the "
        "Gaussians in 3-D) with the training curves; the learning-rate schedule spans exactly "
        "--steps steps. Re-running continues the same run instead of starting over.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument(
        "--steps",
        type=int,
        default=300,
        help="optimizer steps, the schedule's length (default 300)",
    )
    p.add_argument("--data", default="imagenette-128", help="dataset spec (default imagenette-128)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from gmae.report import build_report
    from gmae.train.checkpoint import load_pretrained
    from gmae.train.config import load_config
    from gmae.train.engine import pretrain

    out = Path(args.out)
    # The schedule spans exactly the steps run (one epoch of Imagenette is 295 steps).
    overrides = [*DEMO_OVERRIDES, f"data.spec={args.data}", f"optim.total_steps={args.steps}"]
    overrides += args.set
    cfg = load_config("gmae_tiny_imagenette64", overrides)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"gmae demo: pretraining a tiny GMAE on {args.data} for {cfg.optim.total_steps} steps "
        f"(learning-rate schedule over the same steps) -> {out}"
    )
    pretrain(cfg, out / "run", resume=True)

    model, _ = load_pretrained(out / "run" / "last.pt")
    print("gmae demo: writing the report (reconstructions, layers, edges, figure-ground)")
    page = build_report(
        model, out, quick=True, title="gmae demo: a tiny GMAE after a few minutes",
        checkpoint=out / "run" / "last.pt", mae_option=None,
    )  # fmt: skip
    print(f"gmae demo: done. Open {page.resolve()} in a browser")
    return 0
