"""Gaussian health over training, side by side: one row per (step, run) from runs' metrics.jsonl.

`gmae pretrain` logs the health statistics of a fixed held-out batch at every log step
(``health/*`` keys, docs/models.md). This prints them for a few steps of one or more runs as a
markdown table, with the median training speed of each run, so that two recipes trained on the
same schedule can be compared step by step:

    python scripts/health_trend.py results/health_sweep/anchor_e10/centre_control.metrics.jsonl \\
        results/health_sweep/refine_e10/refine1.metrics.jsonl --steps 100 300 450 730

A run is named by its metrics file's stem (``metrics`` gives way to the folder's name).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gmae import io as gio
from gmae.errors import GmaeError

KEYS = (
    "centre_ratio",
    "screen_p90_p10",
    "z_std_within",
    "masked_fraction",
    "depth_order_agreement",
    "pinned_size",
    "pinned_z",
)


def run_name(path: Path) -> str:
    return path.parent.name if path.stem == "metrics" else path.stem.removesuffix(".metrics")


def trend_table(runs: dict[str, list[dict]], steps: list[int], keys: list[str]) -> list[str]:
    """Markdown rows: for each step (the nearest logged step at or before it) and run, the
    health values; a last row per run gives the median images per second."""
    lines = ["| step | run | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for step in steps:
        for name, rows in runs.items():
            logged = [r for r in rows if r.get("step", 0) <= step and "health/" + keys[0] in r]
            if not logged:
                lines.append(f"| {step} | {name} |" + " - |" * len(keys))
                continue
            row = logged[-1]
            cells = []
            for k in keys:
                v = row.get("health/" + k)
                cells.append("-" if v is None else f"{v:.3f}")
            at = f"{step}" if row["step"] == step else f"{step} ({row['step']})"
            lines.append(f"| {at} | {name} | " + " | ".join(cells) + " |")
    for name, rows in runs.items():
        speed = [r["images_per_s"] for r in rows if "images_per_s" in r]
        if speed:
            lines.append(f"| images/s (median) | {name} | {statistics.median(speed):.1f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl files")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 300, 730])
    ap.add_argument("--keys", nargs="+", default=list(KEYS), help="health/<key> to show")
    args = ap.parse_args()
    runs = {}
    for path in args.metrics:
        name = run_name(path)
        if name in runs:
            raise SystemExit(f"health_trend: two runs named {name!r}; rename one file")
        try:
            runs[name] = gio.read_metrics(path)
        except GmaeError as e:
            raise SystemExit(f"health_trend: {e}") from None
        if not any("health/" + k in r for r in runs[name] for k in args.keys):
            raise SystemExit(f"health_trend: {path} logs none of health/{', '.join(args.keys)}")
    print("\n".join(trend_table(runs, sorted(args.steps), args.keys)))


if __name__ == "__main__":
    main()
