"""``gmae pretrain`` end to end with the real (tiny) MAE and GMAE on a generated image folder."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gmae.cli import main
from gmae.train.checkpoint import load_pretrained
from gmae.train.outputs import read_metrics

TINY = [
    "data.img_size=16", "data.num_workers=1", "data.scale=[0.5, 1.0]",
    "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
    "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
    "optim.epochs=2", "optim.batch_size=4", "optim.warmup_epochs=1",
    "run.log_every=1", "run.vis_every=1", "run.vis_images=4", "run.ckpt_every=1",
]  # fmt: skip


def pretrain(*args):
    return main(["pretrain", *args])


@pytest.mark.parametrize("name", ["gmae", "mae"])
def test_pretrain_cli_end_to_end(tmp_path, folder, name, capsys):
    out = tmp_path / "run"
    extra = ["model.num_gaussians=8"] if name == "gmae" else []
    sets = ["--set", f"data.spec=imagefolder:{folder}", *TINY, *extra]
    args = ["--config", f"{name}_tiny_cifar10", *sets, "--out", str(out)]
    # 12 images / batch 4 = 3 steps per epoch; stop after 2, then resume to the end
    assert pretrain(*args, "--max-steps", "2") == 0
    assert pretrain(*args) == 2  # refuses to overwrite a run
    assert "already holds a run" in capsys.readouterr().err
    assert pretrain("--out", str(out), "--resume") == 0  # config from the checkpoint

    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
    # Validation loss on the fixed held-out batch, and GMAE's Gaussian health, every log step;
    # the resumed run logs exactly what the uninterrupted one would have (fixed batch and mask).
    assert all(np.isfinite(r["val_loss"]) for r in rows)
    if name == "gmae":
        assert all(r["render_backend"] == "fast" for r in rows)  # what rendered, on CPU
        assert all(0 <= r["health/pinned_size"] <= 1 for r in rows)
        assert {"health/sat_scale", "health/z_std_within", "health/masked_fraction"} <= set(rows[0])
    else:
        assert not any(k.startswith("health/") or k == "render_backend" for k in rows[0])
    for f in ("config.yaml", "last.pt", "checkpoint-0001.pt", "checkpoint-0002.pt"):
        assert (out / f).is_file(), f
    png = Image.open(out / "vis" / "recon-0002.png")
    assert png.size[0] > 4 * 16 and png.size[1] > 3 * 16  # 4 columns, 3 rows
    assert list((out / "tb").iterdir())

    model, cfg = load_pretrained(out / "last.pt")
    assert cfg.model["name"] == name and not model.training
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())


def test_pretrain_cli_errors(tmp_path, capsys):
    assert pretrain("--config", "gmae_tiny_cifar10", "--set", "optim.lr=1", "--out", "x") == 2
    assert "unknown config key 'optim.lr'" in capsys.readouterr().err
    assert pretrain("--out", str(tmp_path), "--resume", str(tmp_path / "no.pt")) == 2
    assert "not found" in capsys.readouterr().err
    assert pretrain("--out", str(tmp_path)) == 2
    assert "--config is required" in capsys.readouterr().err


def test_bench_train_writes_json(tmp_path, monkeypatch, capsys):
    from gmae.train import bench

    monkeypatch.setattr(bench, "load_config", _tiny_loader())
    path = tmp_path / "bench.json"
    assert main(["bench", "train", "--presets", "cifar10", "--repeats", "1", "--warmup", "0",
                 "--json", str(path)]) == 0  # fmt: skip
    report = json.loads(path.read_text())
    (row,) = report["results"]
    assert row["gmae"]["step_s"] > 0 and row["mae"]["step_s"] > 0
    assert 0 < row["gmae"]["render_share"] < 1
    assert 0 < row["gmae"]["render_share_cpu"] < 1
    assert "share (cpu)" in capsys.readouterr().out


def _tiny_loader():
    from gmae.train.config import load_config

    def load(name, overrides=()):
        extra = ["model.num_gaussians=8"] if name.startswith("gmae") else []
        return load_config(name, [*TINY, *extra, *overrides])

    return load


def test_tensorboard_holds_every_monitor(tmp_path, folder):
    """Read back with TensorBoard's own event reader: scalars (train, validation, health),
    health histograms, the hparams view, and reconstruction + depth-layer pictures every
    run.vis_every_steps steps and at the end of a run stopped by --max-steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    sets = ["--set", f"data.spec=imagefolder:{folder}", *TINY, "model.num_gaussians=8",
            "run.vis_every=10", "run.vis_every_steps=2"]  # fmt: skip
    # 3 steps per epoch: pictures at step 2 (every 2 steps) and 3 (--max-steps: the end).
    assert (
        pretrain("--config", "gmae_tiny_cifar10", *sets, "--out", str(out), "--max-steps", "3") == 0
    )

    ea = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "histograms": 0})
    ea.Reload()
    tags = ea.Tags()
    for tag in ("train/loss", "train/val_loss", "train/lr", "train/health/pinned_size",
                "train/health/healthy", "train/health/sat_scale"):  # fmt: skip
        assert [e.step for e in ea.Scalars(tag)] == [1, 2, 3], tag
    for tag in ("health/raw_z", "health/raw_scale", "health/size_over_cap",
                "health/screen_std_px", "health/z", "health/opacity"):  # fmt: skip
        hist = ea.Histograms(tag)
        assert [e.step for e in hist] == [1, 2, 3], tag
        assert hist[-1].histogram_value.num > 0, tag
    n_vis = 4
    for tag, columns in (
        ("reconstruction", n_vis),
        ("depth_layers", 6),
    ):  # 6: full, 4 groups, depth
        images = ea.Images(tag)
        assert [e.step for e in images] == [2, 3], tag
        png = Image.open(io.BytesIO(images[-1].encoded_image_string))
        assert png.size[0] > columns * 16 and png.size[1] > 3 * 16, (tag, png.size)
    assert "depth_layers" in tags["images"] and len(ea.Images("depth_layers")) == 2
    for name in (
        "recon-step0000002",
        "layers-step0000002",
        "recon-step0000003",
        "layers-step0000003",
    ):
        assert (out / "vis" / f"{name}.png").is_file(), name

    content = ea.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    names = {h.name for h in exp.hparam_infos}
    assert {"optim.base_lr", "model.num_gaussians", "data.spec", "run.seed"} <= names
    assert {m.name.tag for m in exp.metric_infos} >= {"train/loss", "train/val_loss"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["model.num_gaussians"].number_value == 8
