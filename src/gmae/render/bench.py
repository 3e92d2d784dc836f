"""``gmae bench render``: forward + backward speed and peak memory: the fast path (compiled
kernel), the fast path's PyTorch loops (``fast-torch``, the fallback and the previous fast
path, kept as the baseline) and the dense reference.

Method (also in benchmarks/README.md):

* Inputs: GMAE-like Gaussians (``gmae.render.testing.random_gaussians``: centres uniform in
  (-1, 1), scale c sigmoid(N(0, 1)) with the scale cap c of the configuration (1 unless named),
  opacity sigmoid(N(0, 1)), random quaternions and colours), float32, the default gmae camera,
  white background, loss = image.sum() + alpha.sum() + depth.sum(). c sigmoid(N(0, 1)) is how
  a healthy trained model's sizes look by gmae.models.health's criteria: spread out (p90 / p10
  of the size is 3.6, the check asks >= 1.5) and not pinned at the cap (0.2 % within 5 % of it,
  the check asks < 5 %).
* Speed: one fresh subprocess per configuration; one warm-up step per backend, then
  ``repeats`` rounds in which the backends run back to back (rotating which goes first), so
  all see the same machine load. We report the median step time and images/s = B / median,
  plus the median process CPU time per step (all threads), which is steadier than wall time when
  other jobs share the cores.
* Memory: one fresh subprocess per (configuration, backend): a tiny warm-up render (loads
  libraries, starts worker threads), then the kernel's peak-RSS counter is reset
  (``/proc/self/clear_refs``) and we report peak RSS during one forward + backward minus the
  RSS just before it. That is what the OS had to provide, allocator caching included; torch's
  CPU allocator returns big blocks to the OS, so it is close to the tensors' peak. Without
  clear_refs (non-Linux) it falls back to ru_maxrss deltas, which can under-report.
* Reference configurations above ``--max-ref-pairs`` pixel x Gaussian pairs are skipped
  (their dense autograd graph needs tens of GB); the JSON says so.
* ``--skip-unavailable``: backends that cannot run here (gsplat not installed or its kernels not
  built, no CUDA device) are recorded under ``skipped_backends`` with the reason instead of
  stopping the run (what ``scripts/gpu_check.sh`` uses).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from gmae.devices import cpu_affinity, cpu_name
from gmae.errors import GmaeError
from gmae.io import write_json


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    k: int
    height: int
    width: int
    reference: bool = True  # time the reference too (unless over the pair limit)
    speed: bool = True  # time it (False: memory only)
    scale_max: float = 1.0  # the scale cap c: scales are c sigmoid(N(0, 1))

    @property
    def pairs(self) -> int:
        return self.batch * self.k * self.height * self.width


CONFIGS = [
    Config("B64 K256 32x32", 64, 256, 32, 32),
    Config("B32 K256 64x64", 32, 256, 64, 64),
    Config("B4 K256 224x224", 4, 256, 224, 224),
    Config("B16 K64 64x64", 16, 64, 64, 64),
    Config("B16 K256 64x64", 16, 256, 64, 64),
    Config("B16 K1024 64x64", 16, 1024, 64, 64),
    Config("B16 K4096 64x64", 16, 4096, 64, 64),
    Config("B64 K1024 64x64 (memory)", 64, 1024, 64, 64, reference=False, speed=False),
    # The CPU training regime of issue 12: a GMAE step's batch at 64 px, k = 96 (the preset) and
    # 256 (the authors'), scale cap 1 (the preset) and 2 (large Gaussians).
    Config("B128 K96 64x64 c1", 128, 96, 64, 64),
    Config("B128 K96 64x64 c2", 128, 96, 64, 64, scale_max=2.0),
    Config("B128 K256 64x64 c1", 128, 256, 64, 64),
    Config("B128 K256 64x64 c2", 128, 256, 64, 64, scale_max=2.0),
]
QUICK = [
    Config("B8 K256 32x32", 8, 256, 32, 32),
    Config("B4 K256 64x64", 4, 256, 64, 64),
    Config("B1 K256 224x224", 1, 256, 224, 224),
    Config("B8 K256 64x64 c2", 8, 256, 64, 64, scale_max=2.0),
]
# What each benchmarked backend name runs: (render backend, fast-path kernel).
BACKENDS = {
    "fast": ("fast", "auto"),  # the compiled kernel where it builds
    "fast-torch": ("fast", "torch"),  # the PyTorch loops: the fallback, and the old fast path
    "reference": ("reference", "auto"),
    # On a GPU: gsplat's rasteriser, the dense reference and the fast path on CUDA tensors
    # (without gsplat's kernels `auto` runs the reference there while it fits, else the fast path).
    "gsplat": ("gsplat", "auto"),
    "reference-cuda": ("reference", "auto"),
    "fast-cuda": ("fast", "auto"),
}
CUDA_BACKENDS = ("gsplat", "reference-cuda", "fast-cuda")
REFERENCE_BACKENDS = ("reference", "reference-cuda")
DEFAULT_BACKENDS = ("fast", "fast-torch", "reference")


def _device(backend: str) -> str:
    return "cuda" if backend in CUDA_BACKENDS else "cpu"


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- the measurements (run inside subprocesses) ------------------------------------------


def _inputs(cfg: Config, seed: int = 0, device: str = "cpu"):
    from gmae.render.testing import random_gaussians

    return random_gaussians(
        cfg.batch, cfg.k, seed=seed, scale_cap=cfg.scale_max, requires_grad=True, device=device
    )


def _step(g, camera, backend: str) -> tuple[float, float, float]:
    """One forward + backward; returns (forward s, backward s, process CPU s)."""
    from gmae.render import render
    from gmae.render.fast import use_kernel

    render_backend, kernel = BACKENDS[backend]
    device = _device(backend)
    for v in g.values():
        v.grad = None
    with use_kernel(kernel):
        _sync(device)
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = render(**g, camera=camera, backend=render_backend)
        loss = out.image.sum() + out.alpha.sum() + out.depth.sum()
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.process_time() - c0


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def measure_speed(cfg: Config, backends: list[str], repeats: int) -> dict:
    import torch

    from gmae.render import Camera

    camera = Camera(height=cfg.height, width=cfg.width)
    devices = {_device(b) for b in backends}
    inputs = {d: _inputs(cfg, device=d) for d in devices}
    times: dict[str, list[tuple[float, float, float]]] = {b: [] for b in backends}
    for b in backends:
        _step(inputs[_device(b)], camera, b)  # warm-up
    for r in range(repeats):
        k = r % len(backends)
        for b in backends[k:] + backends[:k]:  # rotate who goes first
            times[b].append(_step(inputs[_device(b)], camera, b))
    out = {"threads": torch.get_num_threads()}
    for b, ts in times.items():
        total = [f + bw for f, bw, _ in ts]
        med = statistics.median(total)
        out[b] = {
            "median_s": med,
            "forward_median_s": statistics.median(f for f, _, _ in ts),
            "backward_median_s": statistics.median(bw for _, bw, _ in ts),
            "cpu_median_s": statistics.median(c for _, _, c in ts),
            "images_per_s": cfg.batch / med,
            "times_s": [round(t, 5) for t in total],
        }
    return out


def measure_memory(cfg: Config, backend: str) -> dict:
    import gc

    from gmae.render import Camera

    tiny = Config("warm-up", 1, 8, 16, 16)
    device = _device(backend)
    _step(_inputs(tiny, device=device), Camera(height=16, width=16), backend)
    g = _inputs(cfg, device=device)
    camera = Camera(height=cfg.height, width=cfg.width)
    gc.collect()
    if device == "cuda":  # GPU memory: the allocator's peak during one step, above the inputs
        import torch

        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _step(g, camera, backend)
        peak = torch.cuda.max_memory_allocated() - before
        return {"peak_mb": round(peak / 2**20, 1), "memory_method": "torch.cuda peak allocated"}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _rss_kb("VmRSS")
        _step(g, camera, backend)
        peak, method = _rss_kb("VmHWM") - before, "VmHWM after clear_refs, minus VmRSS before"
    except OSError:
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _step(g, camera, backend)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        method = "ru_maxrss delta (may under-report)"
    return {"peak_mb": round(peak / 1024, 1), "memory_method": method}


def run_job(job: dict) -> dict:
    """One measurement described by a JSON-able dict (what a subprocess runs)."""
    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    cfg = Config(**job["config"])
    if job["kind"] == "speed":
        return measure_speed(cfg, job["backends"], job["repeats"])
    return measure_memory(cfg, job["backend"])


def _worker(argv: list[str]) -> int:
    """Subprocess entry: ``python -m gmae.render.bench --worker JSON``."""
    print("RESULT " + json.dumps(run_job(json.loads(argv[0]))), flush=True)
    return 0


# -- the driver ----------------------------------------------------------------------------


def _subprocess(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "gmae.render.bench", "--worker", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}


def run_benchmark(
    configs: list[Config],
    repeats: int,
    max_ref_pairs: float,
    timeout: float = 1800,
    log=print,
    threads: int | None = None,
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
) -> dict:
    import torch

    from gmae.render import fast_kernel

    if threads:
        torch.set_num_threads(threads)
    results = []
    for cfg in configs:
        row: dict = {"config": asdict(cfg), "pairs": cfg.pairs}
        ref_ok = cfg.reference and cfg.pairs <= max_ref_pairs
        if cfg.reference and not ref_ok:
            row["reference_skipped"] = (
                f"{cfg.pairs:.2e} pixel x Gaussian pairs > --max-ref-pairs {max_ref_pairs:.2e}: "
                "the dense reference would need tens of GB"
            )
        names = [b for b in backends if b not in REFERENCE_BACKENDS or ref_ok]
        log(f"[bench render] {cfg.name}: {' + '.join(names)} ...")
        common = {"config": asdict(cfg), "threads": threads}
        if cfg.speed:
            job = {"kind": "speed", "backends": names, "repeats": repeats, **common}
            row["speed"] = _subprocess(job, timeout)
        row["memory"] = {}
        for b in names:
            row["memory"][b] = _subprocess({"kind": "memory", "backend": b, **common}, timeout)
        speed = row.get("speed", {})
        if "fast" in speed and "reference" in speed:
            row["speedup"] = speed["reference"]["median_s"] / speed["fast"]["median_s"]
            row["cpu_speedup"] = speed["reference"]["cpu_median_s"] / speed["fast"]["cpu_median_s"]
        if "fast" in speed and "fast-torch" in speed:  # new over old, measured side by side
            row["speedup_vs_torch"] = speed["fast-torch"]["median_s"] / speed["fast"]["median_s"]
            row["cpu_speedup_vs_torch"] = (
                speed["fast-torch"]["cpu_median_s"] / speed["fast"]["cpu_median_s"]
            )
        if "gsplat" in speed and "fast-cuda" in speed:
            row["gsplat_speedup"] = speed["fast-cuda"]["median_s"] / speed["gsplat"]["median_s"]
        if "reference-cuda" in speed and "fast-cuda" in speed:
            row["reference_cuda_speedup"] = (
                speed["fast-cuda"]["median_s"] / speed["reference-cuda"]["median_s"]
            )
        results.append(row)
    return {
        "benchmark": "render",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_affinity": cpu_affinity(),
        "fast_kernel": "compiled" if fast_kernel.load() is not None else fast_kernel.error(),
        "repeats": repeats,
        "max_ref_pairs": max_ref_pairs,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "backends": list(backends),
        "gpu": _gpu_name(backends),
        "results": results,
        "goals": _goals(results) if tuple(backends) == DEFAULT_BACKENDS else {},
    }


def _gpu_name(backends) -> str | None:
    if not any(b in CUDA_BACKENDS for b in backends):
        return None
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _find(results, name):
    return next((r for r in results if r["config"]["name"] == name), None)


def _goals(results) -> dict:
    goals = {}
    r = _find(results, "B32 K256 64x64")
    if r and "speedup" in r:
        sp = r["speedup"]
        goals["speedup_B32_K256_64x64"] = {"value": sp, "goal": ">= 10", "met": sp >= 10}
    r = _find(results, "B64 K1024 64x64 (memory)")
    if r and "peak_mb" in r["memory"].get("fast", {}):
        mb = r["memory"]["fast"]["peak_mb"]
        goals["fast_peak_mb_B64_K1024_64x64"] = {"value": mb, "goal": "< 2048", "met": mb < 2048}
    curve = []
    for k in (64, 256, 1024, 4096):
        r = _find(results, f"B16 K{k} 64x64")
        if r and "fast" in r.get("speed", {}):
            ref = r["speed"].get("reference", {}).get("median_s")
            curve.append((k, r["speed"]["fast"]["median_s"], ref))
    if len(curve) >= 2:
        (k0, f0, _), (k1, f1, _) = curve[0], curve[-1]
        fast_slope = (f1 - f0) / (k1 - k0)
        refs = [(k, t) for k, _, t in curve if t is not None]
        entry = {
            "fast_s_per_1000_gaussians": fast_slope * 1000,
            "fast_time_ratio_vs_k_ratio": [(k, f / f0) for k, f, _ in curve],
        }
        if len(refs) >= 2:
            ref_slope = (refs[-1][1] - refs[0][1]) / (refs[-1][0] - refs[0][0])
            entry["reference_s_per_1000_gaussians"] = ref_slope * 1000
            entry["met"] = fast_slope <= ref_slope
            entry["goal"] = "fast slope <= reference slope (time per added Gaussian)"
        goals["k_curve"] = entry
    # Issue 12: the compiled kernel must not be slower than the PyTorch loops anywhere the
    # presets or the old benchmark go (k = 96 at cap 1, 224 px), side by side in one process.
    for name in ("B128 K96 64x64 c1", "B4 K256 224x224"):
        r = _find(results, name)
        if r and "speedup_vs_torch" in r:
            sp = r["speedup_vs_torch"]
            goals[f"no_slowdown_{name.replace(' ', '_')}"] = {
                "value": sp,
                "goal": ">= 1 (fast-torch median / fast median)",
                "met": sp >= 1,
            }
    return goals


def format_backends_table(report: dict) -> str:
    """Images/s (forward + backward), forward and backward ms and peak MB per chosen backend."""
    backends = report["backends"]
    head = f"{'config':<26}" + "".join(
        f"{b + ' img/s':>17}{'fwd ms':>8}{'bwd ms':>8}{'MB':>8}" for b in backends
    )
    if "gsplat" in backends and "fast-cuda" in backends:
        head += f"{'gsplat vs fast':>16}"
    if "reference-cuda" in backends and "fast-cuda" in backends:
        head += f"{'ref vs fast':>13}"
    lines = [f"device: {report.get('gpu') or report['cpu']}", head, "-" * len(head)]
    for r in report["results"]:
        s, m = r.get("speed", {}), r["memory"]
        line = f"{r['config']['name']:<26}"
        for b in backends:
            if "error" in s or b not in s:
                line += f"{s.get('error', '-')[:16]:>17}{'-':>8}{'-':>8}"
            else:
                x = s[b]
                line += f"{x['images_per_s']:>17.1f}{x['forward_median_s'] * 1e3:>8.2f}"
                line += f"{x['backward_median_s'] * 1e3:>8.2f}"
            mem = m.get(b, {})
            line += f"{mem['peak_mb']:>8.0f}" if "peak_mb" in mem else f"{'-':>8}"
        if "gsplat_speedup" in r:
            line += f"{r['gsplat_speedup']:>15.1f}x"
        elif "gsplat" in backends and "fast-cuda" in backends:
            line += f"{'-':>16}"
        if "reference_cuda_speedup" in r:
            line += f"{r['reference_cuda_speedup']:>12.1f}x"
        lines.append(line)
    lines += [f"  {r['config']['name']}: reference skipped" for r in report["results"]
              if "reference_skipped" in r]  # fmt: skip
    for b, why in report.get("skipped_backends", {}).items():
        lines.append(f"  {b}: skipped ({why})")
    errors = {e for r in report["results"] for e in _errors(r)}
    lines += [f"  error: {e}" for e in sorted(errors)]
    return "\n".join(lines)


def _errors(row: dict) -> list[str]:
    found = []
    for part in (row.get("speed", {}), *row.get("memory", {}).values()):
        if isinstance(part, dict) and "error" in part:
            found.append(part["error"])
    return found


def format_table(report: dict) -> str:
    if tuple(report.get("backends", DEFAULT_BACKENDS)) != DEFAULT_BACKENDS:
        return format_backends_table(report)
    head = (
        f"{'config':<26}{'fast img/s':>11}{'torch img/s':>12}{'ref img/s':>11}{'vs torch':>9}"
        f"{'vs ref':>9}{'(cpu)':>7}{'fast MB':>9}{'torch MB':>9}{'ref MB':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        s, m = r.get("speed", {}), r["memory"]

        def ips(b, s=s):
            if "error" in s:
                return "error"
            return f"{s[b]['images_per_s']:.1f}" if b in s else "-"

        def mb(b, m=m):
            x = m.get(b, {})
            return f"{x['peak_mb']:.0f}" if "peak_mb" in x else ("error" if x else "-")

        sp = f"{r['speedup']:.1f}x" if "speedup" in r else "-"
        cp = f"{r['cpu_speedup']:.1f}x" if "cpu_speedup" in r else "-"
        st = f"{r['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in r else "-"
        lines.append(
            f"{r['config']['name']:<26}{ips('fast'):>11}{ips('fast-torch'):>12}"
            f"{ips('reference'):>11}{st:>9}{sp:>9}{cp:>7}"
            f"{mb('fast'):>9}{mb('fast-torch'):>9}{mb('reference'):>9}"
        )
    skipped = [r for r in report["results"] if "reference_skipped" in r]
    for r in skipped:
        lines.append(f"  {r['config']['name']}: reference skipped ({r['reference_skipped']})")
    for name, goal in report["goals"].items():
        lines.append(f"  goal {name}: {json.dumps(goal)}")
    return "\n".join(lines)


def backend_problem(name: str) -> str | None:
    """Why the benchmarked backend ``name`` cannot run on this machine (None when it can)."""
    if name not in CUDA_BACKENDS:
        return None
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA device (none is visible)"
    if name == "gsplat":
        from gmae.render import resolve_backend

        try:
            resolve_backend("gsplat", "cuda")
        except GmaeError as exc:  # names what is missing: gsplat itself, its kernels, ...
            return str(exc).removeprefix("backend 'gsplat' cannot be used: ")
    return None


def parse_backends(text: str | None, skip_unavailable: bool = False) -> tuple[tuple, dict]:
    """``--backend a,b``: (the known names that can run here, {name: why skipped}). A backend
    that cannot run is an error unless ``skip_unavailable``; then only if none is left."""
    if not text:
        return DEFAULT_BACKENDS, {}
    names = tuple(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise GmaeError(
            f"unknown --backend {', '.join(unknown) or text!r}; choose from {', '.join(BACKENDS)}"
        )
    skipped = {b: why for b in names if (why := backend_problem(b))}
    if skipped and not skip_unavailable:
        b, why = next(iter(skipped.items()))
        raise GmaeError(f"--backend {b} cannot run here: {why} (--skip-unavailable skips it)")
    left = tuple(b for b in names if b not in skipped)
    if not left:
        reasons = "; ".join(f"{b}: {why}" for b, why in skipped.items())
        raise GmaeError(f"none of --backend {','.join(names)} can run here ({reasons})")
    return left, skipped


def main(args) -> int:
    """Entry point of ``gmae bench render`` (args from the CLI parser)."""
    configs = QUICK if args.quick else CONFIGS
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1:
        raise GmaeError(f"--repeats must be >= 1, got {repeats}")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise GmaeError(f"--threads must be >= 1, got {threads}")
    skip_unavailable = getattr(args, "skip_unavailable", False)
    backends, skipped = parse_backends(getattr(args, "backend", None), skip_unavailable)
    report = run_benchmark(configs, repeats, args.max_ref_pairs, threads=threads, backends=backends)
    report["skipped_backends"] = skipped
    parts = ["gmae bench render"]
    if getattr(args, "backend", None):
        parts.append(f"--backend {args.backend}")
    if skip_unavailable:
        parts.append("--skip-unavailable")
    if args.json:
        parts.append(f"--json {args.json}")
    if args.quick:
        parts.append("--quick")
    if args.repeats:
        parts.append(f"--repeats {args.repeats}")
    if args.max_ref_pairs != 7e7:
        parts.append(f"--max-ref-pairs {args.max_ref_pairs:g}")
    if threads:
        parts.append(f"--threads {threads}")
    report["command"] = " ".join(parts)
    report["quick"] = bool(args.quick)
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    errors = [r for r in report["results"] if "error" in json.dumps(r)]
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2:]))
    raise SystemExit("use: gmae bench render")
