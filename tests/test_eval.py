"""Evaluation protocols (gmae.evaluate): kNN, linear probe, fine-tuning, reconstruction metrics.

Everything runs on tiny models (2 blocks, width 32, 16 px images) and a synthetic image folder
whose four classes differ in colour, so each test takes a second or two on a CPU.

Not here: "a random encoder must not beat a trained one on real data". Training an encoder that
is meaningfully better than random on CIFAR-10 takes minutes on this 2-core CPU, far beyond the
test budget; ``python -m gmae.evaluate.sanity`` does that comparison on real checkpoints (run it
for every results-table entry), and ``test_sanity_script_plumbing`` below checks its mechanics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.evaluate.common import Features, limit_dataset, split_features
from gmae.evaluate.knn import knn_eval, knn_scores, nn1_leave_one_out
from gmae.evaluate.linprobe import cached_probe, lars_param_groups, probe_head
from gmae.evaluate.recon import image_metrics

COLOURS = {
    "blue": (30, 30, 200),
    "green": (30, 200, 30),
    "red": (200, 30, 30),
    "yellow": (200, 200, 30),
}
TINY = {"encoder": "tiny", "embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 4,
        "decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}  # fmt: skip


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> str:
    """imagefolder spec: 4 colour classes of noisy 16x16 images, 12 train / 6 val per class."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        for name, rgb in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                noise = rng.normal(0, 25, (16, 16, 3))
                img = np.clip(np.array(rgb)[None, None] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return f"imagefolder:{root}"


def _tiny_config(name: str, spec: str) -> dict:
    from gmae.train.config import config_from_dict, config_to_dict

    model = {"name": name, **TINY, **({"num_gaussians": 16} if name == "gmae" else {})}
    return config_to_dict(
        config_from_dict({"model": model, "data": {"img_size": 16, "spec": spec}})
    )


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, colour_data) -> dict[str, Path]:
    """Tiny training checkpoints (random weights) and YAML configs for MAE and GMAE."""
    from gmae.models import create_model
    from gmae.train.checkpoint import model_kwargs, save_checkpoint
    from gmae.train.config import config_from_dict

    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name in ("mae", "gmae"):
        raw = _tiny_config(name, colour_data)
        torch.manual_seed(1)
        model = create_model(**model_kwargs(config_from_dict(raw)))
        save_checkpoint(root / f"{name}.pt", {"config": raw, "model": model.state_dict()})
        (root / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        out[name], out[f"{name}_yaml"] = root / f"{name}.pt", root / f"{name}.yaml"
    return out


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# --- kNN --------------------------------------------------------------------------------------


def _brute_force_knn(train_x, train_y, val_x, num_classes, k, t):
    scores = torch.zeros(len(val_x), num_classes, dtype=torch.float64)
    tr = [v / v.norm() for v in train_x.double()]
    for i, q in enumerate(val_x.double()):
        q = q / q.norm()
        sims = sorted(((float(q @ v), j) for j, v in enumerate(tr)), reverse=True)[:k]
        for s, j in sims:
            scores[i, train_y[j]] += math.exp(s / t)
    return scores


def test_knn_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    train_x, val_x = torch.randn(60, 8, generator=gen), torch.randn(23, 8, generator=gen)
    train_y = torch.randint(0, 5, (60,), generator=gen)
    for k, t in ((20, 0.07), (1, 0.5), (7, 1.0)):
        got = knn_scores(train_x, train_y, val_x, 5, k=k, temperature=t, chunk=7)
        ref = _brute_force_knn(train_x, train_y, val_x, 5, k, t)
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6)
        assert torch.equal(got.argmax(1), ref.argmax(1))


def test_knn_k_larger_than_train_set():
    x, y = torch.eye(3), torch.tensor([0, 1, 2])
    scores = knn_scores(x, y, x, 3, k=20)
    assert torch.equal(scores.argmax(1), y)


