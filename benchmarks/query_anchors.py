"""Training step time of one GMAE recipe under different query anchors, side by side.

The health probes of docs/results.md log images/s per run, but those runs ran in different
sessions under different loads. This script builds one model per variant from one config (each
variant is a comma-separated list of ``key=value`` overrides, ``-`` for none) and times full
training steps (forward, backward, clip, AdamW) on the same random images, round robin, one step
of each variant in turn, so that every variant sees the same machine load. It reports the
median wall and process-CPU time per step and each variant's ratio to the first.

    python benchmarks/query_anchors.py --threads 2 --json benchmarks/results/query_anchors.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DEFAULT_CONFIG = "results/health_sweep/anchor_e10/centre_control.config.yaml"
DEFAULT_VARIANTS = [
    "-",
    "model.query_anchor=grid,model.query_init=normal",
    "model.query_anchor=attend",
    "model.query_anchor=mixed,model.grid_queries=64",
    "model.query_anchor=attend_local,model.query_init=normal",
]


def build(config: str, variant: str, batch: int | None):
    from gmae.models import create_model
    from gmae.train.bench import TrainStepper
    from gmae.train.checkpoint import model_kwargs
    from gmae.train.config import load_config

    overrides = [] if variant == "-" else variant.split(",")
    cfg = load_config(config, overrides)
    torch.manual_seed(0)
    model = create_model(**model_kwargs(cfg))
    size = batch or cfg.optim.batch_size
    return TrainStepper(model, cfg, size, torch.device("cpu")), size


def run(config: str, variants: list[str], repeats: int, warmup: int, batch: int | None) -> dict:
    steppers = [build(config, v, batch) for v in variants]
    wall: list[list[float]] = [[] for _ in variants]
    cpu: list[list[float]] = [[] for _ in variants]
    for i in range(warmup + repeats):
        for j, (stepper, _) in enumerate(steppers):
            w, c = stepper.step()
            if i >= warmup:
                wall[j].append(w)
                cpu[j].append(c)
    rows = []
    for j, variant in enumerate(variants):
        step, step_cpu = statistics.median(wall[j]), statistics.median(cpu[j])
        rows.append({
            "variant": variant,
            "batch": steppers[j][1],
            "step_s": step,
            "step_s_all": wall[j],
            "step_cpu_s": step_cpu,
            "images_per_s": steppers[j][1] / step,
            "params_m": sum(p.numel() for p in steppers[j][0].model.parameters()) / 1e6,
        })  # fmt: skip
    for row in rows:
        row["over_first"] = row["step_s"] / rows[0]["step_s"]
        row["over_first_cpu"] = row["step_cpu_s"] / rows[0]["step_cpu_s"]
    return {"config": config, "repeats": repeats, "warmup": warmup, "results": rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        help="comma-separated key=value overrides per variant; '-' for none",
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("query_anchors: --repeats must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    from gmae import io as gio
    from gmae.devices import cpu_name
    from gmae.errors import GmaeError

    try:
        if args.json:
            gio.check_output_file(args.json)
        t0 = time.time()
        report = run(args.config, args.variants, args.repeats, args.warmup, args.batch_size)
    except GmaeError as e:
        raise SystemExit(f"query_anchors: {e}") from None
    report.update(cpu=cpu_name(), torch_threads=torch.get_num_threads(),
                  torch=torch.__version__, seconds=round(time.time() - t0, 1))  # fmt: skip
    print(f"query anchors, {report['torch_threads']} threads, batch {report['results'][0]['batch']}"
          f", median of {args.repeats} round-robin steps")  # fmt: skip
    for r in report["results"]:
        print(
            f"  {1e3 * r['step_s']:8.1f} ms ({1e3 * r['step_cpu_s']:8.1f} cpu)  "
            f"{r['images_per_s']:6.1f} img/s  x{r['over_first']:.2f}  {r['variant']}"
        )
    if args.json:
        gio.write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
