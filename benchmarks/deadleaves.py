"""Images/s of the dead-leaves generator (gmae.data.deadleaves), per process and thread.

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/deadleaves.py \\
        --json benchmarks/results/deadleaves.json

Two measurements per setting, each over the same fixed images (train stream, indices 0..N-1):
``scene`` is ``render_scene`` alone (image + ground truth); ``train_item`` is one training item as
the DataLoader worker makes it (scene -> PIL -> the preset's augmentation -> tensor, plus the
mask noise: ``SeededSamples``). Median of ``--repeats`` passes after a warm-up pass; CPU time is
the process's. A DataLoader with W workers makes about W times the ``train_item`` rate when it
has W free cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from gmae.data.deadleaves import DeadLeavesDataset, DeadLeavesParams, render_scene
from gmae.data.transforms import pretrain_transform
from gmae.train.sampling import SeededSamples

SETTINGS = [
    {"size": 64, "texture": False},
    {"size": 64, "texture": True},
    {"size": 32, "texture": False},
    {"size": 128, "texture": False},
]


def timed(fn, n: int, repeats: int) -> dict:
    fn(n)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn(n)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {
        "images": n,
        "median_s": wall,
        "cpu_median_s": cpu,
        "images_per_s": n / wall,
        "times_s": [round(t, 4) for t in walls],
    }


def measure(setting: dict, n: int, repeats: int) -> dict:
    params = DeadLeavesParams(**setting)

    def scenes(k: int) -> None:
        for i in range(k):
            render_scene(params, "train", i)

    base = DeadLeavesDataset(params, "train")
    patches = (params.size // 8) ** 2
    items = SeededSamples(base, pretrain_transform(params.size, (1.0, 1.0)), patches, seed=0)

    def train_items(k: int) -> None:
        for i in range(k):
            items[i]

    leaves = [len(render_scene(params, "train", i).colors) for i in range(n)]
    visible = [int(render_scene(params, "train", i).rank.max()) + 1 for i in range(n)]
    return {
        "setting": setting,
        "leaves_drawn_mean": float(np.mean(leaves)),
        "leaves_visible_mean": float(np.mean(visible)),
        "scene": timed(scenes, n, repeats),
        "train_item": timed(train_items, n, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200, help="images per pass (default 200)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for setting in SETTINGS:
        r = measure(setting, args.images, args.repeats)
        results.append(r)
        print(
            f"size {setting['size']:>3} texture {int(setting['texture'])}: "
            f"scene {r['scene']['images_per_s']:7.1f} img/s, "
            f"train item {r['train_item']['images_per_s']:7.1f} img/s "
            f"({r['leaves_drawn_mean']:.0f} leaves drawn, {r['leaves_visible_mean']:.0f} visible)",
            flush=True,
        )
    report = {
        "benchmark": "deadleaves",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "threads": 1,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "load_average_at_end": list(os.getloadavg()),
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
