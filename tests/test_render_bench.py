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


def test_unavailable_backends_are_skipped_with_the_reason(tmp_path, monkeypatch, capsys):
    """`--skip-unavailable` (what gpu_check runs): a GPU without gsplat benchmarks the others and
    records gsplat as skipped; without the flag, or with nothing left, a one-line error."""
    import sys

    import pytest
    import torch

    from gmae.errors import GmaeError
    from gmae.render import gsplat_backend

    gpu = ("gsplat,reference-cuda,fast-cuda", True)
    if not torch.cuda.is_available():  # this machine: nothing on CUDA can run
        with pytest.raises(GmaeError, match=r"none of --backend .* here \(gsplat: needs a CUDA"):
            bench.parse_backends(*gpu)
        with pytest.raises(GmaeError, match="--backend gsplat cannot run here: needs a CUDA"):
            bench.parse_backends("gsplat,fast-cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU without gsplat
    monkeypatch.setitem(sys.modules, "gsplat", None)
    gsplat_backend.gsplat_kernel_problem.cache_clear()
    try:
        names, skipped = bench.parse_backends(*gpu)
        with pytest.raises(GmaeError, match=r"gsplat cannot run here: gsplat is not importable"):
            bench.parse_backends(gpu[0])
    finally:
        gsplat_backend.gsplat_kernel_problem.cache_clear()
    assert names == ("reference-cuda", "fast-cuda") and list(skipped) == ["gsplat"]
    assert "gsplat is not importable" in skipped["gsplat"]
    assert bench.parse_backends(None) == (bench.DEFAULT_BACKENDS, {})

    # End to end through the CLI on the CPU: one available backend runs, the other is recorded.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "QUICK", [Config("tiny", 2, 8, 16, 16)])
    monkeypatch.setattr(bench, "_subprocess", lambda job, timeout: bench.run_job(job))
    out = tmp_path / "r.json"
    argv = ["bench", "render", "--quick", "--repeats", "1", "--threads", "1", "--json", str(out)]
    args = build_parser().parse_args(argv + ["--backend", "fast,fast-cuda", "--skip-unavailable"])
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["backends"] == ["fast"] and report["results"][0]["speed"]["fast"]["median_s"] > 0
    assert report["skipped_backends"] == {"fast-cuda": "needs a CUDA device (none is visible)"}
    assert "--skip-unavailable" in report["command"]
    assert "fast-cuda: skipped (needs a CUDA device" in capsys.readouterr().out


def test_backends_table_compares_reference_and_fast_on_cuda():
    """The GPU table: one column group per backend and fast-cuda time / reference-cuda time."""
    from gmae.render.bench import format_backends_table

    def timing(s):
        return {"images_per_s": 4 / s, "forward_median_s": s / 3, "backward_median_s": 2 * s / 3}

    speed = {"reference-cuda": timing(0.01), "fast-cuda": timing(0.05)}
    row = {
        "config": {"name": "B4 K256 64x64"},
        "speed": speed,
        "memory": {"reference-cuda": {"peak_mb": 300.0}, "fast-cuda": {"peak_mb": 20.0}},
        "reference_cuda_speedup": 5.0,
    }
    report = {
        "backends": ["reference-cuda", "fast-cuda"],
        "gpu": "fake GPU",
        "results": [row],
        "skipped_backends": {"gsplat": "gsplat is not importable"},
    }
    table = format_backends_table(report)
    assert "ref vs fast" in table and "5.0x" in table and "400.0" in table and "80.0" in table
    assert "gsplat: skipped (gsplat is not importable)" in table


def test_query_anchor_step_times_tiny(tmp_path, capsys):
    """benchmarks/query_anchors.py: one model per variant, timed round robin, ratios to the
    first; a bad override is a one-line error."""
    import runpy
    from pathlib import Path

    import pytest

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "query_anchors.py"
    main = runpy.run_path(str(script))["main"]
    out = tmp_path / "q.json"
    tiny = "model.embed_dim=32,model.depth=1,model.num_heads=2,model.decoder_depth=1"
    report = main(["--config", "gmae_tiny_imagenette64", "--variants", tiny,
                   f"{tiny},model.query_anchor=attend", "--repeats", "2", "--warmup", "0",
                   "--batch-size", "2", "--threads", "1", "--json", str(out)])  # fmt: skip
    first, attend = report["results"]
    assert first["over_first"] == 1.0 and attend["over_first"] > 0
    assert len(attend["step_s_all"]) == 2 and attend["params_m"] > first["params_m"]  # q, k
    assert json.loads(out.read_text())["results"][1]["variant"].endswith("query_anchor=attend")
    assert "img/s" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="query_anchors: .*no_such_key"):
        main(["--config", "gmae_tiny_imagenette64", "--variants", "model.no_such_key=1",
              "--repeats", "1"])  # fmt: skip
