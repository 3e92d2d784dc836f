"""The pretraining engine against a tiny fake model and data set (fast, no renderer needed)."""

from __future__ import annotations

import inspect
import math
import os
import pathlib
import signal
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image
from timm.utils import random_seed
from torch import nn

from gmae.cli import error_message
from gmae.errors import GmaeError
from gmae.models.gmae import GMAE
from gmae.train import checkpoint as ckpt_io
from gmae.train import engine
from gmae.train.config import (
    check_model,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_names,
    save_config,
)
from gmae.train.optim import build_optimizer, lr_at, set_lr
from gmae.train.outputs import read_metrics
from gmae.train.sampling import ResumableSampler, SeededSamples

# --- a tiny fake MAE-like model and data set -------------------------------------------------

IMG, PATCH, DIM = 16, 4, 16
SIGNAL_AT_CALL = {}  # {call: signal}: FakeModel sends itself that signal (a scheduler's SIGTERM)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_dim, self.num_patches = DIM, (IMG // PATCH) ** 2
        self.embed = nn.Linear(3 * PATCH * PATCH, DIM)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, DIM) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.norm = nn.LayerNorm(DIM)


class FakeModel(nn.Module):
    """Linear patch encoder on the visible patches; predicts every patch from the pooled latent.

    ``nan_calls``: training forward calls (0-based) whose loss is NaN.
    """

    def __init__(self, nan_calls=(), **_):
        super().__init__()
        self.encoder = _Encoder()
        self.head = nn.Linear(DIM, 3 * PATCH * PATCH)
        self.nan_calls, self.calls = set(nan_calls), 0

    pixel_output = True  # the hooks the engine calls (gmae.models.base.MaskedImageModel's)

    def after_step(self, step, total_steps):
        pass

    def no_weight_decay(self):
        return {"encoder.pos_embed", "encoder.cls_token"}

    def patchify(self, imgs):
        b = imgs.shape[0]
        x = imgs.reshape(b, 3, IMG // PATCH, PATCH, IMG // PATCH, PATCH)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, -1, 3 * PATCH * PATCH)

    def forward(self, imgs, mask_ratio=None, noise=None):
        x = self.patchify(imgs)
        b, n, _ = x.shape
        if noise is None:
            noise = torch.rand(b, n)
        keep = noise.argsort(dim=1)[:, : n // 4]
        tokens = self.encoder.embed(x) + self.encoder.pos_embed
        vis = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, DIM))
        latent = self.encoder.norm(torch.cat([self.encoder.cls_token.expand(b, -1, -1), vis], 1))
        pred = self.head(latent.mean(1, keepdim=True) + self.encoder.pos_embed)
        mask = torch.ones(b, n).scatter_(1, keep, 0.0)
        loss = (((pred - x) ** 2).mean(-1) * mask).sum() / mask.sum()
        if self.training:
            if self.calls in SIGNAL_AT_CALL:
                os.kill(os.getpid(), SIGNAL_AT_CALL[self.calls])
            if self.calls in self.nan_calls:
                loss = loss * float("nan")
            self.calls += 1
        return type("Out", (), {"loss": loss, "mask": mask, "pred": pred, "latent": latent})

    @torch.no_grad()
    def reconstruct(self, imgs):
        self.forward(imgs)
        return {"input": imgs, "masked": imgs * 0.5, "recon": imgs.clamp(0, 1), "mask_image": imgs}


class FakeImages(torch.utils.data.Dataset):
    classes = ["a", "b"]

    def __init__(self, n=24, size=20):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i]), i % 2


def fake_build_model(cfg):
    return FakeModel(**{k: v for k, v in cfg.model.items() if k != "name"})


def fake_build_data(cfg):
    from gmae.data import eval_transform, pretrain_transform

    train = FakeImages()
    val = [(eval_transform(IMG)(train[i][0]), 0) for i in range(4)]
    return train, pretrain_transform(IMG, cfg.data.scale), val


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(engine, "build_model", fake_build_model)
    monkeypatch.setattr(engine, "build_data", fake_build_data)


