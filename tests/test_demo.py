"""`gmae demo` end to end on real Imagenette photos, shrunk to a few steps of a tiny model."""

from __future__ import annotations

import json

import torch

from gmae.cli import main

TINY = [
    "model.depth=1", "model.decoder_depth=1", "model.num_gaussians=16",
    "optim.batch_size=8", "run.vis_images=2", "run.log_every=1",
]  # fmt: skip


def test_demo_trains_writes_the_page_and_reruns_without_retraining(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--set", *TINY]) == 0
    page = out / "index.html"
    assert page.is_file() and (out / "training_curves.png").is_file()
    html = page.read_text()
    assert "<img" in html and "Reconstructions" in html and 'class="gviewer"' in html
    assert "--mae-ckpt" not in html  # the demo has no such option
    printed = capsys.readouterr().out
    assert "gmae demo: pretraining a tiny GMAE on imagenette-128 for 2 steps" in printed
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "step" in r][-1] == 2
    assert f"Open {page.resolve()}" in printed
    ckpt = torch.load(out / "run" / "last.pt", weights_only=True)
    assert ckpt["schedule"]["total_steps"] == 2  # the schedule spans the steps run

    # A second run continues the same run: already at --steps, so no step is added.
    mtime = (out / "run" / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--steps", "2", "--set", *TINY]) == 0
    rows2 = (out / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows2) == len(rows)
    assert (out / "run" / "last.pt").stat().st_mtime_ns == mtime
