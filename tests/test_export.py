"""Model interop (gmae.export): timm exports and compact checkpoints (loading every format,
MAE release checkpoints included, is tests/test_loading.py)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.export import (
    create_timm_model,
    load_any,
    load_mae_release,
    load_model,
    save_compact,
    timm_state_dict,
    timm_vit_from_model,
)
from gmae.models import create_model
from gmae.train.checkpoint import model_kwargs, save_checkpoint
from gmae.train.config import config_from_dict, config_to_dict

# A non-standard geometry: 24 px images, 6 px patches (4x4 grid), width 48, 3 heads.
ODD = {"encoder": "tiny", "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 6,
       "decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}  # fmt: skip


def _checkpoint(tmp_path, name="mae", seed=0, **extra):
    model_cfg = {"name": name, **ODD, **extra, **({"num_gaussians": 8} if name == "gmae" else {})}
    raw = config_to_dict(config_from_dict({"model": model_cfg, "data": {"img_size": 24}}))
    torch.manual_seed(seed)
    model = create_model(**model_kwargs(config_from_dict(raw))).eval()
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, {"config": raw, "model": model.state_dict(), "epoch": 3, "step": 7})
    return path, model


@pytest.fixture
def images():
    return torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))


# --- timm -------------------------------------------------------------------------------------


def test_timm_export_matches_forward_features(tmp_path, images, capsys):
    ckpt, model = _checkpoint(tmp_path)
    out = tmp_path / "vit.safetensors"
    assert main(["export", "timm", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert "timm" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    name, kwargs = meta["timm_model"], json.loads(meta["timm_kwargs"])
    assert kwargs["img_size"] == 24 and kwargs["patch_size"] == 6 and kwargs["embed_dim"] == 48
    assert kwargs["global_pool"] == "token" and kwargs["class_token"] and not kwargs["fc_norm"]

    ours = model.forward_features(images).detach()
    # Plain timm, as a user would call it (custom_load=False: some timm ViT names default to
    # an .npz loader).
    vit = timm.create_model(
        name, pretrained=True, num_classes=0,
        pretrained_cfg_overlay=dict(file=str(out), custom_load=False), **kwargs,
    ).eval()  # fmt: skip
    with torch.no_grad():
        theirs = vit.forward_features(model.normalize(images))  # timm wants normalised input
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert vit.pos_embed.shape == (1, 1 + 16, 48)

    # The helper: same model, and timm's data config carries our normalisation.
    vit2 = create_timm_model(out)
    cfg = timm.data.resolve_data_config(model=vit2)
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert cfg["input_size"] == (3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(vit2(model.normalize(images)), ours[:, 0], atol=1e-5, rtol=0)


def test_timm_export_avg_pool_and_head(tmp_path, images):
    ckpt, model = _checkpoint(tmp_path, "gmae")
    out = tmp_path / "vit_avg.safetensors"
    assert main(["export", "timm", "--ckpt", str(ckpt), "--out", str(out), "--global-pool",
                 "avg"]) == 0  # fmt: skip
    vit = create_timm_model(out)
    with torch.no_grad():
        pooled = vit(model.normalize(images))
        ours = model.forward_features(images)[:, 1:].mean(1)
    torch.testing.assert_close(pooled, ours, atol=1e-5, rtol=0)
    assert create_timm_model(out, num_classes=5).head.out_features == 5


def test_finetune_vit_is_initialised_from_the_encoder(tmp_path):
    _, model = _checkpoint(tmp_path)
    vit = timm_vit_from_model(model, num_classes=7, drop_path_rate=0.1)
    theirs = vit.state_dict()
    for key, value in timm_state_dict(model.encoder).items():
        if not key.startswith("norm."):  # MAE's fine-tune drops the final norm for fc_norm
            torch.testing.assert_close(theirs[key], value)
    assert vit.global_pool == "avg" and vit.head.out_features == 7
    assert vit.head.weight.std() < 1e-3  # MAE: trunc_normal(std=2e-5)


# --- compact checkpoints ----------------------------------------------------------------------


def test_compact_checkpoint_roundtrip(tmp_path, images, capsys):
    ckpt, model = _checkpoint(tmp_path, "gmae")
    out = tmp_path / "model.safetensors"
    assert main(["export", "checkpoint", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    loaded, cfg = load_model(out)
    assert cfg.model["name"] == "gmae" and cfg.data.img_size == 24
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.forward_features(images), model.forward_features(images))

    half = tmp_path / "model16.safetensors"
    assert main(["export", "checkpoint", "--ckpt", str(ckpt), "--out", str(half), "--fp16"]) == 0
    assert half.stat().st_size < 0.6 * out.stat().st_size
    m16, _ = load_model(half)
    assert m16.encoder.cls_token.dtype == torch.float32
    torch.testing.assert_close(
        m16.forward_features(images), model.forward_features(images), atol=2e-2, rtol=0
    )
    # The evaluation loader reads both formats, and a different image size.
    assert load_any(str(out)).kind == "compact"
    assert load_any(str(out), img_size=48).img_size == 48


def test_eval_gives_the_same_results_from_both_formats(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for c, colour in enumerate(((250, 0, 0), (0, 0, 250))):
            (root / split / str(c)).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (24, 24), tuple(max(0, v - 20 * i) for v in colour)).save(
                    root / split / str(c) / f"{i}.png"
                )
    ckpt, model = _checkpoint(tmp_path)
    compact = tmp_path / "m.safetensors"
    save_compact(model, config_from_dict(torch.load(ckpt, weights_only=True)["config"]), compact)
    results = []
    for path in (ckpt, compact):
        out = tmp_path / f"{path.suffix}.json"
        argv = ["eval", "knn", "--ckpt", str(path), "--data", f"imagefolder:{root}"]
        assert main([*argv, "--num-workers", "0", "--json", str(out)]) == 0
        results.append(json.loads(out.read_text())["results"])
    assert results[0] == results[1]


# --- errors -----------------------------------------------------------------------------------


def test_export_errors(tmp_path, capsys):
    torch.manual_seed(0)
    src = create_model("mae", encoder="tiny", depth=1, img_size=24, patch_size=6)
    release = tmp_path / "release.pth"
    torch.save({"model": timm_state_dict(src.encoder)}, release)  # an MAE release checkpoint
    with pytest.raises(GmaeError, match="are .safetensors files"):
        save_compact(src, None, tmp_path / "x.pt")
    assert main(["export", "checkpoint", "--ckpt", str(release),
                 "--out", str(tmp_path / "x.safetensors")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carries no gmae training config" in err[0]

    ckpt, _ = _checkpoint(tmp_path)
    assert main(["export", "timm", "--ckpt", str(ckpt), "--out", str(tmp_path / "v.safetensors"),
                 "--model-name", "not_a_vit"]) == 2  # fmt: skip
    assert "unknown timm model name" in capsys.readouterr().err
    timm_file = tmp_path / "v2.safetensors"
    assert main(["export", "timm", "--ckpt", str(ckpt), "--out", str(timm_file)]) == 0
    with pytest.raises(GmaeError, match="timm export"):
        load_model(timm_file)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(GmaeError, match="not a valid safetensors file"):
        load_model(junk)
    with pytest.raises(GmaeError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    finetuned = {**timm_state_dict(src.encoder), "fc_norm.weight": torch.ones(192)}
    del finetuned["norm.weight"]
    with pytest.raises(GmaeError, match="fine-tuned"):
        load_mae_release(finetuned)
