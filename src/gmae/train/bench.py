"""``gmae bench train``: training step time of GMAE vs MAE, and the renderer's share of it.

For each preset pair ``gmae_tiny_<X>`` / ``mae_tiny_<X>`` (same encoder and decoder), time full
training steps (forward, backward, clipping, AdamW) on random images: median of ``repeats``
after ``warmup`` untimed steps. The renderer is timed through ``GMAE.wrap_render``: in place
(forward, inside the step, also marked for torch.profiler) and on its own with the captured
inputs (forward + backward, the share reported).

With ``k_curve`` (``gmae bench train --k-curve 64:2 96:2 ...``) it times the GMAE step of the
first preset at each number of Gaussians k (and scale cap c) instead, once with the fast
path's compiled kernel and once with its PyTorch loops (the fallback, and the fast path before
the kernel), alternating step by step on the same model so that both see the same machine load.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gmae.devices import cpu_affinity, cpu_name
from gmae.precision import tf32_matmuls
from gmae.train.checkpoint import model_kwargs
from gmae.train.config import load_config
from gmae.train.distributed import pick_device
from gmae.train.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RenderTimer:
    """A ``GMAE.wrap_render`` wrapper: times each render call and keeps the last call's
    inputs (``with model.wrap_render(timer): ...``)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.last = device, [], None

    def __call__(self, render, *args, **kwargs):
        _sync(self.device)
        start = time.perf_counter()
        with torch.profiler.record_function("gmae.render"):
            out = render(*args, **kwargs)
        _sync(self.device)
        self.times.append(time.perf_counter() - start)
        self.last = (render, args, kwargs)
        return out

    def time_alone(self, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of forward + backward of the last captured render call, on
        detached inputs."""
        render, args, kwargs = self.last
        inputs = [
            a.detach().requires_grad_(a.is_floating_point()) if torch.is_tensor(a) else a
            for a in args
        ]
        times, cpu_times = [], []
        for i in range(warmup + repeats):
            _sync(self.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            image = render(*inputs, **kwargs).image
            image.backward(torch.ones_like(image))
            _sync(self.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
        return times, cpu_times


class TrainStepper:
    """Training steps (forward, backward, clip, AdamW) of one model on fixed random images:
    the unit every step-time benchmark times, so two models are timed alike."""

    def __init__(self, model, cfg, batch: int, device, amp: str = "none") -> None:
        gen = torch.Generator().manual_seed(0)
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        size = cfg.data.img_size
        self.imgs = torch.rand(batch, 3, size, size, generator=gen).to(device)
        self.noise = torch.rand(batch, model.encoder.num_patches, generator=gen).to(device)
        self.opt = build_optimizer(
            model, 1e-4, 0.05, (0.9, 0.95), model.no_weight_decay(), fused=device.type == "cuda"
        )
        self.model, self.clip, self.device = model, cfg.optim.clip_grad or float("inf"), device
        model.train()

    def step(self) -> tuple[float, float]:
        """One step: (wall s, process CPU s)."""
        _sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss = self.model(self.imgs, noise=self.noise).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        _sync(self.device)
        return time.perf_counter() - start, time.process_time() - cpu_start


def time_steps(model, cfg, batch: int, repeats: int, warmup: int, device, amp: str = "none"):
    """Wall and process-CPU seconds per training step (forward, backward, clip, AdamW) on random
    images. CPU time is the steadier number on a shared machine."""
    stepper = TrainStepper(model, cfg, batch, device, amp)
    times, cpu_times = [], []
    for i in range(warmup + repeats):
        wall, cpu = stepper.step()
        if i >= warmup:
            times.append(wall)
            cpu_times.append(cpu)
    return times, cpu_times


def bench_train(
    presets: list[str],
    batch_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "auto",
    threads: int | None = None,
    json_path: Path | None = None,
    k_curve: list[str] | None = None,
    amp: str = "none",
) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    if k_curve:
        return bench_k_curve(
            presets[0], k_curve, batch_size, repeats, warmup, device, json_path=json_path
        )
    dev = pick_device(device)
    if dev.type != "cuda" and amp != "none":
        from gmae.errors import GmaeError

        raise GmaeError(f"--amp {amp} needs --device cuda (training ignores AMP on the CPU)")
    with contextlib.ExitStack() as flags:
        if dev.type == "cuda":  # as training: TF32 only without autocast, restored afterwards
            flags.enter_context(tf32_matmuls(amp == "none"))
        rows, backend = _bench_presets(presets, batch_size, repeats, warmup, dev, amp)

    report = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "amp": amp,
        "render_backend": backend,
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "warmup": warmup,
        "results": rows,
    }
    print(format_table(report))
    if json_path is not None:
        from gmae import io as gio

        gio.write_text(json_path, json.dumps(report, indent=2) + "\n")
    return report


def _bench_presets(presets, batch_size, repeats, warmup, dev, amp) -> tuple[list, str | None]:
    """One row per preset: the MAE and GMAE step times (and GMAE's render share)."""
    from gmae.models import create_model

    backend = None
    rows = []
    for suffix in presets:
        result: dict[str, Any] = {"preset": suffix}
        for name in ("mae", "gmae"):
            cfg = load_config(f"{name}_tiny_{suffix}")
            batch = batch_size or cfg.optim.batch_size
            torch.manual_seed(0)
            model = create_model(**model_kwargs(cfg)).to(dev)
            timer = RenderTimer(dev)
            if name == "gmae":
                backend = model.render_backend_for(dev, batch)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            with model.wrap_render(timer) if name == "gmae" else contextlib.nullcontext():
                times, cpu_times = time_steps(model, cfg, batch, repeats, warmup, dev, amp)
            step = statistics.median(times)
            result[name] = {
                "config": f"{name}_tiny_{suffix}",
                "batch": batch,
                "step_s": step,
                "step_s_all": times,
                "step_cpu_s": statistics.median(cpu_times),
                "images_per_s": batch / step,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            }
            if dev.type == "cuda":
                result[name]["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
            if name == "gmae":
                alone, alone_cpu = timer.time_alone(repeats, 1)
                render = statistics.median(alone)
                render_cpu = statistics.median(alone_cpu)
                result[name].update(
                    num_gaussians=model.num_gaussians,
                    render_forward_in_step_s=statistics.median(timer.times[-repeats:]),
                    render_forward_backward_s=render,
                    render_forward_backward_cpu_s=render_cpu,
                    render_share=render / step,
                    render_share_cpu=render_cpu / result[name]["step_cpu_s"],
                )
        result["gmae_over_mae"] = result["gmae"]["step_s"] / result["mae"]["step_s"]
        result["gmae_over_mae_cpu"] = result["gmae"]["step_cpu_s"] / result["mae"]["step_cpu_s"]
        rows.append(result)
    return rows, backend


def format_table(report: dict[str, Any]) -> str:
    head = (
        f"{'preset':<14} {'model':<5} {'batch':>5} {'step ms':>9} {'cpu ms':>9} {'img/s':>8} "
        f"{'render ms (f+b)':>16} {'share':>7} {'share (cpu)':>11}"
    )
    where = report["device"] + (f" ({report['gpu']})" if report.get("gpu") else "")
    extra = f", amp {report['amp']}" if report.get("amp", "none") != "none" else ""
    if report.get("render_backend"):
        extra += f", renderer {report['render_backend']}"
    title = f"gmae bench train on {where} ({report['torch_threads']} threads{extra})"
    lines = [title, head]
    for row in report["results"]:
        for name in ("mae", "gmae"):
            r = row[name]
            render = f"{1e3 * r['render_forward_backward_s']:.1f}" if name == "gmae" else "-"
            share = f"{100 * r['render_share']:.1f} %" if name == "gmae" else "-"
            share_cpu = f"{100 * r['render_share_cpu']:.1f} %" if name == "gmae" else "-"
            lines.append(
                f"{row['preset']:<14} {name:<5} {r['batch']:>5} {1e3 * r['step_s']:>9.1f} "
                f"{1e3 * r['step_cpu_s']:>9.1f} "
                f"{r['images_per_s']:>8.1f} {render:>16} {share:>7} {share_cpu:>11}"
            )
        lines.append(
            f"{'':<14} GMAE step / MAE step: {row['gmae_over_mae']:.2f} (wall), "
            f"{row['gmae_over_mae_cpu']:.2f} (cpu)"
        )
    return "\n".join(lines)


# -- the k-curve: compiled kernel vs PyTorch loops -------------------------------------------

KERNELS = {"fast": "auto", "fast-torch": "torch"}  # label -> gmae.render.fast kernel


def parse_points(points: list[str]) -> list[tuple[int, float | None]]:
    """``["64:2", "96"]`` -> ``[(64, 2.0), (96, None)]`` (None: the preset's scale cap)."""
    from gmae.errors import GmaeError

    out = []
    for p in points:
        k, _, c = str(p).partition(":")
        try:
            out.append((int(k), float(c) if c else None))
        except ValueError:
            raise GmaeError(f"--k-curve expects K or K:SCALE_CAP, got {p!r}") from None
        if out[-1][0] < 1 or (out[-1][1] is not None and not out[-1][1] > 0):
            raise GmaeError(f"--k-curve: k must be >= 1 and the scale cap > 0, got {p!r}")
    return out


def bench_k_curve(
    preset: str,
    points: list[str],
    batch_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "auto",
    json_path: Path | None = None,
) -> dict[str, Any]:
    """GMAE step time and render share at each (k, scale cap), both fast-path kernels side by
    side: each round runs one step with each (rotating which goes first) on the same model, then
    the render alone (forward + backward, inputs captured from the last step) with each."""
    from gmae.models import create_model
    from gmae.render import fast_kernel
    from gmae.render.fast import use_kernel

    dev = pick_device(device)
    rows = []
    base = load_config(f"mae_tiny_{preset}")
    batch = batch_size or base.optim.batch_size
    torch.manual_seed(0)
    mae = create_model(**model_kwargs(base)).to(dev)
    mae_times = time_steps(mae, base, batch, repeats, warmup, dev)[0]
    del mae
    for k, cap in parse_points(points):
        overrides = [f"model.num_gaussians={k}"] + ([f"model.scale_cap={cap}"] if cap else [])
        cfg = load_config(f"gmae_tiny_{preset}", overrides)
        torch.manual_seed(0)
        model = create_model(**model_kwargs(cfg)).to(dev)
        stepper = TrainStepper(model, cfg, batch, dev)
        labels = list(KERNELS)
        steps: dict[str, list[float]] = {x: [] for x in labels}
        cpu: dict[str, list[float]] = {x: [] for x in labels}
        timer = RenderTimer(dev)
        with model.wrap_render(timer):
            for i in range(warmup + repeats):
                j = i % len(labels)
                for label in labels[j:] + labels[:j]:
                    with use_kernel(KERNELS[label]):
                        wall, c = stepper.step()
                    if i >= warmup:
                        steps[label].append(wall)
                        cpu[label].append(c)
        row: dict[str, Any] = {"k": k, "scale_cap": model.head.scale_cap, "batch": batch}
        alone = {x: ([], []) for x in labels}
        for i in range(repeats):  # the render alone, alternating too
            for label in labels if i % 2 == 0 else labels[::-1]:
                with use_kernel(KERNELS[label]):
                    w, c = timer.time_alone(1, 1 if i == 0 else 0)
                alone[label][0].extend(w)
                alone[label][1].extend(c)
        for label in labels:
            step = statistics.median(steps[label])
            render = statistics.median(alone[label][0])
            row[label] = {
                "step_s": step,
                "step_s_all": steps[label],
                "step_cpu_s": statistics.median(cpu[label]),
                "images_per_s": batch / step,
                "render_forward_backward_s": render,
                "render_forward_backward_cpu_s": statistics.median(alone[label][1]),
                "render_share": render / step,
            }
        row["step_speedup"] = row["fast-torch"]["step_s"] / row["fast"]["step_s"]
        row["render_speedup"] = (
            row["fast-torch"]["render_forward_backward_s"]
            / row["fast"]["render_forward_backward_s"]
        )
        # Amdahl: the most any renderer could give, the step with the old render time removed
        rest = row["fast-torch"]["step_s"] - row["fast-torch"]["render_forward_backward_s"]
        row["step_speedup_bound_render_free"] = row["fast-torch"]["step_s"] / rest
        rows.append(row)
        del model, stepper, timer

    report = {
        "benchmark": "train k-curve",
        "command": " ".join(["gmae", *sys.argv[1:]]),
        "preset": preset,
        "device": str(dev),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_affinity": cpu_affinity(),
        "fast_kernel": "compiled" if fast_kernel.load() is not None else fast_kernel.error(),
        "repeats": repeats,
        "warmup": warmup,
        "mae": {
            "step_s": statistics.median(mae_times),
            "images_per_s": batch / statistics.median(mae_times),
        },
        "results": rows,
        "goals": _k_curve_goals(rows),
    }
    print(format_k_curve(report))
    if json_path is not None:
        from gmae import io as gio

        gio.write_text(json_path, json.dumps(report, indent=2) + "\n")
    return report


def _k_curve_goals(rows: list[dict]) -> dict[str, Any]:
    """Issue 12's goals, where the curve has their points."""
    goals: dict[str, Any] = {}
    by = {(r["k"], r["scale_cap"]): r for r in rows}
    r = by.get((256, 2.0))
    if r:
        share = r["fast"]["render_share"]
        goals["render_share_k256_c2"] = {"value": share, "goal": "<= 0.15", "met": share <= 0.15}
        sp = r["step_speedup"]
        goals["step_speedup_k256_c2"] = {
            "value": sp,
            "goal": ">= 1.5 (images/s, fast over fast-torch)",
            "met": sp >= 1.5,
            "bound_if_render_were_free": r["step_speedup_bound_render_free"],
        }
    r = by.get((96, 1.0))
    if r:
        sp = r["step_speedup"]
        goals["no_slowdown_k96_c1"] = {"value": sp, "goal": ">= 1", "met": sp >= 1}
    return goals


def format_k_curve(report: dict[str, Any]) -> str:
    lines = [
        f"gmae bench train --k-curve: {report['preset']} on {report['device']} "
        f"({report['torch_threads']} threads); MAE {report['mae']['images_per_s']:.1f} img/s",
        f"{'k':>4} {'c':>4} {'kernel':<11} {'step ms':>9} {'img/s':>7} {'render ms':>10} "
        f"{'share':>7} {'step x':>7} {'render x':>9}",
    ]
    for r in report["results"]:
        for label in KERNELS:
            x = r[label]
            new = label == "fast"
            lines.append(
                f"{r['k']:>4} {r['scale_cap']:>4g} {label:<11} {1e3 * x['step_s']:>9.0f} "
                f"{x['images_per_s']:>7.1f} {1e3 * x['render_forward_backward_s']:>10.0f} "
                f"{100 * x['render_share']:>6.1f}% "
                + (f"{r['step_speedup']:>7.2f} {r['render_speedup']:>9.2f}" if new else "")
            )
    for name, goal in report["goals"].items():
        lines.append(f"  goal {name}: {json.dumps(goal)}")
    return "\n".join(lines)
