"""Paired bootstrap of two results scored on the same images: two `gmae eval boundaries`
results (per-image F) or two `gmae eval recon` results (per-image masked PSNR by default).

    python scripts/paired_compare.py A.json B.json [--metric masked_psnr] [--json OUT.json]

Prints the mean of each, the mean difference A - B with its 95 % bootstrap CI, and the sign-flip
p-value. Claim "A beats B" only when the whole CI is above 0. For recon results also the mean
difference within each quarter of the images ranked by B's score (B's hardest first): where the
difference sits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmae import io as gio
from gmae.evaluate.paired import RECON_METRICS, compare_results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument(
        "--metric",
        default="masked_psnr",
        choices=RECON_METRICS,
        help="for recon results: the per-image number compared (at A's first mask ratio)",
    )
    ap.add_argument("--json", type=Path, help="also write the comparison here")
    args = ap.parse_args()
    r = compare_results(
        json.loads(args.a.read_text()), json.loads(args.b.read_text()), metric=args.metric
    )
    r = {"a": str(args.a), "b": str(args.b), **r}
    lo, hi = r["ci"]
    print(
        f"{args.a.stem} {r['mean_a']:.4f} vs {args.b.stem} {r['mean_b']:.4f} on {r['n']} images: "
        f"diff {r['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], p {r['p_sign_flip']:.4f}"
    )
    if r.get("by_quartile_of_b"):
        print("by quarter of B's images, B's lowest first: " + ", ".join(
            f"{q['mean_diff']:+.4f}" for q in r["by_quartile_of_b"]))  # fmt: skip
    if args.json:
        gio.write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