def test_nn1_leave_one_out_excludes_self():
    # Two copies of each point with different labels: without self-exclusion every point would
    # find itself (100 %); excluding self, each finds its twin with the other label (0 %).
    base = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    x = torch.cat([base, base])
    y = torch.cat([torch.zeros(5), torch.ones(5)]).long()
    assert nn1_leave_one_out(x, y, chunk=3) == 0.0
    # ... and it agrees with a brute-force reference on random data.
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(31, 6, generator=gen), torch.randint(0, 3, (31,), generator=gen)
    xn = torch.nn.functional.normalize(x, dim=1)
    sim = xn @ xn.T
    sim.fill_diagonal_(-2)
    ref = 100.0 * (y[sim.argmax(1)] == y).float().mean().item()
    assert nn1_leave_one_out(x, y, chunk=4) == pytest.approx(ref)


def _separable(n_per_class: int, seed: int) -> Features:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 10
    labels = torch.arange(4).repeat_interleave(n_per_class)
    x = centres[labels] + torch.randn(len(labels), 16, generator=gen)
    return Features(cls=x, mean=-x, labels=labels)


def test_protocols_reach_100_on_separable_features():
    train, val = _separable(20, 0), _separable(10, 1)
    knn = knn_eval(train, val, 4)
    for kind in ("cls", "mean"):
        assert knn[kind]["knn_top1"] == 100.0
        assert knn[kind]["nn1_loo_top1"] == 100.0
        probe = cached_probe(
            train.get(kind), train.labels, val.get(kind), val.labels, 4, max_iter=100
        )
        assert probe["top1"] == 100.0
        assert set(probe["holdout_top1"]) == {"1e-06", "1e-05", "0.0001", "0.001"}


class PatchColourModel(torch.nn.Module):
    """An identity-like feature extractor: each token is the mean colour of one patch."""

    img_size, patch_size = 16, 4

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.embed_dim = 3

    def forward_features(self, imgs):
        from gmae.models import patchify

        patches = patchify(imgs, 4).reshape(imgs.shape[0], 16, 16, 3).mean(2)
        return torch.cat([patches.mean(1, keepdim=True), patches], dim=1)


def test_identity_like_extractor_on_colour_images(colour_data):
    from types import SimpleNamespace

    from gmae.evaluate.linprobe import cached_linprobe

    loaded = SimpleNamespace(model=PatchColourModel(), img_size=16)
    (train, val), data = split_features(
        loaded, colour_data, ["train", "val"], torch.device("cpu"), batch_size=10
    )
    assert data["splits"] == {"train": 48, "val": 24} and data["num_classes"] == 4
    assert train.cls.shape == (48, 3) and val.mean.shape == (24, 3)
    for kind, r in knn_eval(train, val, 4).items():
        assert r["knn_top1"] == 100.0 and r["nn1_loo_top1"] == 100.0, kind
    for kind, r in cached_linprobe(train, val, 4, max_iter=100).items():
        assert r["top1"] == 100.0, kind


def test_cached_probe_is_deterministic():
    train, val = _separable(10, 2), _separable(5, 3)
    train.cls += torch.randn_like(train.cls) * 8  # make it hard so the answer is not trivial
    kwargs = {"wds": (1e-4, 1e-2), "max_iter": 30}
    a = cached_probe(train.cls, train.labels, val.cls, val.labels, 4, **kwargs)
    b = cached_probe(train.cls, train.labels, val.cls, val.labels, 4, **kwargs)
    assert a == b


def test_probe_head_and_lars_groups_follow_mae():
    head = probe_head(8, 3)
    assert isinstance(head[0], torch.nn.BatchNorm1d) and not head[0].affine
    assert head[0].eps == 1e-6
    groups = lars_param_groups(head, 0.0)
    assert [p.ndim for p in groups[0]["params"]] == [2] and groups[0]["always_adapt"]
    assert [p.ndim for p in groups[1]["params"]] == [1] and not groups[1]["always_adapt"]


