"""Command-line entry points of gmae.data (registered by gmae.cli).

gmae data prepare [NAME ...] [--data-dir D]   verify + extract archives (all by default)
gmae data info SPEC [--data-dir D]            images per split and class
"""

from __future__ import annotations

import argparse
from collections import Counter

from gmae.cli import command_group
from gmae.data.archives import ARCHIVES, is_prepared, prepare
from gmae.errors import GmaeError


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    data = command_group(subparsers, groups, "data", "prepare and inspect data sets")

    p = data.add_parser(
        "prepare",
        help="verify and extract the offline data archives",
        description="Verify the offline archives against SHA256SUMS and extract them into the "
        "data directory (GMAE_DATA_DIR, default ~/.cache/gmae). Already prepared ones are skipped.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(ARCHIVES)}"
    )
    _data_dir_arg(p)
    p.set_defaults(func=_prepare)

    p = data.add_parser(
        "info",
        help="count images per split and class",
        description="Count the images per split and class of a data set spec (no decoding).",
    )
    p.add_argument("spec", help="cifar10, imagenette-128 or imagefolder:/path/to/root")
    _data_dir_arg(p)
    p.set_defaults(func=_info)


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="where extracted data sets live (default: $GMAE_DATA_DIR or ~/.cache/gmae)",
    )


def _prepare(args: argparse.Namespace) -> int:
    names = args.names or list(ARCHIVES)
    unknown = [n for n in names if n not in ARCHIVES]
    if unknown:
        raise GmaeError(f"unknown data set {unknown[0]!r}; known: {', '.join(ARCHIVES)}")
    for name in dict.fromkeys(names):  # dedupe, keep order
        done = is_prepared(name, args.data_dir)
        path = prepare(name, args.data_dir)
        print(f"{name}: {'already prepared in' if done else 'extracted to'} {path}", flush=True)
    return 0


def _info(args: argparse.Namespace) -> int:
    from gmae.data.datasets import build_dataset, dataset_splits

    splits = dataset_splits(args.spec, args.data_dir)
    counts: dict[str, Counter] = {}
    classes: list[str] = []
    for split in splits:
        ds = build_dataset(args.spec, split, data_root=args.data_dir)
        by_idx = Counter(ds.targets)
        counts[split] = Counter({c: by_idx[i] for i, c in enumerate(ds.classes)})
        classes += [c for c in ds.classes if c not in classes]
        print(f"{split}: {ds.root}")
    print(_table(classes, splits, counts))
    print(f"{len(classes)} classes")
    return 0


def _table(classes: list[str], splits: list[str], counts: dict[str, Counter]) -> str:
    rows = [["class", *splits]]
    rows += [[c, *(str(counts[s][c]) for s in splits)] for c in classes]
    rows.append(["total", *(str(sum(counts[s].values())) for s in splits)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
