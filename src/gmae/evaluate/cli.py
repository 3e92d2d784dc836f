"""Command-line entry points of gmae.evaluate (registered by gmae.cli).

``gmae eval boundaries``: the BSDS500 boundary benchmark (ODS / OIS / AP) on a directory of PNG
boundary maps. Heavy imports live inside the command functions.
"""

from __future__ import annotations

import argparse

from gmae.cli import command_group


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    evals = command_group(subparsers, groups, "eval", "Evaluate encoders and predictions")
    p = evals.add_parser(
        "boundaries",
        help="BSDS500 boundary benchmark (ODS / OIS / AP) of PNG boundary maps",
        description=(
            "Score boundary maps (PNG, 8- or 16-bit grayscale, higher = more boundary) against "
            "BSDS500 human annotations (<id>.mat ground truth, paired by file stem) as the "
            "original BSDS500 benchmark does: per threshold, binarise, thin, match pixels "
            "one-to-one within max-dist x image diagonal, then ODS, OIS and AP."
        ),
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="directory of <id>.png maps")
    p.add_argument("--gt", required=True, metavar="DIR", help="directory of <id>.mat ground truth")
    p.add_argument(
        "--nthresh", type=int, default=99, help="number of thresholds (default: %(default)s)"
    )
    p.add_argument(
        "--max-dist",
        type=float,
        default=0.0075,
        help="matching tolerance as a fraction of the image diagonal (default: %(default)s)",
    )
    p.add_argument(
        "--thin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="thin the binarised maps to one-pixel-wide boundaries (default: on)",
    )
    p.add_argument(
        "--matcher",
        choices=("mincost", "maxcard"),
        default="mincost",
        help="mincost: as the original (max-cardinality, least total distance); maxcard: any "
        "max-cardinality matching (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: all CPUs; 1 = no pool)",
    )
    p.add_argument("--json", required=True, metavar="FILE", help="write the results here (JSON)")
    # --no-progress as every other command spells it; --quiet kept for old scripts.
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                   help="no progress bar")  # fmt: skip
    p.set_defaults(func=_boundaries)

    # linprobe, knn, finetune, recon (gmae.evaluate.commands)
    from gmae.evaluate.commands import add_parsers

    add_parsers(evals)


def _boundaries(args: argparse.Namespace) -> int:
    from gmae.evaluate.boundaries import evaluate_boundaries
    from gmae.io import write_json

    result = evaluate_boundaries(
        args.pred,
        args.gt,
        nthresh=args.nthresh,
        max_dist=args.max_dist,
        thin=args.thin,
        workers=args.workers,
        matcher=args.matcher,
        progress=not args.no_progress,
    )
    out = result.to_dict()
    out["settings"].update(pred=str(args.pred), gt=str(args.gt))
    write_json(args.json, out)
    s = result.settings
    print(
        f"ODS {result.ods:.4f} (R {result.ods_recall:.4f} P {result.ods_precision:.4f} "
        f"t {result.ods_threshold:.3f})  OIS {result.ois:.4f}  AP {result.ap:.4f}  "
        f"[{s['n_images']} images, {s['seconds']:.1f} s] -> {args.json}"
    )
    return 0