def tiny_config(**sections):
    raw = {
        "model": {"name": "mae"},
        "data": {"spec": "fake", "img_size": IMG, "num_workers": 0},
        "optim": {"epochs": 2, "batch_size": 4, "accum_iter": 2, "base_lr": 0.05,
                  "warmup_epochs": 1, "clip_grad": 1.0},
        "run": {"log_every": 1, "vis_every": 1, "vis_images": 4, "ckpt_every": 1},
    }  # fmt: skip
    for name, values in sections.items():
        raw[name].update(values)
    return config_from_dict(raw)


def final_weights(out):
    return torch.load(out / "last.pt", weights_only=True)["model"]


def curve(out, keys=("step", "epoch", "loss", "lr", "grad_norm", "skipped")):
    return [{k: row[k] for k in keys} for row in read_metrics(out / "metrics.jsonl")]


# --- config --------------------------------------------------------------------------------


def test_presets_load_and_round_trip(tmp_path):
    assert {"gmae_tiny_cifar10", "mae_tiny_cifar10", "gmae_base_imagenet"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        save_config(cfg, tmp_path / "c.yaml")
        assert load_config(tmp_path / "c.yaml") == cfg


# Keys that size a model for the machine (docs/training.md); the rest of a preset's model section
# is the recipe, and docs/models.md must tag every value that differs from the paper's default.
SIZE_KEYS = {"name", "encoder", "patch_size", "decoder_dim", "decoder_depth", "decoder_num_heads"}


def test_cpu_gmae_preset_departures_are_documented():
    defaults = {
        k: p.default for k, p in inspect.signature(GMAE.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }  # fmt: skip
    model = load_config("gmae_tiny_imagenette64").model
    departures = {k for k, v in model.items() if k not in SIZE_KEYS and defaults.get(k) != v}
    assert {"scale_cap", "background", "query_anchor"} <= departures
    docs = (pathlib.Path(__file__).parents[1] / "docs" / "models.md").read_text()
    table = docs.split("| setting | paper / authors | `gmae_tiny_imagenette64` | why |")[1]
    table = table.split("\n\n")[0]
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in table.splitlines()
        if line.startswith("| `")
    }
    assert departures <= rows, f"untagged in docs/models.md: {sorted(departures - rows)}"


def test_overrides_parse_yaml_values():
    cfg = load_config(
        "gmae_tiny_cifar10",
        ["optim.base_lr=1e-4", "optim.betas=[0.9, 0.99]", "model.num_gaussians=32",
         "optim.clip_grad=null", "run.online_probe=true"],
    )  # fmt: skip
    assert cfg.optim.base_lr == 1e-4 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.model["num_gaussians"] == 32 and cfg.optim.clip_grad is None
    assert cfg.run.online_probe is True


def test_norm_pix_is_the_deprecated_config_key_of_norm_pix_loss():
    with pytest.warns(FutureWarning, match="'model.norm_pix' is deprecated"):
        cfg = load_config("gmae_tiny_cifar10", ["model.norm_pix=true"])
    assert cfg.model["norm_pix_loss"] is True and "norm_pix" not in cfg.model
    # configs stored in old checkpoints: renamed silently
    old = {"model": {"name": "gmae", "norm_pix": True}}
    assert config_from_dict(old).model == {"name": "gmae", "norm_pix_loss": True}
    with pytest.raises(GmaeError, match="disagree"):
        config_from_dict({"model": {"name": "gmae", "norm_pix": True, "norm_pix_loss": False}})
    with pytest.raises(GmaeError, match="unknown config key 'model.decoder'"):
        check_model({"name": "gmae", "decoder": {"dim": 32}}, 32)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("bogus.x=1", "unknown config key 'bogus'"),
        ("optim.epochs=ten", "'optim.epochs' expects int"),
        ("optim.epochs=1.5", "'optim.epochs' expects int"),
        ("run.online_probe=1", "'run.online_probe' expects bool"),
        ("run.amp=fp8", "'run.amp' must be one of"),
        ("optim.betas=[0.9]", "'optim.betas' expects a list of 2"),
        ("optim.batch_size=0", "'optim.batch_size' must be positive"),
        ("model.name=vit", "'model.name' must be"),
        ("optim", "--set expects key.sub=value"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(GmaeError, match=message.replace("[", r"\[")):
        load_config("mae_tiny_cifar10", [override])


def test_missing_config_file():
    with pytest.raises(GmaeError, match="not found"):
        load_config("/nonexistent/x.yaml")
    with pytest.raises(GmaeError, match="unknown config 'nope'"):
        load_config("nope")


# --- optimizer and schedule ------------------------------------------------------------------


def test_lr_schedule_endpoints():
    lr, lo = 1.0, 0.1
    assert lr_at(0, 100, 10, lr, lo) == 0.0
    assert lr_at(5, 100, 10, lr, lo) == pytest.approx(0.5)
    assert lr_at(10, 100, 10, lr, lo) == pytest.approx(lr)  # warmup ends at the peak
    assert lr_at(55, 100, 10, lr, lo) == pytest.approx((lr + lo) / 2)  # cosine midpoint
    assert lr_at(100, 100, 10, lr, lo) == pytest.approx(lo)
    assert lr_at(0, 100, 0, lr, lo) == pytest.approx(lr)  # no warmup
    values = [lr_at(s, 100, 10, lr, lo) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_groups():
    model = FakeModel()
    opt = build_optimizer(
        model, 1e-3, 0.05, (0.9, 0.95), {"encoder.pos_embed", "encoder.cls_token"}
    )
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert groups[0.05] == {"encoder.embed.weight", "head.weight"}
    assert groups[0.0] == {
        "encoder.embed.bias", "head.bias", "encoder.norm.weight", "encoder.norm.bias",
        "encoder.pos_embed", "encoder.cls_token",
    }  # fmt: skip
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_lr_scale_splits_groups_and_set_lr_keeps_it():
    model = FakeModel()
    names = {id(p): n for n, p in model.named_parameters()}
    # multiplier 1 everywhere: exactly the two weight-decay groups (old checkpoints still load)
    opt = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95), lr_scale=lambda name: 1.0)
    assert len(opt.param_groups) == 2 and all("lr_scale" not in g for g in opt.param_groups)
    opt = build_optimizer(
        model, 1e-3, 0.05, (0.9, 0.95), {"encoder.pos_embed", "encoder.cls_token"},
        lr_scale=lambda name: 0.25 if name.startswith("head.") else 1.0,
    )  # fmt: skip
    groups = {
        (g["weight_decay"], g.get("lr_scale", 1.0)): {names[id(p)] for p in g["params"]}
        for g in opt.param_groups
    }
    assert groups == {
        (0.05, 1.0): {"encoder.embed.weight"},
        (0.05, 0.25): {"head.weight"},
        (0.0, 1.0): {"encoder.embed.bias", "encoder.norm.weight", "encoder.norm.bias",
                     "encoder.pos_embed", "encoder.cls_token"},
        (0.0, 0.25): {"head.bias"},
    }  # fmt: skip
    set_lr(opt, 2e-3)
    assert {g.get("lr_scale", 1.0): g["lr"] for g in opt.param_groups} == {1.0: 2e-3, 0.25: 5e-4}


def test_decoder_lr_scale_in_a_run_and_on_resume(tmp_path, fake):
    cfg = tiny_config(optim={"epochs": 1, "decoder_lr_scale": 0.5}, run={"vis_images": 0})
    engine.pretrain(cfg, tmp_path / "a")
    opt = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["optimizer"]
    lrs = sorted((g.get("lr_scale", 1.0), g["lr"]) for g in opt["param_groups"])
    assert [scale for scale, _ in lrs] == [0.5, 0.5, 1.0, 1.0]
    assert lrs[0][1] == lrs[1][1] == pytest.approx(lrs[2][1] / 2) and lrs[2][1] == lrs[3][1] > 0
    # the head (outside the encoder) moved less than it would at one rate
    engine.pretrain(tiny_config(optim={"epochs": 1}, run={"vis_images": 0}), tmp_path / "b")
    random_seed(cfg.run.seed, 0)  # as the engine does before building the model
    init = fake_build_model(cfg).state_dict()
    moved = {
        run: (final_weights(tmp_path / run)["head.weight"] - init["head.weight"]).norm()
        for run in ("a", "b")
    }
    assert moved["a"] < moved["b"]
    # a checkpoint trained at one rate does not resume with two, and the reverse
    with pytest.raises(GmaeError, match="decoder_lr_scale 1, this run has 0.5"):
        engine.pretrain(tiny_config(optim={"decoder_lr_scale": 0.5}), tmp_path / "b", resume=True)
    with pytest.raises(GmaeError, match="decoder_lr_scale 0.5, this run has 1"):
        engine.pretrain(tiny_config(), tmp_path / "a", resume=True)
    # the run's config sets the multiplier on resume, not the checkpoint's
    engine.pretrain(tiny_config(optim={"decoder_lr_scale": 0.25}), tmp_path / "a", resume=True)
    opt = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["optimizer"]
    assert sorted(g.get("lr_scale", 1.0) for g in opt["param_groups"]) == [0.25, 0.25, 1.0, 1.0]
    with pytest.raises(GmaeError, match="'optim.decoder_lr_scale' must be positive"):
        tiny_config(optim={"decoder_lr_scale": 0.0})


# --- data order ----------------------------------------------------------------------------


def test_samples_are_pure_functions_of_seed_epoch_index():
    from gmae.data import pretrain_transform

    ds = SeededSamples(FakeImages(), pretrain_transform(IMG), 16, seed=3)
    torch.manual_seed(0)
    a = ds[5]
    torch.rand(10)  # global RNG state does not matter ...
    b = ds[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    state = torch.get_rng_state()
    ds.set_epoch(1)
    c = ds[5]
    assert torch.equal(state, torch.get_rng_state())  # ... and is not disturbed
    assert not torch.equal(a[2], c[2])


def test_sampler_resumes_mid_epoch_and_splits_like_one_process():
    ds = list(range(23))
    one = ResumableSampler(ds, 1, 0, seed=1)
    one.set_epoch(4)
    full = list(one)
    one.set_epoch(4, start=6)
    assert list(one) == full[6:]
    two = [ResumableSampler(ds, 2, r, seed=1) for r in range(2)]
    for s in two:
        s.set_epoch(4)
    r0, r1 = (list(s) for s in two)
    # global batch of 4 (one process) == 2 + 2 (two processes), as sets
    for i in range(len(r0) // 2):
        assert set(full[4 * i : 4 * i + 4]) == set(r0[2 * i : 2 * i + 2] + r1[2 * i : 2 * i + 2])


# --- checkpoints ---------------------------------------------------------------------------


def test_atomic_checkpoint_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt_io.save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(GmaeError, match="cannot save checkpoint .*disk full.*last.pt is intact"):
        ckpt_io.save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "config": {}})
    monkeypatch.undo()
    assert torch.equal(ckpt_io.load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_rng_state_round_trips_through_weights_only(tmp_path):
    import random

    state = ckpt_io.rng_state()
    torch.save({"rng": state}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]
    ckpt_io.set_rng_state(loaded)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])  # noqa: NPY002
    assert random.random() == expected[2]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(GmaeError, match="not found"):
        ckpt_io.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GmaeError, match="cannot read checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}, "config": {}, "evil": Image.new("RGB", (1, 1))}, tmp_path / "p.pt")
    with pytest.raises(GmaeError, match="cannot read checkpoint"):  # weights_only refuses
        ckpt_io.load_checkpoint(tmp_path / "p.pt")
    with pytest.raises(GmaeError, match="different model config.*decoder_depth"):
        ckpt_io.check_compatible(
            {"model": {"name": "mae", "decoder_depth": 2}, "data": {"img_size": 32}},
            {"model": {"name": "mae", "decoder_depth": 4}, "data": {"img_size": 32}},
            "x.pt",
        )


