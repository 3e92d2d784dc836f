"""The one loader (gmae.loading): every format through ``load_any``, the old import paths, every
``--ckpt`` command going through it and one-line errors for hostile or incompatible files (its
place below train / evaluate / zeroshot / export / report: tests/test_layering.py). Tiny models,
all offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gmae.cli import error_message, main
from gmae.errors import ArgumentError, GmaeError
from gmae.loading import formats, load_any, load_mae_release, loaders
from gmae.train.config import config_from_dict, config_to_dict, save_config

# Width 192 (ViT-Tiny's): formats without a head count (MAE release .pth) assume the standard 3.
TINY = {"encoder": "tiny", "depth": 1, "patch_size": 6, "decoder_dim": 32, "decoder_depth": 1,
        "decoder_num_heads": 2}  # fmt: skip


def _config(name: str = "mae", **extra):
    model = {"name": name, **TINY, **extra, **({"num_gaussians": 8} if name == "gmae" else {})}
    return config_from_dict({"model": model, "data": {"img_size": 24}})


def _model(name: str = "mae", seed: int = 0, **extra):
    torch.manual_seed(seed)
    return loaders.build_model(_config(name, **extra)).eval()


def _release_state(model) -> dict[str, torch.Tensor]:
    """What facebookresearch/mae's mae_pretrain_vit_*.pth holds under "model"."""
    from gmae.export.timm import timm_state_dict

    return {k: v.clone() for k, v in timm_state_dict(model.encoder).items()}


@pytest.fixture
def images():
    return torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))


# --- old import paths (its place below train, evaluate ...: tests/test_layering.py) -----------


def test_old_import_paths_are_the_one_loader():
    import gmae.export
    import gmae.export.checkpoints
    import gmae.export.hf
    import gmae.hub
    import gmae.train
    import gmae.train.checkpoint
    import gmae.zeroshot
    import gmae.zeroshot.common
    from gmae.loading import checks

    assert gmae.train.load_pretrained is gmae.train.checkpoint.load_pretrained
    assert gmae.train.load_pretrained is loaders.load_pretrained
    for name in ("load_any", "load_model", "load_mae_release", "LoadedModel"):
        assert getattr(gmae.export, name) is getattr(loaders, name), name
        assert getattr(gmae.export.checkpoints, name) is getattr(loaders, name), name
    assert gmae.export.checkpoints.random_like is loaders.random_like
    assert gmae.export.checkpoints.read_metadata is formats.read_metadata
    assert gmae.export.checkpoints.FORMAT == formats.COMPACT_FORMAT
    assert gmae.zeroshot.common.load_model is loaders.load_mae_or_gmae
    assert gmae.zeroshot.load_model is loaders.load_mae_or_gmae
    assert gmae.hub.load_dir is loaders.load_dir
    assert gmae.hub.is_pretrained_dir is formats.is_pretrained_dir
    assert gmae.hub.apply_overrides is checks.config_with_overrides
    assert gmae.hub.FORMAT == formats.PRETRAINED_FORMAT
    assert gmae.export.hf.hf_to_timm is formats.hf_to_timm
    ckpt_io = gmae.train.checkpoint
    assert ckpt_io.model_kwargs is loaders.model_kwargs
    assert ckpt_io.check_metadata is loaders.check_metadata
    assert ckpt_io.load_state is checks.load_state
    assert ckpt_io.stored_config is checks.stored_config
    assert ckpt_io.load_checkpoint is formats.read_training_checkpoint


