"""Tile size of the fast renderer: process CPU time per forward + backward for 4, 8, 16 px tiles
and the automatic choice (the measurement behind ``gmae.render.fast._auto_tile``).

    .venv/bin/python benchmarks/render_tiles.py

CPU time (all threads) rather than wall time, so that other jobs on the machine disturb the
comparison less; variants run interleaved, median of 5 after a warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

from gmae.render import Camera, RenderSettings
from gmae.render.fast import render_fast
from gmae.render.testing import random_gaussians

CONFIGS = [(64, 256, 32), (32, 256, 64), (4, 256, 224), (16, 1024, 64)]
VARIANTS = {"auto": 0, "4 px": 4, "8 px": 8, "16 px": 16}


def step(g, cam: Camera, tile: int) -> float:
    for v in g.values():
        v.grad = None
    B = g["means"].shape[0]
    t0 = time.process_time()
    image, alpha, depth, _ = render_fast(
        g["means"],
        g["scales"],
        g["quats"],
        g["colors"],
        g["opacities"],
        torch.ones(B, 3),
        cam.intrinsics(B),
        cam.viewmats(B),
        camera_model="gmae",
        height=cam.height,
        width=cam.width,
        settings=RenderSettings(),
        return_depth=True,
        tile=tile,
    )
    (image.sum() + alpha.sum() + depth.sum()).backward()
    return time.process_time() - t0


def main() -> None:
    print(f"{'B K size':<16}" + "".join(f"{name:>10}" for name in VARIANTS) + "   (CPU ms)")
    for B, K, H in CONFIGS:
        g = random_gaussians(B, K, requires_grad=True)
        cam = Camera(height=H, width=H)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for tile in VARIANTS.values():
            step(g, cam, tile)
        for _ in range(5):
            for name, tile in VARIANTS.items():
                times[name].append(step(g, cam, tile))
        row = "".join(f"{1e3 * statistics.median(t):>10.0f}" for t in times.values())
        print(f"{f'{B} {K} {H}^2':<16}{row}", flush=True)


if __name__ == "__main__":
    main()
