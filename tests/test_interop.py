"""One-line loading (gmae.from_pretrained, save_pretrained, create_model(pretrained=)) and the
round trips through timm and Hugging Face transformers. All offline, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import gmae
from gmae.cli import main
from gmae.errors import GmaeError
from gmae.export import load_any
from gmae.models import GMAE, MAE, create_model

REPO = Path(__file__).resolve().parents[1]
TINY = {"encoder": "tiny", "embed_dim": 48, "depth": 2, "num_heads": 3, "img_size": 24,
        "patch_size": 6, "decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}  # fmt: skip


def _model(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    extra = {"num_gaussians": 8, **extra} if name == "gmae" else extra
    return create_model(name, **TINY, **extra).eval()


@pytest.fixture
def images():
    return torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))


def _photo(width: int = 40, height: int = 30) -> Image.Image:
    g = torch.Generator().manual_seed(1)
    arr = (torch.rand(height, width, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


# --- save_pretrained / from_pretrained ---------------------------------------------------------


@pytest.mark.parametrize("name", ["gmae", "mae"])
def test_save_pretrained_roundtrip_in_hub_layout(tmp_path, images, name):
    model = _model(name)
    out = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["library_name"] == "gmae" and meta["model_type"] == name
    assert meta["config"]["data"]["img_size"] == 24

    loaded = gmae.from_pretrained(out)
    assert type(loaded) is type(model) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.forward_features(images), model.forward_features(images))
    # The class methods check the class; overrides keep the weights.
    cls = GMAE if name == "gmae" else MAE
    other = MAE if name == "gmae" else GMAE
    assert cls.from_pretrained(out, mask_ratio=0.5).mask_ratio == 0.5
    with pytest.raises(GmaeError, match=f"holds a {cls.__name__}, not a {other.__name__}"):
        other.from_pretrained(out)
    # create_model(pretrained=): same weights, and img_size re-grids the sin-cos tables.
    big = create_model(name, pretrained=out, img_size=48)
    assert big.img_size == 48 and torch.equal(big.encoder.cls_token, model.encoder.cls_token)
    # The evaluation loader reads the directory too.
    assert load_any(str(out)).kind == "pretrained-dir"


def test_from_pretrained_file_applies_img_size_with_other_overrides(tmp_path, images):
    from gmae.export.checkpoints import save_compact
    from gmae.hub import model_config

    model = _model("gmae")
    path = save_compact(model, model_config(model), tmp_path / "m.safetensors")
    both = gmae.from_pretrained(path, img_size=48, mask_ratio=0.5)  # img_size was dropped
    assert both.img_size == 48 and both.mask_ratio == 0.5
    assert torch.equal(both.encoder.cls_token, model.encoder.cls_token)
    assert gmae.from_pretrained(path, img_size=48).img_size == 48
    # An override that changes the weights' shapes: one line naming the file.
    with pytest.raises(GmaeError, match=r"m\.safetensors does not fit GMAE: .*shape"):
        gmae.from_pretrained(path, num_gaussians=16)


def test_save_pretrained_after_loading_keeps_the_whole_config(tmp_path):
    from gmae.export.checkpoints import save_compact
    from gmae.hub import model_config
    from gmae.train.config import config_from_dict, config_to_dict

    model = _model("mae")
    raw = config_to_dict(model_config(model))
    raw["data"]["spec"] = "imagenette-64"
    raw["optim"]["base_lr"] = 3e-4
    cfg = config_from_dict(raw)
    first = model.save_pretrained(tmp_path / "a", config=cfg)
    again = gmae.from_pretrained(first).save_pretrained(tmp_path / "b")  # no config= given
    stored = json.loads((again / "config.json").read_text())["config"]
    assert stored == json.loads((first / "config.json").read_text())["config"]
    # Loaded at another size (directory or compact file): the size it was built at.
    path = save_compact(model, cfg, tmp_path / "m.safetensors")
    for source in (first, path):
        big = gmae.from_pretrained(source, img_size=48)
        assert big.gmae_config["data"] == {**stored["data"], "img_size": 48}
        assert big.gmae_config["optim"]["base_lr"] == 3e-4
    assert load_any(str(path), img_size=48).config.data.img_size == 48


def test_from_pretrained_reads_committed_checkpoints_in_one_line():
    path = REPO / "checkpoints" / "gmae_tiny_imagenette64_e40.safetensors"
    model = gmae.from_pretrained(path)
    assert isinstance(model, GMAE) and model.img_size == 64
    with torch.no_grad():
        g = model.predict_gaussians(torch.rand(1, 3, 64, 64))
    assert g.means.shape[0] == 1 and torch.isfinite(g.means).all()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(GmaeError, match="not found"):
        gmae.from_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(GmaeError, match="neither a file, a directory nor a Hub id"):
        gmae.from_pretrained("not a path or id")
    # A Hub id with no network and nothing cached: one line, naming the id.
    with pytest.raises(GmaeError, match="no such local file or directory someone/gmae-tiny; as a "
                       "Hub id: cannot download config.json of someone/gmae-tiny"):  # fmt: skip
        gmae.from_pretrained("someone/gmae-tiny", cache_dir=tmp_path, local_files_only=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"format": "gmae.pretrained", "format_version": "9"}')
    with pytest.raises(GmaeError, match="format version '9'"):
        from gmae.hub import load_dir

        load_dir(bad)
    with pytest.raises(GmaeError, match="not built by gmae.models.create_model"):
        bare = GMAE(img_size=24, patch_size=6, embed_dim=48, depth=1, num_heads=3, decoder_dim=32,
                    decoder_depth=1, decoder_num_heads=2, num_gaussians=8)  # fmt: skip
        bare.save_pretrained(tmp_path / "x")
    with pytest.raises(GmaeError, match="holds a GMAE, not a MAE"):
        _model("gmae").save_pretrained(tmp_path / "g")
        create_model("mae", pretrained=tmp_path / "g")


# --- timm ---------------------------------------------------------------------------------------


def test_timm_local_dir_export_loads_with_our_data_config(tmp_path, images):
    model = _model("gmae")
    ckpt = tmp_path / "g"
    model.save_pretrained(ckpt)
    out = tmp_path / "timm"
    assert main(["export", "timm", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    vit = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert vit.num_classes == 0 and vit.patch_embed.patch_size == (6, 6)
    with torch.no_grad():
        theirs = vit.forward_features(model.normalize(images))
    torch.testing.assert_close(theirs, model.forward_features(images), atol=1e-5, rtol=0)

    # timm's own preprocessing from the stored pretrained_cfg == our eval transform + normalise.
    from gmae.data.transforms import eval_transform

    cfg = timm.data.resolve_data_config(model=vit)
    # input_size is a list (from the JSON) before timm 1.0.31, a tuple after
    assert tuple(cfg["input_size"]) == (3, 24, 24) and cfg["crop_pct"] == 1.0
    assert tuple(cfg["mean"]) == pytest.approx((0.485, 0.456, 0.406))
    transform = timm.data.create_transform(**cfg)
    photo = _photo()
    ours = model.normalize(eval_transform(24)(photo)[None])[0]
    torch.testing.assert_close(transform(photo), ours, atol=1e-5, rtol=0)

    # And back: the timm directory is a --ckpt (encoder only).
    back = load_any(str(out))
    assert back.kind == "timm" and back.model.encoder.num_heads == 3
    torch.testing.assert_close(back.model.forward_features(images), model.forward_features(images))


def test_plain_timm_safetensors_is_a_ckpt(tmp_path, images):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=24, patch_size=6, num_classes=0
    ).eval()
    path = tmp_path / "vit.safetensors"
    save_file(vit.state_dict(), str(path))
    with pytest.warns(UserWarning, match="no input normalisation"):
        loaded = load_any(str(path))
    assert loaded.kind == "timm" and loaded.info["learned_pos_embed"]
    with torch.no_grad():
        ref = vit.forward_features(loaded.model.normalize(images))
    torch.testing.assert_close(loaded.model.forward_features(images), ref, atol=1e-5, rtol=0)


def test_evaluation_docs_snippet_loads(tmp_path):
    """The timm snippet in docs/evaluation.md, run as written against a fresh export."""
    text = (REPO / "docs" / "evaluation.md").read_text()
    snippet = text.split("<!-- timm-snippet -->")[1].split("```python")[1].split("```")[0]
    _model("mae").save_pretrained(tmp_path / "m")
    assert main(["export", "timm", "--ckpt", str(tmp_path / "m"), "--out",
                 str(tmp_path / "vit_timm")]) == 0  # fmt: skip
    scope: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(snippet, scope)  # noqa: S102  (our own docs)
    finally:
        os.chdir(cwd)
    assert tuple(scope["cfg"]["input_size"]) == (3, 24, 24)


# --- Hugging Face -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_exports_as_vitmae_for_pretraining(tmp_path, images, norm_pix):
    transformers = pytest.importorskip("transformers")
    model = _model("mae", norm_pix_loss=norm_pix)
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "hf"
    assert main(["export", "hf", "--ckpt", str(tmp_path / "m"), "--out", str(out)]) == 0
    hf = transformers.ViTMAEForPreTraining.from_pretrained(out).eval()
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixel_values=model.normalize(images), noise=noise)
        ours = model(images, noise=noise)
    assert torch.equal(ours.mask, ref.mask)
    torch.testing.assert_close(ours.pred, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.loss, ref.loss, atol=1e-5, rtol=1e-5)

    # And back: the HF directory loads as a full MAE (decoder, head counts, norm_pix).
    back = load_any(str(out))
    assert back.kind == "hf" and back.name == "mae" and back.model.norm_pix_loss == norm_pix
    with torch.no_grad():
        again = back.model(images, noise=noise)
    torch.testing.assert_close(again.loss, ours.loss, atol=1e-6, rtol=1e-6)


def test_encoder_exports_as_vit_model_with_its_processor(tmp_path, images):
    transformers = pytest.importorskip("transformers")
    model = _model("gmae")
    model.save_pretrained(tmp_path / "g")
    out = tmp_path / "hf"
    assert main(["export", "hf", "--ckpt", str(tmp_path / "g"), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTModel"]
    hf = transformers.ViTModel.from_pretrained(out, add_pooling_layer=False).eval()
    with torch.no_grad():
        theirs = hf(pixel_values=model.normalize(images)).last_hidden_state
    torch.testing.assert_close(theirs, model.forward_features(images), atol=1e-5, rtol=0)

    processor = transformers.AutoImageProcessor.from_pretrained(out)
    square = _photo(24, 24)  # no resampling: the processor must equal our transform exactly
    from gmae.data.transforms import eval_transform

    ours = model.normalize(eval_transform(24)(square)[None])
    theirs = processor(square, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # A non-square photo: short side resized and centre-cropped as ours (resamplers differ).
    photo = _photo(40, 30)
    ours = model.normalize(eval_transform(24)(photo)[None])
    theirs = processor(photo, return_tensors="pt")["pixel_values"]
    assert theirs.shape == ours.shape and (theirs - ours).abs().mean() < 0.05

    # The HF weights alone (.safetensors beside its config.json) are a --ckpt for evaluation.
    back = load_any(str(out / "model.safetensors"))
    assert back.kind == "hf" and back.name == "vit"
    torch.testing.assert_close(back.model.forward_features(images), model.forward_features(images))


def test_timm_and_hf_exports_keep_their_normalisation(tmp_path, images):
    pytest.importorskip("transformers")
    model = _model("mae", pixel_mean=[0.5, 0.4, 0.3], pixel_std=[0.2, 0.25, 0.3])
    model.save_pretrained(tmp_path / "m")
    ref = model.forward_features(images)
    outs = {"hf": tmp_path / "hf", "timm": tmp_path / "timm", "file": tmp_path / "v.safetensors"}
    for kind, out in outs.items():
        command = "hf" if kind == "hf" else "timm"
        assert main(["export", command, "--ckpt", str(tmp_path / "m"), "--out", str(out)]) == 0
        loaded = load_any(str(out))
        assert loaded.model.normalize.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
        torch.testing.assert_close(loaded.model.forward_features(images), ref, atol=1e-5, rtol=0)
    # HF: the processor's mean first, else the model config's; its LayerNorm epsilon is used.
    hf = outs["hf"]
    assert load_any(str(hf)).info["normalization"] == "preprocessor_config.json"
    (hf / "preprocessor_config.json").unlink()
    config = json.loads((hf / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (hf / "config.json").write_text(json.dumps(config))
    loaded = load_any(str(hf / "model.safetensors"))
    assert loaded.info["normalization"] == "config.json"
    assert loaded.model.normalize.std.flatten().tolist() == pytest.approx([0.2, 0.25, 0.3])
    assert {m.eps for m in loaded.model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
    # Nothing stored: ImageNet's, with a warning saying so.
    del config["image_mean"], config["image_std"]
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="stores no input normalisation"):
        loaded = load_any(str(hf))
    assert loaded.model.normalize.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    config["image_std"] = config["image_mean"] = "imagenet"
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(GmaeError, match="stored mean 'imagenet' is not a list of numbers"):
        load_any(str(hf))


def test_hf_export_errors(tmp_path, capsys):
    pytest.importorskip("transformers")
    _model("gmae").save_pretrained(tmp_path / "g")
    argv = ["export", "hf", "--ckpt", str(tmp_path / "g"), "--out", str(tmp_path / "hf")]
    assert main([*argv, "--arch", "vitmae"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--arch vitmae needs an MAE checkpoint" in err[0]
    junk = tmp_path / "junk.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(junk))
    with pytest.raises(GmaeError, match="nor timm or Hugging Face ViT weights"):
        load_any(str(junk))


# --- model cards --------------------------------------------------------------------------------


def test_model_card_has_hub_front_matter_numbers_and_citation(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    import yaml

    name = "mae_tiny_imagenette64_e40"
    card = tmp_path / f"{name}.md"
    card.write_text((REPO / "checkpoints" / f"{name}.md").read_text())
    (tmp_path / f"{name}.safetensors").symlink_to(REPO / "checkpoints" / f"{name}.safetensors")
    results = tmp_path / "results"
    results.mkdir()
    doc = {"protocol": "knn", "model": {"ckpt": str(tmp_path / f"{name}.safetensors")},
           "results": {"cls": {"knn_top1": 43.219}}}  # fmt: skip
    (results / "knn_mae.json").write_text(json.dumps(doc))
    argv = ["publish_checkpoint.py", str(card), "--update-card", "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "publish_checkpoint.py"), run_name="__main__")
    assert "1 measured numbers" in capsys.readouterr().out
    text = card.read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "gmae"
    assert meta["datasets"] == ["frgfm/imagenette"] and "mae" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "accuracy", "value": 43.22,
                                    "name": "kNN (k 20) top-1, cls token"}  # fmt: skip
    assert "| kNN (k 20) top-1, cls token | 43.22 |" in text
    assert "@article{rajasegaran2025gmae" in text and "gmae.from_pretrained(" in text
    # Refreshing again replaces, not stacks, the generated parts.
    runpy.run_path(str(REPO / "scripts" / "publish_checkpoint.py"), run_name="__main__")
    again = card.read_text()
    assert again == text and again.count("## Citation") == 1
    # A hand-written section (even one after the citation) survives every refresh, once.
    card.write_text(text + "\n## Occlusion benchmark\n\nA note by hand.\n")
    for _ in range(2):
        runpy.run_path(str(REPO / "scripts" / "publish_checkpoint.py"), run_name="__main__")
        kept = card.read_text()
        assert kept.count("## Occlusion benchmark\n\nA note by hand.\n") == 1
        assert kept.count("## Citation") == 1 and kept.count("## Measured") == 1


def test_model_card_names_the_data_each_number_was_measured_on(tmp_path, monkeypatch):
    """A run pretrained on a local copy (an ``imagefolder:`` spec) and evaluated on the original
    archive: the card's model-index names the evaluation data, not the pretraining folder."""
    import runpy
    import sys

    import yaml

    name = "mae_pix_tiny_imagenette64_e40"  # pretrained on imagefolder:<packed copy>
    card = tmp_path / f"{name}.md"
    card.write_text((REPO / "checkpoints" / f"{name}.md").read_text())
    (tmp_path / f"{name}.safetensors").symlink_to(REPO / "checkpoints" / f"{name}.safetensors")
    results = tmp_path / "results"
    results.mkdir()
    for spec, value in (("imagenette-128", 40.0), ("cifar10", 30.0)):
        doc = {"protocol": "knn", "model": {"ckpt": str(tmp_path / f"{name}.safetensors")},
               "data": {"spec": spec}, "results": {"cls": {"knn_top1": value}}}  # fmt: skip
        (results / f"knn_{spec}.json").write_text(json.dumps(doc))
    argv = ["publish_checkpoint.py", str(card), "--update-card", "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "publish_checkpoint.py"), run_name="__main__")
    meta = yaml.safe_load(card.read_text().split("---\n")[1])
    assert meta["datasets"] == ["frgfm/imagenette", "uoft-cs/cifar10"]
    by_value = {r["metrics"][0]["value"]: r["dataset"] for r in meta["model-index"][0]["results"]}
    assert by_value[40.0] == {"type": "frgfm/imagenette", "name": "imagenette-128",
                              "split": "validation"}  # fmt: skip
    assert by_value[30.0]["type"] == "uoft-cs/cifar10"


# --- one --device rule, a self-contained repository ---------------------------------------------


def test_one_device_rule_everywhere(capsys):
    from gmae.devices import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(GmaeError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GmaeError, match="'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")
    # Every command takes cuda:N (no argparse choices), with the same help.
    for argv in (["zeroshot", "layers"], ["report"], ["eval", "knn"], ["inspect"],
                 ["export", "gaussians"]):  # fmt: skip
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        if "--device" in out:
            assert "cuda:N" in out, argv


def test_repository_refers_to_nothing_outside_it():
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    bad = []
    for name in files:
        if name.endswith((".py", ".md", ".yaml", ".toml", ".sh", ".cff")) and name != __file__:
            text = (REPO / name).read_text(errors="replace")
            if "gmae-method.md" in text or "shared/docs" in text:
                bad.append(name)
    assert bad == [Path(__file__).relative_to(REPO).as_posix()] or not bad, bad


def test_inputs_outside_unit_range_warn_once(monkeypatch, images):
    import warnings

    import gmae.models.vit as vit
    from gmae.models import InputRangeWarning

    monkeypatch.setattr(vit, "_input_range_warned", False)
    model = _model("mae").train()
    mean = torch.tensor(vit.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vit.IMAGENET_STD).view(1, 3, 1, 1)
    imagenet = (images - mean) / std  # the timm / torchvision convention: spans about [-2, 2.6]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(images)  # [0, 1]: the first training batch is checked, nothing to say
        model(imagenet)  # later training batches are not checked (no host sync per step)
        assert not caught
        model.eval()
        with torch.no_grad():
            model.forward_features(images.clamp(0, 1) * 1.04)  # interpolation overshoot: fine
            assert not caught
            model.forward_features(imagenet)  # eval mode's first batch was that one
            assert not caught
        other = _model("gmae").eval()
        with torch.no_grad():
            other.forward_features(imagenet)  # a new model's first eval batch: warns
            other.forward_features(imagenet)
            _model("mae").eval().forward_features(imagenet)  # once per process
    assert [w.category for w in caught] == [InputRangeWarning]
    message = str(caught[0].message)
    assert "outside [0, 1]" in message and "normalised twice" in message and "0.485" in message


def test_every_cli_option_has_help_and_shows_its_default(capsys):
    import argparse

    from gmae.cli import DefaultsHelpFormatter, build_parser, iter_parsers

    parsers = list(iter_parsers(build_parser()))
    assert len(parsers) > 25  # gmae, its groups and every subcommand
    missing, no_default = [], []
    for parser in parsers:
        formatter = parser._get_formatter()
        assert isinstance(formatter, DefaultsHelpFormatter), parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(name)
            has_default = action.default is not None and action.default not in ([], "")
            if action.option_strings and action.nargs != 0 and has_default:
                if "default" not in formatter._get_help_string(action).lower():
                    no_default.append(name)
        assert "``" not in parser.format_help(), f"{parser.prog}: raw markup in its help"
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help hides the default: {no_default}"

    with pytest.raises(SystemExit):
        main(["eval", "knn", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--k K neighbours that vote (weighted kNN) (default: 20)" in text
    assert "(default: 0.07)" in text
    with pytest.raises(SystemExit):
        main(["zeroshot", "edges", "--help"])
    assert "(default: 4 8 16 32)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["export", "gaussians", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--ckpt CKPT GMAE checkpoint" in text and "--image IMAGE the photo" in text
