"""Is a layout that follows the image compatible with varied sizes and depths at this scale?

Pools every health row logged during the sweeps' training runs (results/health_sweep/*/
*.metrics.jsonl, fixed 64-image validation batch, steps >= --min-step) and reports the rank
correlation of the centre ratio with the within-image z std and with the size p90/p10 ratio, and
the largest centre ratio among rows that pass the two other checks (z std >= 0.05, p90/p10 >=
1.5). Writes --json. docs/results.md ("A layout that follows the image") quotes it.

    python scripts/centre_tradeoff.py --json results/health_sweep/centre_tradeoff.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy.stats import spearmanr

KEYS = ("health/centre_ratio", "health/z_std_within", "health/screen_p90_p10")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("results/health_sweep"))
    ap.add_argument("--min-step", type=int, default=100, help="skip the first steps (init noise)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    files = sorted(args.root.glob("*/*.metrics.jsonl"))
    if not files:
        raise SystemExit(f"{args.root}: no */*.metrics.jsonl")
    rows = []
    for f in files:
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r.get("step", 0) >= args.min_step and all(
                isinstance(r.get(k), float) and math.isfinite(r[k]) for k in KEYS
            ):
                rows.append({"run": f"{f.parent.name}/{f.name.split('.')[0]}", "step": r["step"],
                             **{k.split("/")[1]: r[k] for k in KEYS}})  # fmt: skip
    ratio = [r["centre_ratio"] for r in rows]
    z = [r["z_std_within"] for r in rows]
    size = [r["screen_p90_p10"] for r in rows]
    passing = [r for r in rows if r["z_std_within"] >= 0.05 and r["screen_p90_p10"] >= 1.5]
    best = max(passing, key=lambda r: r["centre_ratio"]) if passing else None
    out = {
        "command": "python scripts/centre_tradeoff.py --json " + str(args.json),
        "runs": len(files),
        "rows": len(rows),
        "min_step": args.min_step,
        "spearman_ratio_vs_z_std": spearmanr(ratio, z).statistic,
        "spearman_ratio_vs_size_p90_p10": spearmanr(ratio, size).statistic,
        "rows_ratio_ge_0.25": sum(x >= 0.25 for x in ratio),
        "rows_ratio_ge_0.25_passing_z_and_size": sum(r["centre_ratio"] >= 0.25 for r in passing),
        "rows_passing_z_and_size": len(passing),
        "best_ratio_passing_z_and_size": best,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