def test_every_ckpt_command_loads_through_load_any(tmp_path, checkpoint_argvs, monkeypatch, capsys):
    """eval, zeroshot, report, inspect and export: a ``--ckpt`` / ``--mae-ckpt`` .pt reaches
    ``load_any``'s reader (``formats.read_weights_only``); ``pretrain --resume`` is not a model
    load and reads the training format itself."""
    probe = tmp_path / "probe.pt"
    probe.write_bytes(b"not read")
    good = tmp_path / "good.pt"
    torch.save({"config": config_to_dict(_config("gmae")), "model": _model("gmae").state_dict()},
               good)  # fmt: skip
    read = formats.read_weights_only

    def reader(path):
        if Path(path) == probe:
            raise GmaeError(f"probe reached load_any: {path}")
        return read(path)

    monkeypatch.setattr(formats, "read_weights_only", reader)
    commands = set()
    for command, flag, argv in checkpoint_argvs(probe, good):
        if flag == "--resume":
            continue
        assert main(argv) == 2, argv
        assert "probe reached load_any" in capsys.readouterr().err, argv
        commands.add(command[0])
    assert commands == {"eval", "zeroshot", "report", "inspect", "export"}


def test_report_facts_read_what_report_ckpt_loads(tmp_path):
    """gmae report --ckpt takes what the loader takes; its summary box reads the stored config
    of gmae's own formats (a save_pretrained directory too) and nothing of others."""
    from gmae.report.summary import checkpoint_facts

    model = _model("gmae")
    for fmt in ("training", "compact", "pretrained-dir"):
        facts = checkpoint_facts(_write(fmt, model, tmp_path))
        assert facts["config"] == model.gmae_config, fmt
    assert checkpoint_facts(_write("timm-dir", model, tmp_path))["config"] is None


# --- every format, one loader ---------------------------------------------------------------


def _write(fmt: str, model, tmp_path: Path) -> Path:
    """``model`` written in format ``fmt`` by gmae's own writers (or as MAE released it)."""
    from gmae.export.checkpoints import save_compact
    from gmae.export.hf import save_hf
    from gmae.export.timm import save_timm, save_timm_dir
    from gmae.train.checkpoint import save_checkpoint

    cfg = config_from_dict(model.gmae_config)
    if fmt == "training":
        path = tmp_path / "last.pt"
        save_checkpoint(path, {"config": config_to_dict(cfg), "model": model.state_dict(),
                               "epoch": 3, "step": 7})  # fmt: skip
    elif fmt in ("compact", "compact-fp16"):
        path = save_compact(model, cfg, tmp_path / "m.safetensors", fp16=fmt == "compact-fp16")
    elif fmt == "pretrained-dir":
        path = model.save_pretrained(tmp_path / "m")
    elif fmt == "mae-release":
        path = tmp_path / "mae_pretrain_vit_tiny.pth"
        torch.save({"model": _release_state(model)}, path)
    elif fmt == "timm-file":
        path = tmp_path / "vit.safetensors"
        save_timm(model, path)
    elif fmt == "timm-dir":
        path = tmp_path / "vit_timm"
        save_timm_dir(model, path)
    elif fmt == "hf-dir":
        pytest.importorskip("transformers")
        path = tmp_path / "mae_hf"
        save_hf(model, path)
    else:
        raise AssertionError(fmt)
    return path


