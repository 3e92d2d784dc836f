"""What the depth order is worth over training: `gmae zeroshot order` on every saved checkpoint.

For each run directory, scores each ``checkpoint-*.pt`` (the epoch checkpoints a run keeps) with
``gmae zeroshot order`` at the training mask ratio and at mask 0, writing
``OUT/<run name>/<checkpoint>.json``; a file already there for the same checkpoint and images
is reused, so an interrupted call picks up where it stopped (one holding anything else stops the
script: it is never overwritten). Then prints one table: per checkpoint, the model order's PSNR
minus a random order's (masked patches at the training ratio, whole image at mask 0) with its
95 % bootstrap CI. docs/results.md quotes it.

    python scripts/order_trend.py runs/white_e10/white_anchor runs/anchor_e10_lum \\
        --out results/health_sweep/order_trend --num-images 128
    python scripts/order_trend.py --out results/health_sweep/order_trend   # table only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from gmae.evaluate.paired import format_diff


def reusable(target: Path, ckpt: Path, data: str, split: str, num_images: int) -> bool:
    """True if ``target`` holds this checkpoint's ablation on these images; False if it does
    not exist; a one-line exit if it holds something else (it is never overwritten)."""
    if not target.exists():
        return False
    try:
        r = json.loads(target.read_text())
        recorded = (Path(r["ckpt"]).resolve(), r["source"], r["n_images"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f"order_trend: {target} is not a readable order ablation ({e}); choose another --out"
        ) from None
    if recorded[:2] != (ckpt.resolve(), {"data": data, "split": split}):
        raise SystemExit(
            f"order_trend: {target} holds another ablation (not {ckpt} on {data} {split}); "
            "choose another --out"
        )
    if recorded[2] != num_images:  # e.g. a dataset smaller than --num-images
        raise SystemExit(
            f"order_trend: {target} was scored on {recorded[2]} images, not {num_images}; "
            f"ask for --num-images {recorded[2]} to reuse it, or choose another --out"
        )
    return True


def pending(run: Path, out: Path, data: str, split: str, num_images: int) -> list[tuple]:
    """(checkpoint, target JSON) for each checkpoint of ``run`` not yet scored in ``out``
    (exits if a file there holds anything else), so that every file is checked before the
    first ablation runs."""
    todo = []
    for ckpt in sorted(run.glob("checkpoint-*.pt")):
        target = out / run.name / f"{ckpt.stem}.json"
        if not reusable(target, ckpt, data, split, num_images):
            todo.append((ckpt, target))
    return todo


def score(ckpt: Path, target: Path, data: str, split: str, num_images: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "gmae", "zeroshot", "order", "--ckpt", str(ckpt)]
    cmd += ["--data", data, "--split", split, "--num-images", str(num_images)]
    cmd += ["--json", str(target), "--no-progress"]
    print(f"order_trend: {ckpt}", file=sys.stderr)
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        raise SystemExit(f"order_trend: gmae zeroshot order failed on {ckpt}") from None


def worth_cell(block: dict) -> str:
    """Model order minus a random order: mean and 95 % CI, in dB."""
    return format_diff(block["orders"]["random"]["model_minus_this"])


def trend_table(out: Path) -> list[str]:
    lines = [
        "| run | checkpoint | images | masked PSNR (model order) | order worth, masked "
        "| order worth, mask 0 |",
        "|---|---|---|---|---|---|",
    ]
    for run in sorted(p for p in out.iterdir() if p.is_dir()):
        for f in sorted(run.glob("checkpoint-*.json")):
            r = json.loads(f.read_text())
            by_ratio = {x["mask_ratio"]: x for x in r["results"]}
            masked = [x["masked_psnr"] for m, x in by_ratio.items() if m > 0 and "masked_psnr" in x]
            whole = [x["psnr"] for m, x in by_ratio.items() if m == 0]
            cells = [run.name, f.stem, str(r["n_images"])]
            cells.append(f"{masked[0]['orders']['model']['mean']:.2f}" if masked else "-")
            cells.append(worth_cell(masked[0]) if masked else "-")
            cells.append(worth_cell(whole[0]) if whole else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run directories (none: table only)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", default="imagenette-128")
    ap.add_argument("--split", default="val")
    ap.add_argument("--num-images", type=int, default=128)
    args = ap.parse_args()
    # Every input is checked before the first (minutes-long) ablation runs.
    for run in args.runs:
        if not run.is_dir():
            raise SystemExit(f"order_trend: not a directory: {run}")
        if not any(run.glob("checkpoint-*.pt")):
            raise SystemExit(f"order_trend: no checkpoint-*.pt in {run}")
    names = [run.name for run in args.runs]
    if len(set(names)) < len(names):
        raise SystemExit(f"order_trend: runs share a directory name in --out: {names}")
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"order_trend: --out is not a directory: {args.out}")
    if args.num_images < 2:
        raise SystemExit("order_trend: --num-images must be at least 2")
    todo = [t for run in args.runs
            for t in pending(run, args.out, args.data, args.split, args.num_images)]  # fmt: skip
    for ckpt, target in todo:
        score(ckpt, target, args.data, args.split, args.num_images)
    if not args.out.is_dir():
        raise SystemExit(f"order_trend: no such directory: {args.out}")
    print("\n".join(trend_table(args.out)))


if __name__ == "__main__":
    main()
