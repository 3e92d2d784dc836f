"""Training-step speed of two checkouts, measured side by side: did a change slow the step?

    python benchmarks/compare_commits.py OLD_TREE NEW_TREE --rounds 3 \
        --json benchmarks/results/compare_commits.json -- --presets imagenette64 cifar10 \
        --batch-size 32 --threads 1 --repeats 5

Runs ``gmae bench train`` (everything after ``--``) from each tree's ``src`` in turn, OLD then
NEW, ``--rounds`` times, so that drifts of a shared machine fall on both alike. Reports per
preset and model the median over rounds of each run's median step time (wall and process CPU)
and the ratio NEW / OLD (below 1: faster). Pin it to one core (``taskset -c 1``) and run
nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ("gmae", "mae")


def bench_once(tree: Path, bench_args: list[str]) -> dict:
    """One ``gmae bench train`` run with ``tree``'s code; its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        cmd = [sys.executable, "-m", "gmae", "bench", "train", *bench_args, "--json", str(out)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Median over rounds of each (tree, preset, model)'s step times, and NEW / OLD."""
    table: dict[str, dict] = {}
    for tree, reports in runs.items():
        for report in reports:
            for r in report["results"]:
                for model in MODELS:
                    cell = table.setdefault(f"{r['preset']}/{model}", {})
                    times = cell.setdefault(tree, {"step_s": [], "step_cpu_s": []})
                    times["step_s"].append(r[model]["step_s"])
                    times["step_cpu_s"].append(r[model]["step_cpu_s"])
    summary = {}
    for key, cell in table.items():
        med = {t: {k: statistics.median(v) for k, v in cell[t].items()} for t in cell}
        summary[key] = {
            **{f"{t}_{k}": v for t in med for k, v in med[t].items()},
            "new_over_old": med["new"]["step_s"] / med["old"]["step_s"],
            "new_over_old_cpu": med["new"]["step_cpu_s"] / med["old"]["step_cpu_s"],
        }
    return summary


def main() -> int:  # usage: see the module docstring
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="checkout before the change (its src/ is used)")
    ap.add_argument("new", type=Path, help="checkout after the change")
    ap.add_argument("--rounds", type=int, default=3, help="OLD, NEW pairs (default 3)")
    ap.add_argument("--json", type=Path, help="write the runs and the summary here")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    bench_args = argv[cut + 1 :]  # after "--": gmae bench train's own flags
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, tree in trees.items():
        if not (tree / "src" / "gmae").is_dir():
            ap.error(f"{name} tree {tree} has no src/gmae")
    commits = {
        name: subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        for name, tree in trees.items()
    }  # fmt: skip
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(bench_once(tree, bench_args))
            print(f"round {i + 1}/{args.rounds}: {name} done", flush=True)
    summary = summarise(runs)
    print("| preset/model | old step ms | new step ms | new / old (wall) | new / old (CPU) |")
    print("|---|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['old_step_s'] * 1e3:.0f} | {s['new_step_s'] * 1e3:.0f} | "
              f"{s['new_over_old']:.3f} | {s['new_over_old_cpu']:.3f} |")  # fmt: skip
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from gmae import io as gio

        result = {"commits": commits, "bench_args": bench_args, "rounds": args.rounds,
                  "summary": summary, "runs": runs}  # fmt: skip
        gio.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