FORMATS = {  # format -> (LoadedModel.kind, .name, whether it carries the training config)
    "training": ("training", "mae", True),
    "compact": ("compact", "mae", True),
    "compact-fp16": ("compact", "mae", True),
    "pretrained-dir": ("pretrained-dir", "mae", True),
    "mae-release": ("mae-release", "vit", False),
    "timm-file": ("timm", "vit", False),
    "timm-dir": ("timm", "vit", False),
    "hf-dir": ("hf", "mae", False),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_round_trips_through_load_any(fmt, tmp_path, images):
    model = _model("mae")
    path = _write(fmt, model, tmp_path)
    kind, name, has_config = FORMATS[fmt]
    loaded = load_any(str(path))
    assert (loaded.kind, loaded.name) == (kind, name)
    assert loaded.source.startswith(str(path))  # timm / HF directories: their weights file
    assert not loaded.model.training and loaded.img_size == 24
    atol = 2e-2 if fmt == "compact-fp16" else 1e-5
    torch.testing.assert_close(
        loaded.model.forward_features(images), model.forward_features(images), atol=atol, rtol=0
    )
    if has_config:
        assert config_to_dict(loaded.config) == model.gmae_config
        if fmt != "compact-fp16":
            for key, value in model.state_dict().items():
                assert torch.equal(loaded.model.state_dict()[key], value), key
    else:
        assert loaded.config is None
    # At another size: the sin-cos tables are recomputed, and a stored config says so.
    big = load_any(str(path), img_size=48)
    assert big.img_size == 48 and (big.config is None or big.config.data.img_size == 48)
    assert loaded.describe()["ckpt"] == loaded.source


def test_the_narrower_loaders_are_load_any(tmp_path, images):
    """load_model, load_pretrained and load_mae_or_gmae give what load_any gives."""
    from gmae.loading import load_mae_or_gmae, load_model, load_pretrained
    from gmae.models import GMAE

    model = _model("gmae")
    pt, compact, directory = (_write(f, model, tmp_path) for f in
                              ("training", "compact", "pretrained-dir"))  # fmt: skip
    for path in (pt, compact):
        loaded, cfg = load_model(path)
        assert config_to_dict(cfg) == model.gmae_config
        assert torch.equal(loaded.encoder.cls_token, model.encoder.cls_token)
    trained, cfg = load_pretrained(pt)
    assert isinstance(trained, GMAE) and cfg.model["name"] == "gmae"
    assert trained.gmae_config == model.gmae_config  # the whole config, as load_any records it
    for path in (pt, compact, directory):
        assert isinstance(load_mae_or_gmae(path, "gmae"), GMAE)
        with pytest.raises(GmaeError, match="holds a GMAE; this needs a MAE checkpoint"):
            load_mae_or_gmae(path, "mae")


def test_random_is_a_fresh_model_of_a_config(tmp_path):
    yaml = tmp_path / "tiny.yaml"
    save_config(_config("gmae"), yaml)
    a, b = (
        load_any("random", config=str(yaml), seed=1),
        load_any("random", config=str(yaml), seed=1),
    )
    c = load_any("random", config=str(yaml), seed=2, img_size=48)
    assert (a.kind, a.name, a.source) == ("random", "gmae", formats.RANDOM)
    assert torch.equal(a.model.encoder.cls_token, b.model.encoder.cls_token)
    assert not torch.equal(a.model.encoder.cls_token, c.model.encoder.cls_token)
    assert c.img_size == 48 and c.config.data.img_size == 48
    twin = loaders.random_like(load_any(str(_write("compact", _model("gmae"), tmp_path))))
    assert twin.kind == "random" and twin.config.model == a.config.model


def test_mae_release_checkpoint_loads_for_evaluation(tmp_path, images):
    # Width 192 = ViT-Tiny's, so the head count (not stored in the weights) is the standard 3.
    src = _model("mae")
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": _release_state(src)}, path)
    loaded = load_any(str(path))
    assert loaded.kind == "mae-release" and loaded.name == "vit"
    assert loaded.img_size == 24 and loaded.model.encoder.num_heads == 3
    assert not loaded.info["learned_pos_embed"]
    torch.testing.assert_close(loaded.model.forward_features(images), src.forward_features(images))
    assert not hasattr(loaded.model, "reconstruct")

    # With the decoder (MAE's visualisation checkpoints): a full MAE that can reconstruct.
    full = _release_state(src)
    full.update({k: v for k, v in src.state_dict().items() if not k.startswith("encoder.")})
    full["decoder_pos_embed"] = src.decoder_pos_embed.clone()
    torch.save({"model": full}, tmp_path / "mae_visualize.pth")
    vis = load_mae_release(torch.load(tmp_path / "mae_visualize.pth")["model"],
                           decoder_num_heads=2)  # fmt: skip
    assert vis.name == "mae"
    noise = torch.rand(3, 16)
    torch.testing.assert_close(
        vis.model.reconstruct(images, noise=noise)["recon"],
        src.reconstruct(images, noise=noise)["recon"],
    )


def test_mae_release_learned_pos_embed_is_kept():
    state = _release_state(_model("mae"))
    state["pos_embed"] = state["pos_embed"] + 0.5 * torch.randn_like(state["pos_embed"])
    loaded = load_mae_release(state)
    assert loaded.info["learned_pos_embed"]
    torch.testing.assert_close(loaded.model.encoder.pos_embed, state["pos_embed"])
    assert load_mae_release(state, img_size=48).model.encoder.pos_embed.shape == (1, 65, 192)


# --- hostile and incompatible files: one line, naming the file --------------------------------


def _training(tmp_path: Path, name: str, edit=None, **config_edits) -> Path:
    raw = config_to_dict(_config("mae"))
    for section, values in config_edits.items():
        raw[section] = values if not isinstance(values, dict) else {**raw[section], **values}
    state = _model("mae").state_dict()
    if edit is not None:
        edit(state)
    path = tmp_path / name
    torch.save({"config": raw, "model": state}, path)
    return path


def _compact(tmp_path: Path, name: str, **metadata) -> Path:
    from gmae.export.checkpoints import save_compact

    model = _model("mae")
    path = save_compact(model, config_from_dict(model.gmae_config), tmp_path / name)
    if metadata:
        tensors, meta = formats.read_safetensors(path)
        save_file(tensors, str(path), metadata={**meta, **metadata})
    return path


def _hf_dir(tmp_path: Path, **config) -> Path:
    from gmae.export.hf import timm_to_hf

    path = tmp_path / "hf"
    path.mkdir()
    save_file(timm_to_hf(_release_state(_model("mae"))), str(path / "model.safetensors"))
    normalization = {"image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    (path / "config.json").write_text(json.dumps({**normalization, **config}))
    return path


def _release(tmp_path: Path, **replace) -> Path:
    state = {**_release_state(_model("mae")), **replace}
    path = tmp_path / "release.pth"
    torch.save({"model": state}, path)
    return path


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(_compact(tmp_path, "m.safetensors").read_bytes()[:300])
    return path


def _timm_file(tmp_path: Path, **metadata) -> Path:
    from gmae.export.timm import save_timm

    path = tmp_path / "vit.safetensors"
    save_timm(_model("mae"), path)
    tensors, meta = formats.read_safetensors(path)
    save_file(tensors, str(path), metadata={**meta, **metadata})
    return path


def _dir_with(tmp_path: Path, config_json: str | None) -> Path:
    path = tmp_path / "dir"
    path.mkdir()
    if config_json is not None:
        (path / "config.json").write_text(config_json)
    return path


def _corrupt_pretrained_dir(tmp_path: Path) -> Path:
    path = _model("mae").save_pretrained(tmp_path / "m")
    (path / "config.json").write_text("{")
    return path


def _not_a_checkpoint(tmp_path: Path) -> Path:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    return tmp_path / "list.pt"


def _set_first_float(value):
    def edit(state):
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = value(state[key])

    return edit


PRETRAINED_JSON = {"format": formats.PRETRAINED_FORMAT, "format_version": "1"}
HOSTILE = {  # case -> (writes the file, what the one-line error says)
    "truncated safetensors": (_truncated, "not a valid safetensors file"),
    "compact format version": (
        lambda t: _compact(t, "v.safetensors", format_version="9"),
        "format version '9'",
    ),
    "compact config not JSON": (
        lambda t: _compact(t, "j.safetensors", config="{oops"),
        "no readable config",
    ),
    "compact config nested deep": (
        lambda t: _compact(t, "d.safetensors", config="[" * 100_000 + "]" * 100_000),
        "no readable config",
    ),
    "config does not match the tensors": (
        lambda t: _compact(
            t, "x.safetensors", config=json.dumps(config_to_dict(_config("mae", depth=2)))
        ),
        "does not fit the model it describes",
    ),
    "config asks for a huge model": (
        lambda t: _training(t, "huge.pt", model={"depth": 100_000}),
        "stored config is invalid",
    ),
    "config value of the wrong type": (
        lambda t: _training(t, "type.pt", data={"img_size": "large"}),
        "stored config is invalid",
    ),
    "weights not tensors": (
        lambda t: _training(t, "ints.pt", _set_first_float(lambda v: 5)),
        "not a state dict of dense tensors",
    ),
    "integer weights": (
        lambda t: _training(t, "dtype.pt", _set_first_float(lambda v: v.long())),
        "floating point expected",
    ),
    "not a checkpoint": (
        _not_a_checkpoint,
        "is not a gmae training checkpoint, a compact .safetensors checkpoint or an MAE release",
    ),
    "release with a rectangular patch": (
        lambda t: _release(t, **{"patch_embed.proj.weight": torch.zeros(192, 3, 6, 7)}),
        "not that of a ViT of width 192",
    ),
    "release with a zero width": (
        lambda t: _release(t, cls_token=torch.zeros(1, 1, 0)),
        "not that of a ViT",
    ),
    "HF head count not a number": (
        lambda t: _hf_dir(t, num_attention_heads="many"),
        "stored num_heads 'many'",
    ),
    "HF head count not dividing the width": (
        lambda t: _hf_dir(t, num_attention_heads=5),
        "cannot be built",
    ),
    "HF norm_pix_loss not a bool": (lambda t: _hf_dir(t, norm_pix_loss="yes"), "not true or false"),
    "timm export without its kwargs": (
        lambda t: _timm_file(t, timm_kwargs="{"),
        "timm_kwargs metadata has no num_heads",
    ),
    "directory config not JSON": (_corrupt_pretrained_dir, "not valid JSON"),
    "directory without weights": (
        lambda t: _dir_with(
            t, json.dumps({**PRETRAINED_JSON, "config": config_to_dict(_config())})
        ),
        "not found",
    ),
    "empty directory": (lambda t: _dir_with(t, None), "without model.safetensors"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_and_incompatible_files_are_one_line_errors(case, tmp_path):
    make, message = HOSTILE[case]
    path = make(tmp_path)
    with pytest.raises(GmaeError) as info:
        load_any(str(path))
    text = str(info.value)
    assert message in text and "\n" not in text, text
    assert str(path) in text or path.name in text, text


def test_old_checkpoints_with_norm_pix_load_as_norm_pix_loss(tmp_path):
    """GMAE's norm_pix was renamed norm_pix_loss (MAE's name); stored configs keep the old key."""
    path = _write("training", _model("gmae", norm_pix_loss=True), tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["norm_pix"] = ckpt["config"]["model"].pop("norm_pix_loss")
    torch.save(ckpt, path)
    loaded = load_any(str(path))
    assert loaded.model.norm_pix_loss is True
    assert loaded.config.model["norm_pix_loss"] is True and "norm_pix" not in loaded.config.model


def test_ckpt_random_and_config_go_together(tmp_path):
    # ArgumentErrors: the library names arguments, the CLI (error_message) their flags
    with pytest.raises(ArgumentError, match="ckpt random needs config PRESET") as info:
        load_any("random")
    assert error_message(info.value).startswith("--ckpt random needs --config PRESET")
    path = _write("compact", _model("mae"), tmp_path)
    with pytest.raises(ArgumentError, match="config is only used with ckpt random") as info:
        load_any(str(path), config="mae_tiny_cifar10")
    assert error_message(info.value).startswith("--config is only used with --ckpt random")
    with pytest.raises(GmaeError, match="not found"):
        load_any(str(tmp_path / "missing.pt"))
