"""Compare two training recipes over several seeds each, every run's `gmae eval recon` result
scored on the same images with the same masks (per-image masked PSNR by default).

    python scripts/seed_compare.py --a A_seed0.json A_seed1.json --b B_seed0.json B_seed1.json \
        [--metric masked_psnr] [--json OUT.json]

Prints each seed's mean, the difference of the seed-averaged means with a two-level bootstrap CI
(seeds, then images), and the exact seed-label permutation p-value. A paired test of one run
against one run (scripts/paired_compare.py) resamples images only, so it cannot tell a recipe's
effect from a lucky seed; this one can, given enough seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmae import io as gio
from gmae.evaluate.paired import RECON_METRICS, compare_recon_seeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, nargs="+", required=True, help="recipe A: one per seed")
    ap.add_argument("--b", type=Path, nargs="+", required=True, help="recipe B: one per seed")
    ap.add_argument(
        "--metric",
        default="masked_psnr",
        choices=RECON_METRICS,
        help="the per-image number compared (at the first result's first mask ratio)",
    )
    ap.add_argument("--json", type=Path, help="also write the comparison here")
    args = ap.parse_args()
    r = compare_recon_seeds(
        [json.loads(p.read_text()) for p in args.a],
        [json.loads(p.read_text()) for p in args.b],
        metric=args.metric,
    )
    r = {"a": [str(p) for p in args.a], "b": [str(p) for p in args.b], **r}
    lo, hi = r["ci"]
    for name, paths, means in (("A", args.a, r["seed_means_a"]), ("B", args.b, r["seed_means_b"])):
        print(f"{name}: " + ", ".join(f"{p.stem} {m:.4f}" for p, m in zip(paths, means)))
    print(
        f"A {r['mean_a']:.4f} ({r['seeds_a']} seeds) vs B {r['mean_b']:.4f} ({r['seeds_b']} "
        f"seeds) on {r['n']} images: diff {r['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], "
        f"seed-permutation p {r['p_seed_permutation']:.3f} (smallest possible "
        f"{r['p_smallest_possible']:.3f})"
    )
    if args.json:
        gio.write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
