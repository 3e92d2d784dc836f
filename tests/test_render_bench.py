"""`gmae bench render`: the CLI wiring and one tiny end-to-end run of the harness."""

from __future__ import annotations

import json
from dataclasses import asdict

import gmae.render.bench as bench
from gmae.cli import build_parser
from gmae.io import write_json
from gmae.render.bench import Config, format_table, run_benchmark


def test_cli_registers_bench_render():
    argv = ["bench", "render", "--quick", "--json", "x.json", "--threads", "1"]
    args = build_parser().parse_args(argv)
    assert args.quick and args.json == "x.json" and args.threads == 1 and callable(args.func)


def test_tiny_benchmark_end_to_end(tmp_path, monkeypatch):
    """The driver with its measurements run in-process (subprocess start-up is slow on a busy
    machine; `gmae bench render` itself spawns one per measurement), then one real subprocess."""
    monkeypatch.setattr(bench, "_subprocess", lambda job, timeout: bench.run_job(job))
    configs = [Config("tiny", 2, 8, 16, 16), Config("tiny big", 2, 8, 32, 32, scale_max=2.0)]
    report = run_benchmark(configs, 2, max_ref_pairs=4096, log=lambda m: None, threads=1)
    row, skipped = report["results"]
    assert row["speedup"] > 0 and row["memory"]["reference"]["peak_mb"] >= 0
    # the old fast path (PyTorch loops) is measured side by side with the new one
    assert row["speedup_vs_torch"] > 0 and skipped["speedup_vs_torch"] > 0
    assert len(row["speed"]["fast-torch"]["times_s"]) == 2
    assert "reference_skipped" in skipped and "reference" not in skipped["speed"]
    assert row["speed"]["fast"]["images_per_s"] > 0
    assert "tiny big: reference skipped" in format_table(report)
    path = tmp_path / "out" / "render.json"
    write_json(path, report)
    assert json.loads(path.read_text())["benchmark"] == "render"
    assert [p.name for p in path.parent.iterdir()] == ["render.json"]
    monkeypatch.undo()
    job = {"kind": "memory", "config": asdict(configs[0]), "backend": "fast"}
    assert "peak_mb" in bench._subprocess(job, timeout=300)


def test_train_k_curve_tiny(tmp_path):
    """`gmae bench train --k-curve`: both kernels timed on the same model, shares, goals."""
    import pytest

    from gmae.errors import GmaeError
    from gmae.train.bench import bench_train, parse_points

    assert parse_points(["64:2", "96"]) == [(64, 2.0), (96, None)]
    with pytest.raises(GmaeError, match="K or K:SCALE_CAP"):
        parse_points(["many"])
    args = build_parser().parse_args(["bench", "train", "--k-curve", "8:2", "12"])
    assert args.k_curve == ["8:2", "12"]
    path = tmp_path / "k.json"
    report = bench_train(
        ["imagenette64"], batch_size=2, repeats=2, warmup=0, json_path=path, k_curve=["8:2"]
    )
    (row,) = report["results"]
    assert (row["k"], row["scale_cap"]) == (8, 2.0)
    for label in ("fast", "fast-torch"):
        assert len(row[label]["step_s_all"]) == 2 and 0 < row[label]["render_share"] < 1
    assert row["step_speedup_bound_render_free"] > 1
    assert json.loads(path.read_text())["results"][0]["k"] == 8