# --- the engine ----------------------------------------------------------------------------


def test_pretrain_writes_run_and_resumes_bit_for_bit(tmp_path, fake, monkeypatch):
    cfg = tiny_config()  # 24 images / (4 x 2 accum) = 3 steps per epoch, 2 epochs
    full = tmp_path / "full"
    summary = engine.pretrain(cfg, full)
    assert summary["step"] == 6 and summary["epoch"] == 2
    names = sorted(p.name for p in full.iterdir())
    assert names == [".gmae-run", "checkpoint-0001.pt", "checkpoint-0002.pt", "config.yaml",
                     "last.pt", "metrics.jsonl", "tb", "vis"]  # fmt: skip
    assert sorted(p.name for p in (full / "vis").iterdir()) == ["recon-0001.png", "recon-0002.png"]
    assert load_config(full / "config.yaml") == cfg
    rows = read_metrics(full / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["lr"] == 0.0 and rows[0]["images_per_s"] > 0
    assert rows[3]["lr"] == pytest.approx(0.05 * 8 / 256)  # warmup ends after epoch 1
    ckpt = torch.load(full / "last.pt", weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "rng", "config", "epoch", "step", "scaler"}
    assert config_from_dict(ckpt["config"]) == cfg

    # interrupted at step 2 (mid epoch 0) and 4 (mid epoch 1), resumed each time; loading in a
    # worker process changes nothing either
    part = tmp_path / "part"
    engine.pretrain(tiny_config(data={"num_workers": 1}), part, max_steps=2)
    assert torch.load(part / "last.pt", weights_only=True)["step_in_epoch"] == 2
    with pytest.raises(GmaeError, match="already holds a run") as info:
        engine.pretrain(cfg, part)
    # the library names the argument; the command line (gmae.cli.error_message) the flags
    assert info.value.argument == "resume" and "pass resume to continue" in str(info.value)
    assert "pass --resume to continue it, or choose another --out" in error_message(info.value)
    # SIGUSR1 during step 4 (micro-batch 4 of this process): stop after it, last.pt saved
    monkeypatch.setitem(SIGNAL_AT_CALL, 3, signal.SIGUSR1)
    summary = engine.pretrain(cfg, part, resume=True)
    assert summary["interrupted"] and summary["step"] == 4
    monkeypatch.delitem(SIGNAL_AT_CALL, 3)
    engine.pretrain(cfg, part, resume=part / "last.pt")
    assert curve(part) == curve(full)
    for k, v in final_weights(full).items():
        assert torch.equal(v, final_weights(part)[k]), k


def test_incompatible_resume(tmp_path, fake):
    engine.pretrain(tiny_config(optim={"epochs": 1}), tmp_path)
    other = tiny_config(model={"nan_calls": [99]})
    with pytest.raises(GmaeError, match="different model config.*nan_calls"):
        engine.pretrain(other, tmp_path, resume=True)
    with pytest.raises(GmaeError, match="effective batch of 8, this run has 4"):
        engine.pretrain(tiny_config(optim={"accum_iter": 1}), tmp_path, resume=True)
    # the same effective batch split differently is fine (epoch 2 of 2)
    engine.pretrain(tiny_config(optim={"accum_iter": 1, "batch_size": 8}), tmp_path, resume=True)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_nonfinite_loss_skips_step_then_stops(tmp_path, fake):
    # micro-batch 2 (step 2's first) is NaN: step 2 is skipped, weights unchanged by it
    cfg = tiny_config(model={"nan_calls": [2]}, run={"vis_images": 0})
    engine.pretrain(cfg, tmp_path / "a", max_steps=3)
    rows = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["skipped"] for r in rows] == [0, 1, 1]
    assert rows[1]["loss"] is None and math.isfinite(rows[2]["loss"])  # NaN is written as null

    cfg = tiny_config(model={"nan_calls": list(range(4, 100))}, run={"max_nonfinite": 3})
    with pytest.raises(GmaeError, match="non-finite for 3 steps in a row"):
        engine.pretrain(cfg, tmp_path / "b")
    assert [r["skipped"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [0, 0, 1, 2, 3]


def test_online_probe_logs_accuracy(tmp_path, fake):
    cfg = tiny_config(optim={"epochs": 1}, run={"online_probe": True, "vis_images": 0})
    engine.pretrain(cfg, tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert all(0 <= r["probe_acc"] <= 1 and r["probe_loss"] > 0 for r in rows)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["probe"] is not None


# --- two processes (gloo) == one process ---------------------------------------------------


def _ddp_worker(rank, world, port, out, raw):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    engine.build_model, engine.build_data = fake_build_model, fake_build_data
    engine.pretrain(config_from_dict(raw), out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, fake):
    import torch.multiprocessing as mp

    # global batch 8 per step: 1 process x 8, or 2 processes x 4
    one = tiny_config(optim={"batch_size": 8, "accum_iter": 1}, run={"vis_images": 0})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine.pretrain(one, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    raw = config_to_dict(one)
    raw["optim"]["batch_size"] = 4
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "two", raw), nprocs=2)

    a, b = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    # Same samples, same masks; only the float summation order differs (a mean over 8 vs the
    # average of two means over 4, then gloo's all-reduce): ~1e-7 relative per step.
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=1e-6)
    np.testing.assert_allclose([r["grad_norm"] for r in a], [r["grad_norm"] for r in b], rtol=1e-6)
    wa, wb = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def _cli_worker(rank, cases, results):
    import contextlib
    import io

    from gmae.cli import main

    torch.set_num_threads(1)
    engine.build_model, engine.build_data = fake_build_model, fake_build_data
    ckpt_io.check_metadata = lambda *a: None  # the stored config names the real MAE, not Fake
    lines = []
    for port, argvs in cases:
        os.environ.update(
            RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argvs[rank])
        errors = [line for line in err.getvalue().splitlines() if line.startswith("gmae: error")]
        lines.append(" ".join([str(rc), *errors]))
    (results / f"cli{rank}.txt").write_text("\n".join(lines))


@pytest.mark.slow  # two processes: about 10 s, mostly importing torch twice
def test_pretrain_cli_checks_on_rank0_only(tmp_path):
    """gmae pretrain under torchrun with a --out per rank (no shared file system): the checks
    of --out and the config of --resume come from rank 0; other ranks' directories do not
    matter (each rank used to check its own and die, leaving the others waiting)."""
    import torch.multiprocessing as mp

    config = tmp_path / "tiny.yaml"
    save_config(tiny_config(optim={"epochs": 4}, run={"vis_images": 0}), config)
    out0, out1 = tmp_path / "out0", tmp_path / "out1"
    out1.mkdir()
    (out1 / "last.pt").write_bytes(b"stale")  # rank 1 alone would refuse a fresh run here
    fresh = [["pretrain", "--config", str(config), "--out", str(o), "--max-steps", "2"]
             for o in (out0, out1)]  # fmt: skip
    (out1 / "resumed").mkdir()  # holds no checkpoint and no config: both come from rank 0
    resume = [["pretrain", "--resume", "--out", str(o), "--max-steps", "4"]
              for o in (out0, out1 / "resumed")]  # fmt: skip
    cases = [(_free_port(), fresh), (_free_port(), resume)]
    ctx = mp.start_processes(_cli_worker, args=(cases, tmp_path), nprocs=2, join=False)
    deadline, done = time.monotonic() + 120, False
    try:
        while not done and time.monotonic() < deadline:
            done = ctx.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()  # a rank left waiting for one that died
    assert done, "a rank hung"
    r0, r1 = ((tmp_path / f"cli{r}.txt").read_text().splitlines() for r in range(2))
    assert r0 == r1 == ["0", "0"]
    ckpt = torch.load(out0 / "last.pt", weights_only=True)
    assert ckpt["step"] == 4
    assert (out1 / "last.pt").read_bytes() == b"stale"  # rank 1 writes nothing


def test_total_steps_sets_the_run_and_its_schedule(tmp_path, fake):
    # 3 steps per epoch; optim.total_steps=4 ends in the middle of epoch 1, and the cosine
    # schedule spans those 4 steps (it reaches min_lr at the end, not at step 6).
    cfg = tiny_config(optim={"total_steps": 4, "min_lr": 0.001})
    summary = engine.pretrain(cfg, tmp_path)
    assert summary["step"] == 4 and summary["epoch"] == 1
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    lr = 0.05 * 8 / 256
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(s, 4, 3, lr, 0.001) for s in range(4)])
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["schedule"]["total_steps"] == 4 and ckpt["step_in_epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == [
        "recon-0001.png",
        "recon-step0000004.png",
    ]  # the first epoch, then the end of the run
    assert engine.pretrain(cfg, tmp_path, resume=True)["step"] == 4  # nothing left to do
    with pytest.raises(GmaeError, match="total_steps"):
        tiny_config(optim={"total_steps": 0})
