"""Profile one fast-path forward + backward (the tables in docs/renderer.md).

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_render.py \
        [B K H] [--scale-cap C] [--kernel auto|c|torch] [--threads 1]

Runs with one intra-op thread so every op executes on the main thread, where torch.profiler and
cProfile see it (with more threads the work moves to gmae.render's worker threads, which the
profilers do not follow). Prints the median wall time of 5 steps, a per-phase breakdown
(cProfile, cumulative, one step) and the top ops (torch.profiler, self CPU time, one step).
The compiled kernel's calls (ctypes; torch.profiler does not see them) are the phases
"binning", "forward kernel", "backward kernel" and "per-row gradients".
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from gmae.render import Camera, render
from gmae.render.fast import resolve_kernel, use_kernel
from gmae.render.testing import random_gaussians

# (label, function name[s]) or (label, file suffix, function name, forward|backward):
# cumulative cProfile time of matching functions.
PHASES = {
    "torch": [
        ("projection (forward, and re-run for autograd in backward)", "project_tensors"),
        ("tile lists: intersections, ellipse pruning, sort", "build_tiles"),
        ("per-row coefficients", "_row_coeffs"),
        ("forward compositing loop", "fast.py", "run", "forward"),
        ("backward compositing loop", "fast.py", "run", "backward"),
        ("per-row gradients + index_add", "_row_grads"),
        ("tile-major <-> image copies", "_to_tiles|_from_tiles"),
        ("projection backward (autograd.grad)", "_through_projection"),
    ],
    "c": [
        ("projection (forward, with its autograd graph)", "project_tensors"),
        ("binning (C): box, ellipse pruning, rows", "build_tile_lists"),
        ("forward kernel (C)", "forward_kernel"),
        ("backward kernel (C)", "backward_kernel"),
        ("per-row gradients (C)", "_row_grads_kernel"),
        ("projection backward (autograd.grad)", "_through_projection"),
    ],
}


def _phase_ms(stats: dict, key: tuple) -> float:
    ms = 0.0
    for (path, line, name), (_, _, _, cum, _) in stats.items():
        if len(key) == 1 and name in key[0].split("|"):
            ms += cum * 1e3
        elif len(key) == 3 and path.endswith(key[0]) and name == key[1]:
            src = open(path).read().splitlines()
            before = "\n".join(src[:line])
            is_bwd = before.rfind("def backward") > before.rfind("def forward")
            if is_bwd == (key[2] == "backward"):
                ms += cum * 1e3
    return ms


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shape", nargs="*", type=int, default=[32, 256, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--scale-cap", "--scale-max", dest="scale_cap", type=float, default=1.0,
        help="scale cap c (scales c sigmoid)",
    )  # fmt: skip
    p.add_argument("--kernel", default="auto", choices=["auto", "c", "torch"])
    a = p.parse_args()
    B, K, H = a.shape
    torch.set_num_threads(a.threads)
    kernel = resolve_kernel(a.kernel, torch.device("cpu"))
    g = random_gaussians(B, K, scale_cap=a.scale_cap, requires_grad=True)
    cam = Camera(height=H, width=H)

    def step():
        for v in g.values():
            v.grad = None
        with use_kernel(kernel):
            out = render(**g, camera=cam, backend="fast")
            (out.image.sum() + out.alpha.sum() + out.depth.sum()).backward()

    for _ in range(2):
        step()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    print(
        f"B={B} K={K} {H}x{H} c={a.scale_cap:g}, kernel {kernel}, {a.threads} thread(s): "
        f"{ms:.0f} ms (median of 5)"
    )

    prof = cProfile.Profile()
    prof.enable()
    step()
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = max(v[3] for v in stats.values())
    print("\nphase" + " " * 53 + "cumulative ms   share")
    for label, *key in PHASES[kernel]:
        ms = _phase_ms(stats, tuple(key))
        print(f"{label:<58}{ms:>12.1f}{100 * ms / (total * 1e3):>8.0f}%")
    print(f"{'whole step (cProfile overhead included)':<58}{total * 1e3:>12.1f}")

    with profile(activities=[ProfilerActivity.CPU]) as tp:
        step()
    print()
    table = tp.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=28
    )
    print(table)


if __name__ == "__main__":
    main()
