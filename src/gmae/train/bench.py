"""``gmae bench train``: training step time of GMAE vs MAE, and the renderer's share of it.

For each preset pair ``gmae_tiny_<X>`` / ``mae_tiny_<X>`` (same encoder and decoder), time full
training steps (forward, backward, clipping, AdamW) on random images: median of ``repeats``
after ``warmup`` untimed steps. The renderer is timed by wrapping the ``render`` function GMAE
calls: in place (forward, inside the step, also marked for torch.profiler) and on its own with
the captured inputs (forward + backward, the share reported).
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from gmae.train.checkpoint import model_kwargs
from gmae.train.config import load_config
from gmae.train.distributed import pick_device
from gmae.train.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RenderTimer:
    """Wraps ``gmae.models.gmae.render``: times each call and keeps the last call's inputs."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.last = device, [], None

    @contextlib.contextmanager
    def installed(self):
        import gmae.models.gmae as gmae_module

        original = self.original = gmae_module.render

        def timed(*args, **kwargs):
            _sync(self.device)
            start = time.perf_counter()
            with torch.profiler.record_function("gmae.render"):
                out = original(*args, **kwargs)
            _sync(self.device)
            self.times.append(time.perf_counter() - start)
            self.last = (args, kwargs)
            return out

        gmae_module.render = timed
        try:
            yield self
        finally:
            gmae_module.render = original

    def time_alone(self, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of forward + backward of the last captured render call, on
        detached inputs."""
        args, kwargs = self.last
        inputs = [
            a.detach().requires_grad_(a.is_floating_point()) if torch.is_tensor(a) else a
            for a in args
        ]
        times, cpu_times = [], []
        for i in range(warmup + repeats):
            _sync(self.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            image = self.original(*inputs, **kwargs).image
            image.backward(torch.ones_like(image))
            _sync(self.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
        return times, cpu_times


def time_steps(model, cfg, batch: int, repeats: int, warmup: int, device):
    """Wall and process-CPU seconds per training step (forward, backward, clip, AdamW) on random
    images. CPU time is the steadier number on a shared machine."""
    gen = torch.Generator().manual_seed(0)
    size = cfg.data.img_size
    imgs = torch.rand(batch, 3, size, size, generator=gen).to(device)
    noise = torch.rand(batch, model.encoder.num_patches, generator=gen).to(device)
    opt = build_optimizer(model, 1e-4, 0.05, (0.9, 0.95), model.no_weight_decay())
    model.train()
    times, cpu_times = [], []
    for i in range(warmup + repeats):
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        model(imgs, noise=noise).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad or float("inf"))
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def bench_train(
    presets: list[str],
    batch_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "auto",
    threads: int | None = None,
    json_path: Path | None = None,
) -> dict[str, Any]:
    from gmae.models import create_model

    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    rows = []
    for suffix in presets:
        result: dict[str, Any] = {"preset": suffix}
        for name in ("mae", "gmae"):
            cfg = load_config(f"{name}_tiny_{suffix}")
            batch = batch_size or cfg.optim.batch_size
            torch.manual_seed(0)
            model = create_model(**model_kwargs(cfg)).to(dev)
            timer = RenderTimer(dev)
            with timer.installed() if name == "gmae" else contextlib.nullcontext():
                times, cpu_times = time_steps(model, cfg, batch, repeats, warmup, dev)
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

    report = {
        "device": str(dev),
        "cpu": platform.processor() or platform.machine(),
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


def format_table(report: dict[str, Any]) -> str:
    head = (
        f"{'preset':<14} {'model':<5} {'batch':>5} {'step ms':>9} {'cpu ms':>9} {'img/s':>8} "
        f"{'render ms (f+b)':>16} {'share':>7} {'share (cpu)':>11}"
    )
    lines = [f"gmae bench train on {report['device']} ({report['torch_threads']} threads)", head]
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