def test_limit_dataset_is_seeded_and_mixes_classes(colour_data):
    from gmae.data import build_dataset
    from gmae.evaluate.common import dataset_targets

    ds = build_dataset(colour_data, "train")
    a, b = limit_dataset(ds, 12, seed=0), limit_dataset(ds, 12, seed=0)
    assert a.indices == b.indices and len(a) == 12
    assert len(set(dataset_targets(a))) > 1  # a prefix would be one class
    assert limit_dataset(ds, 1000) is ds


# --- command line -----------------------------------------------------------------------------


def test_knn_and_linprobe_cli(ckpts, colour_data, tmp_path, capsys):
    out = tmp_path / "knn.json"
    code, stdout, _ = _run(
        ["eval", "knn", "--ckpt", str(ckpts["mae"]), "--data", colour_data, "--num-workers", "0",
         "--json", str(out)], capsys,
    )  # fmt: skip
    assert code == 0 and "kNN" in stdout
    res = json.loads(out.read_text())
    assert res["protocol"] == "knn" and res["model"]["kind"] == "training"
    assert set(res["results"]) == {"cls", "mean"}
    assert set(res["results"]["cls"]) == {"knn_top1", "knn_top5", "nn1_loo_top1"}

    out = tmp_path / "lp.json"
    code, _, _ = _run(
        ["eval", "linprobe", "--ckpt", str(ckpts["gmae"]), "--data", colour_data, "--limit", "20",
         "--num-workers", "0", "--wd", "1e-4", "--max-iter", "50", "--json", str(out)], capsys,
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert code == 0 and res["data"]["splits"] == {"train": 20, "val": 20}
    assert res["results"]["cls"]["wd"] == 1e-4 and "top5" in res["results"]["mean"]


def test_random_baseline_cli(ckpts, colour_data, tmp_path, capsys):
    out = tmp_path / "knn_random.json"
    code, _, _ = _run(
        ["eval", "knn", "--ckpt", "random", "--config", str(ckpts["mae_yaml"]), "--data",
         colour_data, "--num-workers", "0", "--json", str(out)], capsys,
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert code == 0 and res["model"]["kind"] == "random" and res["model"]["embed_dim"] == 32


def test_mae_recipe_linprobe_cli(ckpts, colour_data, tmp_path, capsys):
    out = tmp_path / "lp_mae.json"
    code, _, _ = _run(
        ["eval", "linprobe", "--recipe", "mae", "--ckpt", str(ckpts["mae"]), "--data",
         colour_data, "--batch-size", "16", "--epochs", "2", "--warmup-epochs", "1",
         "--max-steps", "3", "--num-workers", "0", "--json", str(out)], capsys,
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert code == 0 and res["results"]["train"]["steps"] == 3
    assert res["results"]["train"]["lr"] == pytest.approx(0.1 * 16 / 256)
    assert 0 <= res["results"]["cls"]["top1"] <= 100


# --- fine-tuning ------------------------------------------------------------------------------


def test_finetune_loss_goes_down(ckpts, colour_data):
    from gmae.evaluate.common import load_split
    from gmae.evaluate.finetune import finetune, finetune_config, finetune_transforms
    from gmae.export.checkpoints import load_any

    loaded = load_any(str(ckpts["mae"]))
    cfg = finetune_config(
        "cpu", epochs=5, batch_size=16, max_steps=12, base_lr=0.05, warmup_epochs=0.0,
        layer_decay=0.75, drop_path=0.0, auto_augment="none", reprob=0.0, mixup=0.0,
        cutmix=0.0, smoothing=0.0,
    )  # fmt: skip
    mean, std = loaded.model.normalize.mean.flatten(), loaded.model.normalize.std.flatten()
    train_tf, val_tf = finetune_transforms(cfg, 16, mean.tolist(), std.tolist())
    train = load_split(colour_data, "train", train_tf)
    val = load_split(colour_data, "val", val_tf)
    res = finetune(loaded.model, train, val, 4, cfg, torch.device("cpu"))
    losses = res["step_losses"]
    assert res["steps"] == 12 and len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses
    assert res["history"][-1]["top1"] == res["top1"]


def test_finetune_cli_cpu_preset_with_ema(ckpts, colour_data, tmp_path, capsys):
    out = tmp_path / "ft.json"
    code, stdout, _ = _run(
        ["eval", "finetune", "--preset", "cpu", "--ckpt", str(ckpts["gmae"]), "--data",
         colour_data, "--batch-size", "8", "--max-steps", "2", "--ema-decay", "0.9",
         "--mixup", "0.8", "--num-workers", "0", "--json", str(out)], capsys,
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert code == 0 and res["results"]["steps"] == 2
    assert {"top1", "top5", "ema"} <= set(res["results"])
    s = res["settings"]  # the cpu preset, with mixup switched back on from the command line
    assert s["layer_decay"] == 0.75 and s["drop_path"] == 0.1 and s["base_lr"] == 2e-3
    assert s["mixup"] == 0.8 and s["cutmix"] == 0.0
    assert s["batch_size"] == 8 and s["epochs"] == 3


def test_finetune_presets():
    from gmae.evaluate import commands, finetune, linprobe

    assert tuple(finetune.PRESETS) == commands.FINETUNE_PRESETS
    assert linprobe.RECIPES == commands.LINPROBE_RECIPES
    assert linprobe.DEFAULT_WDS == commands.LINPROBE_WDS
    mae = finetune.finetune_config("mae")  # MAE's ViT-B recipe (docs/method.md)
    assert (mae.epochs, mae.batch_size * mae.accum_iter, mae.base_lr) == (100, 1024, 5e-4)
    assert (mae.layer_decay, mae.weight_decay, mae.drop_path) == (0.65, 0.05, 0.1)
    assert (mae.mixup, mae.cutmix, mae.smoothing, mae.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert mae.auto_augment == "rand-m9-mstd0.5-inc1"
    with pytest.raises(GmaeError, match="unknown fine-tune preset"):
        finetune.finetune_config("huge")


# --- reconstruction ---------------------------------------------------------------------------


def test_metrics_of_perfect_and_offset_reconstructions():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.8, (3, 16, 16))
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:12, 4:12] = True
    perfect = image_metrics(img, img.copy(), mask)
    assert perfect["psnr"] == math.inf and perfect["masked_psnr"] == math.inf
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["masked_ssim"] == pytest.approx(1.0)
    off = image_metrics(img, img + 0.1, mask)  # MSE 0.01 -> PSNR 20 dB
    assert off["psnr"] == pytest.approx(20.0) and off["masked_psnr"] == pytest.approx(20.0)
    assert image_metrics(img, img, None)["masked_psnr"] is None
    worse = img.copy()
    worse[:, mask] = 0.5
    m = image_metrics(img, worse, mask)
    assert m["masked_psnr"] < m["psnr"] and m["masked_ssim"] < m["ssim"] < 1


@pytest.mark.parametrize("name", ["mae", "gmae"])
def test_recon_cli(name, ckpts, colour_data, tmp_path, capsys):
    out = tmp_path / f"recon_{name}.json"
    code, stdout, _ = _run(
        ["eval", "recon", "--ckpt", str(ckpts[name]), "--data", colour_data, "--num-images", "6",
         "--batch-size", "4", "--num-workers", "0", "--json", str(out)], capsys,
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert code == 0 and [r["mask_ratio"] for r in res["results"]] == [0.75, 0.0]
    at_train, at_zero = res["results"]
    assert at_train["n_images"] == 6 and at_train["masked_psnr"] is not None
    assert at_zero["masked_psnr"] is None and at_zero["psnr"] is not None
    assert 0 < at_train["psnr"] < 60 and -1 <= at_train["ssim"] <= 1
    # per-image scores, for paired comparisons; the summary is their mean
    per_image = [im["masked_psnr"] for im in at_train["images"]]
    assert len(per_image) == 6 and at_train["masked_psnr"] == pytest.approx(np.mean(per_image))


def test_recon_mae_full_prediction_is_not_the_pasted_input(ckpts):
    """At mask ratio 0 MAE's visualisation is the input itself; the metric uses the decoder."""
    from gmae.evaluate.recon import reconstruct_batch
    from gmae.export.checkpoints import load_any

    model = load_any(str(ckpts["mae"])).model
    imgs = torch.rand(2, 3, 16, 16)
    recon, full, mask = reconstruct_batch(model, imgs, 0.0, None)
    assert torch.equal(recon, imgs) and not mask.any()
    assert not torch.allclose(full, imgs, atol=1e-3)


# --- errors -----------------------------------------------------------------------------------


def _one_line_error(argv, capsys, match: str) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmae: error:") and match in lines[0], err


def test_errors_are_one_line(ckpts, colour_data, tmp_path, capsys):
    data = ["--data", colour_data, "--num-workers", "0"]
    _one_line_error(
        ["eval", "knn", "--ckpt", str(tmp_path / "nope.pt"), *data], capsys, "not found"
    )
    _one_line_error(["eval", "knn", "--ckpt", str(ckpts["mae"]), "--data", "cifar100"], capsys,
                    "unknown data set spec")  # fmt: skip
    _one_line_error(["eval", "knn", "--ckpt", "random", *data], capsys, "needs --config")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    _one_line_error(["eval", "linprobe", "--ckpt", str(bad), *data], capsys, "cannot read")
    # incompatible: a checkpoint whose weights do not fit its own config
    ck = torch.load(ckpts["mae"], weights_only=True)
    ck["config"]["model"]["depth"] = 3
    torch.save(ck, tmp_path / "wrong.pt")
    _one_line_error(["eval", "knn", "--ckpt", str(tmp_path / "wrong.pt"), *data], capsys,
                    "does not fit")  # fmt: skip
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    _one_line_error(["eval", "recon", "--ckpt", str(tmp_path / "other.pt"), *data], capsys,
                    "is not a gmae training checkpoint")  # fmt: skip
    _one_line_error(["eval", "finetune", "--ckpt", str(ckpts["mae"]), "--preset", "cpu",
                     "--mixup", "0.8", "--batch-size", "7", *data], capsys,
                    "even --batch-size")  # fmt: skip


def test_sanity_script_plumbing(ckpts, colour_data, capsys):
    from gmae.evaluate.sanity import main as sanity_main

    args = ["--ckpt", str(ckpts["mae"]), "--data", colour_data, "--num-workers", "0"]
    code = sanity_main([*args, "--max-iter", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "OK" in out and "cls_knn_top1" in out


def test_randaugment_posterize_survives_zero_bits():
    """timm's RandAugment asks Pillow for 0-bit posterize at magnitude 10 (reached with mstd0.5);
    Pillow >= 12 raises, which killed fine-tuning runs. Our transform maps it to black."""
    from timm.data.auto_augment import RandAugment

    from gmae.evaluate.finetune import finetune_config, finetune_transforms

    train, _ = finetune_transforms(finetune_config("cpu"), 16, (0.5,) * 3, (0.5,) * 3)
    (ra,) = [t for t in train.transforms if isinstance(t, RandAugment)]
    (op,) = [op for op in ra.ops if "Posterize" in op.name]
    img = Image.new("RGB", (16, 16), (200, 100, 50))
    assert np.asarray(op.aug_fn(img, 0)).max() == 0
    assert (
        np.asarray(op.aug_fn(img, 4)).tolist() == np.asarray(img.point(lambda v: v & 0xF0)).tolist()
    )
