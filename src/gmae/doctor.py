"""``gmae doctor``: what this machine will train with, and gsplat's kernels built ahead of time.

Reports the devices, torch and CUDA versions, the CUDA toolkit, the renderer backends (the fast
path's compiled CPU kernel; whether gsplat is installed and its compiled CUDA kernels load) and
the backend ``auto`` picks here. On a machine with a GPU it loads gsplat's kernels, which builds
them the first time (minutes): run it once before a ``torchrun`` launch so the ranks do not all
compile at once inside their first step.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
from typing import Any


def register(subparsers, groups) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="devices, CUDA, renderer backends; builds gsplat's kernels before a GPU run",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", "'"),
    )
    build = p.add_mutually_exclusive_group()
    build.add_argument(
        "--build",
        action="store_true",
        help="load (and, the first time, build) gsplat's CUDA kernels even without a visible GPU",
    )
    build.add_argument(
        "--no-build",
        action="store_true",
        help="do not load gsplat's kernels (report only whether gsplat is installed)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report to FILE (atomically)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a CUDA device is visible but 'auto' would not render with gsplat",
    )
    p.set_defaults(func=run)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def report(build: bool | None = None) -> dict[str, Any]:
    """The doctor's findings as a dict. ``build``: load gsplat's kernels (None: iff CUDA is
    available)."""
    import torch

    from gmae import __version__
    from gmae.render import fast_kernel, resolve_backend

    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    nvcc = shutil.which("nvcc")
    try:
        from torch.utils.cpp_extension import CUDA_HOME

        if nvcc is None and CUDA_HOME and os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc")):
            nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    except Exception:  # an odd torch build: report the toolkit as not found
        pass
    out: dict[str, Any] = {
        "gmae": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "devices": devices,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "nvcc": nvcc,
        "cpu_threads": torch.get_num_threads(),
    }
    kernel = fast_kernel.load()
    why = fast_kernel.error() or "GMAE_RENDER_KERNEL=torch"
    out["fast_cpu_kernel"] = "loaded" if kernel is not None else f"off: {why}"

    gsplat_version = _version("gsplat")
    out["gsplat"] = gsplat_version
    if build is None:
        build = cuda
    if gsplat_version is None:
        out["gsplat_kernels"] = "gsplat not installed (pip install 'gmae[gpu]')"
    elif not build:
        out["gsplat_kernels"] = "not checked (no CUDA device; --build checks anyway)"
    else:
        from gmae.render.gsplat_backend import gsplat_kernel_problem

        problem = gsplat_kernel_problem()
        out["gsplat_kernels"] = "loaded" if problem is None else f"unavailable: {problem}"
    device = "cuda" if cuda else "cpu"
    out["device"] = device
    if build or not cuda:
        out["auto_backend"] = resolve_backend("auto", device)
        if out["auto_backend"] == "reference":  # the size guard of `auto` without gsplat
            from gmae.render.api import REFERENCE_BYTES_PER_PAIR, reference_memory_budget

            budget = reference_memory_budget(torch.device(device))
            out["reference_max_pairs"] = budget // REFERENCE_BYTES_PER_PAIR
    else:
        out["auto_backend"] = "not checked (--no-build)"
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"gmae {r['gmae']}, Python {r['python']}, torch {r['torch']} (CUDA {r['torch_cuda']})",
        f"CUDA available: {'yes' if r['cuda_available'] else 'no'}"
        + (f", bf16: {'yes' if r['bf16_supported'] else 'no'}" if r["cuda_available"] else ""),
    ]
    for d in r["devices"]:
        lines.append(
            f"  cuda:{d['index']}  {d['name']}  {d['memory_gib']} GiB  sm {d['capability']}"
        )
    lines += [
        f"CUDA toolkit (nvcc, for gsplat's build): {r['nvcc'] or 'not found'}",
        f"CPU threads: {r['cpu_threads']}",
        f"fast path's CPU kernel: {r['fast_cpu_kernel']}",
        f"gsplat: {r['gsplat'] or 'not installed'}",
        f"gsplat kernels: {r['gsplat_kernels']}",
        f"render backend 'auto' on {r['device']}: {r['auto_backend']}",
    ]
    if r.get("reference_max_pairs"):
        lines[-1] += (
            f" (up to {r['reference_max_pairs']:.2e} pixel x Gaussian pairs B*H*W*K per render, "
            "the fast path above)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import warnings

    from gmae import io as gio

    build = True if args.build else False if args.no_build else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the report says it already
        r = report(build)
    print(format_report(r))
    if args.json:
        gio.write_json(args.json, r)
    if args.strict and r["cuda_available"] and r["auto_backend"] != "gsplat":
        print("gmae doctor: a GPU is visible but training would not render with gsplat")
        return 1
    return 0
