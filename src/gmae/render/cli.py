"""Command-line entry points of gmae.render (registered by gmae.cli).

gmae bench render [--json FILE] [--quick] [--repeats N] [--max-ref-pairs N] [--threads N]
                  [--backend NAMES] [--skip-unavailable]
"""

from __future__ import annotations

import argparse

from gmae.cli import command_group


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
    bench = command_group(subparsers, groups, "bench", "Speed and memory benchmarks")
    p = bench.add_parser(
        "render",
        help="renderer speed and memory: fast path, its PyTorch loops, dense reference",
        description="Forward + backward of the Gaussian renderer on GMAE-like inputs (float32, "
        "gmae camera): images/s (median of repeated runs, the backends side by side in one "
        "subprocess per configuration) and peak memory (fresh subprocess per backend). "
        "'fast' is the fast path with its compiled kernel, 'fast-torch' the same path with "
        "its PyTorch loops (the fallback, and the fast path before the kernel).",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE (atomically)")
    p.add_argument("--quick", action="store_true", help="small configurations, 3 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 5, quick 3)")
    p.add_argument(
        "--max-ref-pairs",
        type=float,
        default=7e7,
        help="skip the dense reference above this many pixel x Gaussian pairs (default 7e7)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in every measurement (default: torch's); 1 with `taskset` gives "
        "the steadiest numbers on a shared machine",
    )
    p.add_argument(
        "--backend",
        metavar="NAMES",
        default=None,
        help="comma-separated backends to compare (default fast,fast-torch,reference); on a GPU "
        "'gsplat,reference-cuda,fast-cuda' compares gsplat's rasteriser with the dense reference "
        "and the fast path on CUDA",
    )
    p.add_argument(
        "--skip-unavailable",
        action="store_true",
        help="benchmark those of --backend that can run here and record the others (gsplat not "
        "installed, no GPU) as skipped with the reason, instead of stopping",
    )
    p.set_defaults(func=_bench_render)


def _bench_render(args: argparse.Namespace) -> int:
    from gmae.render.bench import main  # heavy imports stay out of `gmae --help`

    return main(args)
