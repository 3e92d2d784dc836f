"""Paired bootstrap of two `gmae eval boundaries` results (per-image F on the same images).

    python scripts/paired_edges.py A.json B.json [--json OUT.json]

Prints mean F of each, the mean difference A - B with its 95 % bootstrap CI, and the sign-flip
p-value. Claim "A beats B" only when the whole CI is above 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmae import io as gio
from gmae.evaluate.paired import compare_boundaries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = compare_boundaries(json.loads(args.a.read_text()), json.loads(args.b.read_text()))
    r = {"a": str(args.a), "b": str(args.b), **r}
    lo, hi = r["ci"]
    print(
        f"{args.a.stem} {r['mean_a']:.4f} vs {args.b.stem} {r['mean_b']:.4f} on {r['n']} images: "
        f"diff {r['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], p {r['p_sign_flip']:.4f}"
    )
    if args.json:
        gio.write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
