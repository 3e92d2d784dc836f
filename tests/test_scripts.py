"""The results scripts: publishing a run (scripts/publish_checkpoint.py) and the markdown
tables built from evaluation JSON (scripts/results_table.py)."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.export.checkpoints import load_model
from gmae.train.checkpoint import load_pretrained

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY = [
    "data.img_size=16", "data.num_workers=0", "model.patch_size=4", "model.embed_dim=32",
    "model.depth=1", "model.num_heads=2", "model.decoder_dim=32", "model.decoder_depth=1",
    "model.decoder_num_heads=2", "optim.epochs=1", "optim.batch_size=4",
    "optim.warmup_epochs=0", "run.log_every=1", "run.vis_every=1",
]  # fmt: skip


def run_script(name: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


@pytest.mark.parametrize("name, vis_images", [("gmae", 4), ("mae", 0)])
def test_publish_checkpoint(tmp_path, folder, name, vis_images, monkeypatch, capsys):
    run = tmp_path / "run"
    extra = ["model.num_gaussians=8"] if name == "gmae" else []
    sets = [f"data.spec=imagefolder:{folder}", *TINY, f"run.vis_images={vis_images}", *extra]
    assert (
        main(["pretrain", "--config", f"{name}_tiny_cifar10", "--set", *sets, "--out", str(run)])
        == 0
    )

    if name == "mae":  # as after a copy off another machine: the weights look older than the run
        os.utime(run / "last.pt", (0, 0))
    out = tmp_path / "published"
    health = []
    if name == "gmae":  # the card's health rows, from `gmae inspect --json`
        assert main(["inspect", "--ckpt", str(run / "last.pt"), "--data",
                     f"imagefolder:{folder}", "--num-images", "4",
                     "--json", str(tmp_path / "health.json")]) == 0  # fmt: skip
        health = ["--health", str(tmp_path / "health.json")]
    run_script("publish_checkpoint.py", str(run), "--name", "tiny", "--out", str(out), *health,
               monkeypatch=monkeypatch)  # fmt: skip
    assert "published tiny" in capsys.readouterr().out
    card = (out / "tiny.md").read_text()
    assert ("| Gaussian health | **" in card) == (name == "gmae")
    assert (
        "| Spearman(luminance, depth) (near -1 or +1: depth is a brightness code) |" in card
    ) == (name == "gmae")
    assert f"A {name.upper()} pretrained" in card and "3 steps" in card
    # the wall time never goes negative: copied files fall back to the logged throughput
    assert ("h of training steps" in card) == (name == "mae") and "| -" not in card
    assert (out / "tiny-loss.png").is_file()
    # the recon grid is copied and linked only when the run drew one
    assert (out / "tiny-recon.png").is_file() == (vis_images > 0)
    assert ("tiny-recon.png" in card) == (vis_images > 0)

    published, _ = load_model(out / "tiny.safetensors")  # fp16 weights of last.pt
    trained, _ = load_pretrained(run / "last.pt")
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(published.state_dict()[key].float(), value.float(),
                                   atol=1e-3, rtol=1e-3)  # fmt: skip


def _result(path: Path, results, seconds: float = 60.0) -> None:
    path.write_text(json.dumps({"results": results, "seconds": seconds}))


def test_results_table_rows_and_missing_cells(tmp_path, monkeypatch, capsys):
    d = tmp_path / "res"
    d.mkdir()
    _result(d / "knn_gmae.json", {"cls": {"knn_top1": 37.94, "nn1_loo_top1": 28.4},
                                  "mean": {"knn_top1": 38.3}})  # fmt: skip
    _result(d / "linprobe_gmae.json", {"cls": {"top1": 48.66}, "mean": {"top1": 48.5}}, 120)
    _result(d / "finetune_gmae.json", {"top1": 37.25})
    recon = [
        {"mask_ratio": 0.75, "masked_psnr": 14.7234, "psnr": 13.0},
        {"mask_ratio": 0.0, "masked_psnr": None, "psnr": 14.24},
    ]
    _result(d / "recon_gmae.json", recon)
    _result(d / "knn_random.json", {"cls": {"knn_top1": 33.8}, "mean": {"knn_top1": 34.0}})
    _result(d / "knn_gmae_e20.json", {"cls": {"knn_top1": 40.0}, "mean": {"knn_top1": 41.0}})
    run_script("results_table.py", str(d), monkeypatch=monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines[2:] if line.startswith("| ")}
    assert set(rows) == {"gmae", "random", "gmae_e20"}  # encoders without results are left out
    assert rows["gmae_e20"].split("|")[2].strip() == "40.0"
    cells = [c.strip() for c in rows["gmae"].split("|")[2:-1]]
    assert cells[:8] == ["37.9", "38.3", "28.4", "48.7", "48.5", "37.2", "14.72", "14.24"]
    assert cells[8] == "1.0 min / 2.0 min / 1.0 min / 1.0 min"
    random_cells = [c.strip() for c in rows["random"].split("|")[2:-1]]
    assert random_cells[3:8] == ["-"] * 5 and random_cells[8] == "1.0 min / - / - / -"


def test_results_table_zeroshot_tables(tmp_path, monkeypatch, capsys):
    d = tmp_path / "res"
    d.mkdir()
    (d / "boundaries_canny.json").write_text(json.dumps({"ods": 0.5834, "ois": 0.62, "ap": 0.58}))
    scores = {"gmae_near_alpha": {"iou_fg": 0.4151, "miou": 0.567},
              "centre_prior": {"iou_fg": 0.421, "miou": 0.569}}  # fmt: skip
    fg = {"methods": ["gmae_near_alpha", "centre_prior"], "n_images": 128, "scores": scores}
    (d / "figure_ground.json").write_text(json.dumps(fg))
    corr = {"pooled": -0.5724, "per_image_mean": -0.486, "per_image_std": 0.153}
    hf = {"pooled": 1.065, "per_image_mean": 1.075, "per_image_std": 0.184}
    spearman = {"scale_gmean": corr}
    stats = {"n_images": 500, "n_gaussians": 48000, "hf_ratio": hf}
    stats["spearman_size_vs_depth"] = spearman
    stats["layout"] = {"depth_order_agreement": 0.8493, "centre_px": {"across_images": 2.165,
                       "within_image": 19.04}, "depth": {"across_images": 0.0111,
                       "within_image": 0.0073}}  # fmt: skip
    stats["hf_ratio_own_vs_other"] = {"mean_diff": 0.0123, "ci": [-0.004, 0.029],
                                      "p_sign_flip": 0.1401}  # fmt: skip
    (d / "stats.json").write_text(json.dumps(stats))
    run_script("results_table.py", str(d), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "| canny | 0.583 | 0.620 | 0.580 |" in out
    assert "| gmae_near_alpha | 0.415 | 0.567 |" in out  # methods in the file's order
    assert out.index("gmae_near_alpha") < out.index("centre_prior")
    assert "| scale_gmean | -0.572 | -0.486 (0.153) |" in out
    assert "| hf_ratio (not a correlation: Sobel at centres / image mean) | 1.065 |" in out
    assert "| depth-order agreement (mean Spearman over image pairs) | 0.849 |" in out
    assert "| centre std across images / within an image (px) | 2.17 / 19.04 |" in out
    assert "another photo (per image, 95 % CI, p) | +0.012 [-0.004, +0.029], p 0.1401 |" in out


def test_results_table_tagged_zeroshot_files_and_paired_tests(tmp_path, monkeypatch, capsys):
    """--tag reads a second model's zero-shot files in the same folder, with the paired tests
    of its combined edges against each control and the luminance-depth row."""
    d = tmp_path / "res"
    d.mkdir()
    (d / "boundaries_gmae_combined.json").write_text(
        json.dumps({"ods": 0.1, "ois": 0.1, "ap": 0.1})
    )
    for method, ods in (("gmae_combined", 0.3718), ("luminance_order", 0.3655)):
        doc = {"ods": ods, "ois": 0.38, "ap": 0.17}
        (d / f"boundaries_anchor_{method}.json").write_text(json.dumps(doc))
    paired = {"mean_diff": 0.0061, "ci": [-0.002, 0.013], "p_sign_flip": 0.15,
              "a_better_fraction": 0.56}  # fmt: skip
    (d / "paired_anchor_gmae_combined_vs_luminance_order.json").write_text(json.dumps(paired))
    corr = {"pooled": -0.6949, "per_image_mean": -0.535, "per_image_std": 0.258}
    stats = {"n_images": 256, "n_gaussians": 65536, "spearman_size_vs_depth": {"scale_gmean": corr},
             "spearman_luminance_vs_depth": corr, "hf_ratio": corr}  # fmt: skip
    (d / "stats_anchor.json").write_text(json.dumps(stats))
    run_script("results_table.py", str(d), "--tag", "anchor", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "| gmae_combined | 0.372 |" in out and "| gmae_combined | 0.100 |" not in out
    assert "| luminance_order | 0.365 | 0.380 | 0.170 |" in out
    assert "| luminance_order | +0.006 [-0.002, +0.013] | 0.1500 | 56% |" in out
    assert "| luminance (colour brightness) | -0.695 | -0.535 (0.258) |" in out


def test_results_table_order_table_from_a_real_ablation(tmp_path, monkeypatch, capsys):
    """The order table reads what `gmae zeroshot order` writes (a tiny random GMAE)."""
    import torch

    from gmae.models import create_model
    from gmae.zeroshot.order import order_ablation

    torch.manual_seed(0)
    model = create_model("gmae", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                         decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
                         num_gaussians=16).eval()  # fmt: skip
    result = order_ablation(model, [torch.rand(3, 3, 32, 32)], [0.75, 0.0])
    d = tmp_path / "res"
    d.mkdir()
    (d / "order_anchor.json").write_text(json.dumps(result))
    run_script("results_table.py", str(d), "--tag", "anchor", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert (
        "| order (3 images): PSNR, model - this [95 % CI], recovered | mask 0.75 | mask 0 |" in out
    )
    masked = result["results"][0]["masked_psnr"]["orders"]
    rnd = masked["random"]
    lo, hi = rnd["model_minus_this"]["ci"]
    assert f"| random | {rnd['mean']:.2f} ({rnd['model_minus_this']['mean_diff']:+.3f} " in out
    assert f"[{lo:+.3f}, {hi:+.3f}]" in out
    assert f"| model | {masked['model']['mean']:.2f} |" in out


def test_order_trend_scores_each_checkpoint_once(tmp_path, folder, monkeypatch, capsys):
    """scripts/order_trend.py runs `gmae zeroshot order` per epoch checkpoint, reuses what is
    already scored, and tabulates the model-minus-random worth with its CI."""
    run = tmp_path / "tiny_run"
    sets = [f"data.spec=imagefolder:{folder}", *TINY, "optim.epochs=2", "run.ckpt_every=1",
            "model.num_gaussians=8"]  # fmt: skip
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, "--out",
                 str(run)]) == 0  # fmt: skip
    assert sorted(p.name for p in run.glob("checkpoint-*.pt")) == [
        "checkpoint-0001.pt",
        "checkpoint-0002.pt",
    ]
    out = tmp_path / "trend"
    # checkpoint-0001 is already scored (its model PSNR marked 99): the script must not redo it
    from gmae.models import create_model
    from gmae.zeroshot.order import order_ablation

    torch.manual_seed(0)
    model = create_model("gmae", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                         decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
                         num_gaussians=8).eval()  # fmt: skip
    earlier = order_ablation(model, [torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)],
                             [0.75, 0.0])  # fmt: skip
    earlier["results"][0]["masked_psnr"]["orders"]["model"]["mean"] = 99.0
    source = {"data": f"imagefolder:{folder}", "split": "val"}
    earlier = {"source": source, "ckpt": str(run / "checkpoint-0001.pt"), **earlier}
    (out / run.name).mkdir(parents=True)
    (out / run.name / "checkpoint-0001.json").write_text(json.dumps(earlier))

    args = [str(run), "--out", str(out), "--data", source["data"], "--split", "val"]
    run_script("order_trend.py", *args, "--num-images", "4", monkeypatch=monkeypatch)
    table = capsys.readouterr().out
    scored = json.loads((out / run.name / "checkpoint-0002.json").read_text())
    assert scored["n_images"] == 4 and scored["ckpt"].endswith("checkpoint-0002.pt")
    rows = [line for line in table.splitlines() if line.startswith(f"| {run.name} |")]
    psnr = scored["results"][0]["masked_psnr"]["orders"]["model"]["mean"]
    assert [r.split(" | ")[1:4] for r in rows] == [
        ["checkpoint-0001", "4", "99.00"],
        ["checkpoint-0002", "4", f"{psnr:.2f}"],
    ]
    for r, res in zip(rows, (earlier, scored), strict=True):
        t = res["results"][0]["masked_psnr"]["orders"]["random"]["model_minus_this"]
        assert f"| {t['mean_diff']:+.3f} [{t['ci'][0]:+.3f}," in r

    # a file scored on other images is never reused nor overwritten
    before = (out / run.name / "checkpoint-0001.json").read_text()
    with pytest.raises(SystemExit, match="scored on 4 images, not 3"):
        run_script("order_trend.py", *args, "--num-images", "3", monkeypatch=monkeypatch)
    with pytest.raises(SystemExit, match="holds another ablation"):
        run_script("order_trend.py", *args[:-1], "train", "--num-images", "4",
                   monkeypatch=monkeypatch)  # fmt: skip
    assert (out / run.name / "checkpoint-0001.json").read_text() == before
    # the same run named by a relative path reuses the files (nothing is rescored)
    monkeypatch.chdir(run.parent)
    run_script("order_trend.py", run.name, "--out", str(out), "--data", source["data"],
               "--split", "val", "--num-images", "4", monkeypatch=monkeypatch)  # fmt: skip
    assert (out / run.name / "checkpoint-0001.json").read_text() == before
    (out / run.name / "checkpoint-0001.json").write_text("{not json")
    with pytest.raises(SystemExit, match="not a readable order ablation"):
        run_script("order_trend.py", *args, "--num-images", "4", monkeypatch=monkeypatch)
    (out / run.name / "checkpoint-0001.json").write_text(before)
    # inputs are checked before anything runs
    empty = tmp_path / "empty" / "tiny_run"
    empty.mkdir(parents=True)
    with pytest.raises(SystemExit, match="no checkpoint"):
        run_script("order_trend.py", str(run), str(empty), "--out", str(out),
                   monkeypatch=monkeypatch)  # fmt: skip
    (empty / "checkpoint-0001.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="share a directory name"):
        run_script("order_trend.py", str(run), str(empty), "--out", str(out),
                   monkeypatch=monkeypatch)  # fmt: skip
    with pytest.raises(SystemExit, match="not a directory"):
        run_script("order_trend.py", str(tmp_path / "missing"), "--out", str(out),
                   monkeypatch=monkeypatch)  # fmt: skip


def test_centre_oracle_fits_each_image_and_freezes_centres(tmp_path, monkeypatch, capsys):
    """scripts/centre_oracle.py: per-image fitting lowers the error; frozen centres stay put; a
    common start has no spread across images until fitting moves the centres apart."""
    from gmae.models import create_model

    oracle = runpy.run_path(str(SCRIPTS / "centre_oracle.py"))
    torch.manual_seed(0)
    model = create_model("gmae", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                         decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
                         num_gaussians=8).eval()  # fmt: skip
    model.requires_grad_(False)
    imgs = torch.rand(3, 3, 16, 16)
    fit = oracle["fit_per_image"]
    free = fit(model, imgs, "model", 30, 0.05, [0, 30])
    frozen = fit(model, imgs, "model", 30, 0.05, [0, 30], freeze_centres=True)
    assert free[0]["psnr_per_image"] == frozen[0]["psnr_per_image"]  # the same start
    assert free[-1]["psnr"] > free[0]["psnr"] + 0.5 and frozen[-1]["psnr"] > frozen[0]["psnr"]
    assert free[-1]["moved_px"] > 0.1 and frozen[-1]["moved_px"] == 0.0
    rows, raw = fit(model, imgs, "model", 30, 0.05, [0, 30], return_raw=True)
    assert rows == free and raw.shape == (3, 8, 14) and not raw.requires_grad
    assert model.head.activate(raw).means.shape == (3, 8, 3)
    jittered = fit(model, imgs, "model", 0, 0.05, [0], jitter=0.5)
    assert jittered[0]["psnr_per_image"] != free[0]["psnr_per_image"]  # another start
    assert frozen[-1]["centre_px"] == frozen[0]["centre_px"]
    common = fit(model, imgs, "common", 15, 0.05, [0, 15])
    assert common[0]["centre_px"]["across_images"] < 1e-6 and common[0]["centre_ratio"] < 1e-6
    assert common[-1]["centre_px"]["across_images"] > 0.05

    # with a mask, only the visible patches' pixels count
    fitted = torch.zeros(3, 1, 16, 16)
    fitted[:, :, :4] = 1
    image = imgs.clone()
    image[:, :, 4:] += 0.5  # wrong only where nothing is fitted
    assert oracle["per_image_mse"](image, imgs, fitted).abs().max() < 1e-12
    image[:, :, :4] += 0.1
    torch.testing.assert_close(oracle["per_image_mse"](image, imgs, fitted), torch.full((3,), 0.01))
    masked = fit(model, imgs, "model", 2, 0.05, [0, 2], mask_ratio=0.75)
    assert masked[0]["psnr"] != free[0]["psnr"]  # another prediction, scored on other pixels

    with pytest.raises(SystemExit, match="at least 2"):
        run_script("centre_oracle.py", "--ckpt", "x", "--num-images", "1", "--json", "y",
                   monkeypatch=monkeypatch)  # fmt: skip

    # the table of earlier results (--table): one column per file, rows per fit
    from gmae.evaluate.paired import paired_bootstrap

    worth = paired_bootstrap(free[-1]["psnr_per_image"], frozen[-1]["psnr_per_image"])
    result = {"n_images": 3, "mask_ratio": 0.0, "steps": 30, "centres_worth": {"model": worth},
              "fits": {"model": free, "model_frozen": frozen}}  # fmt: skip
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(result))
    run_script("centre_oracle.py", "--table", str(path), monkeypatch=monkeypatch)
    table = capsys.readouterr().out
    assert table.startswith("| | tiny |")
    assert "| images, mask ratio, fit steps | 3, 0, 30 |" in table
    assert f"| model's prediction | {free[0]['psnr']:.2f} dB, ratio " in table
    assert f"| fit from model start | {free[-1]['psnr']:.2f} dB, ratio " in table
    assert f"| same, centres frozen | {frozen[-1]['psnr']:.2f} dB, ratio " in table
    assert f"| free - frozen (dB, 95 % CI) | {worth['mean_diff']:+.2f} [" in table
    assert "common" not in table  # only the starts that were fitted
    with pytest.raises(SystemExit, match="cannot read"):
        run_script("centre_oracle.py", "--table", str(tmp_path / "missing.json"),
                   monkeypatch=monkeypatch)  # fmt: skip
    # a file with only the shared start: no "model's prediction" (that start is not the
    # model's), and a ratio of null (nan: no spread) prints as "-"
    common[-1]["centre_ratio"] = None
    only_common = {**result, "fits": {"common": common, "common_frozen": common},
                   "centres_worth": {"common": worth}}  # fmt: skip
    (tmp_path / "common.json").write_text(json.dumps(only_common))
    run_script("centre_oracle.py", "--table", str(tmp_path / "common.json"),
               monkeypatch=monkeypatch)  # fmt: skip
    table = capsys.readouterr().out
    assert "| model's prediction | - |" in table
    assert f"| fit from common start | {common[-1]['psnr']:.2f} dB, ratio - |" in table


def test_centre_oracle_end_to_end(tmp_path, folder, monkeypatch, capsys):
    """scripts/centre_oracle.py on a trained checkpoint: both starts, free and frozen, the
    paired worth, a JSON the table reads; a bad --json stops it before any fitting."""
    run = tmp_path / "tiny_run"
    sets = [f"data.spec=imagefolder:{folder}", *TINY, "model.num_gaussians=8"]
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, "--out",
                 str(run)]) == 0  # fmt: skip
    common = ["--ckpt", str(run / "last.pt"), "--data", f"imagefolder:{folder}",
              "--num-images", "4", "--steps", "3", "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit, match="is a directory"):
        run_script("centre_oracle.py", *common, "--json", str(tmp_path), monkeypatch=monkeypatch)
    assert "PSNR" not in capsys.readouterr().out  # nothing was fitted
    with pytest.raises(SystemExit, match="centre_oracle: .*missing"):
        run_script("centre_oracle.py", "--ckpt", str(tmp_path / "missing.pt"), *common[2:],
                   "--json", str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
    with pytest.raises(SystemExit, match="centre_oracle: .*nope"):
        run_script("centre_oracle.py", *common[:2], "--data", "nope", *common[4:],
                   "--json", str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
    assert not (tmp_path / "x.json").exists()
    out = tmp_path / "oracle.json"
    run_script("centre_oracle.py", *common, "--mask-ratio", "0.75", "--json", str(out),
               monkeypatch=monkeypatch)  # fmt: skip
    r = json.loads(out.read_text())
    assert (r["n_images"], r["steps"], r["mask_ratio"]) == (4, 3, 0.75)
    assert set(r["fits"]) == {"model", "model_frozen", "common", "common_frozen"}
    assert set(r["centres_worth"]) == {"model", "common"}
    for name, rows in r["fits"].items():
        assert [x["step"] for x in rows] == [0, 3] and len(rows[-1]["psnr_per_image"]) == 4
        if name.endswith("_frozen"):
            assert rows[-1]["moved_px"] == 0.0
    free, fixed = r["fits"]["model"][-1], r["fits"]["model_frozen"][-1]
    diff = sum(a - b for a, b in zip(free["psnr_per_image"], fixed["psnr_per_image"], strict=True))
    assert r["centres_worth"]["model"]["mean_diff"] == pytest.approx(diff / 4)
    capsys.readouterr()
    run_script("centre_oracle.py", "--table", str(out), monkeypatch=monkeypatch)
    assert "| images, mask ratio, fit steps | 4, 0.75, 3 |" in capsys.readouterr().out


def test_centre_readout_ridge_and_windows():
    """scripts/centre_readout.py: the held-out ridge readout finds a linear relation and scores
    noise near 0; the local windows read the pixels around each centre."""
    ro = runpy.run_path(str(SCRIPTS / "centre_readout.py"))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 16, 6))
    target = feats[..., :2] @ np.array([[1.0, -2.0], [0.5, 1.0]]) + 0.1 * rng.normal(
        size=(40, 16, 2)
    )
    train = np.arange(40) < 20
    found = ro["readout"](feats, target, train)
    assert found["r2"] > 0.95 and found["ci95"][0] > 0.9 and found["n_features"] == 6
    noise = ro["readout"](feats, rng.normal(size=(40, 16, 2)), train)
    assert abs(noise["r2"]) < 0.05 and noise["ci95"][0] < 0 < noise["ci95"][1] + 0.02
    same = ro["repeat_r2"](target, target, train)
    assert same["r2"] == 1.0 and same["ci95"] == [1.0, 1.0]
    assert ro["repeat_r2"](target, 0 * target, train)["r2"] < 0  # the held-out mean is not 0

    imgs = rng.random((2, 10, 12, 3))
    centres = np.array([[[5.5, 2.2], [-3.0, 20.0]], [[0.0, 0.0], [11.9, 9.9]]])  # (u, v) px
    win = ro["local_windows"](imgs, centres, 1).reshape(2, 2, 3, 3, 4)
    np.testing.assert_array_equal(win[0, 0, :, :, :3], imgs[0, 1:4, 4:7])  # rows 1-3, cols 4-6
    np.testing.assert_array_equal(win[0, 1, 1, 1, :3], imgs[0, 9, 0])  # clamped into the image
    np.testing.assert_array_equal(win[1, 0, 0, 0, :3], imgs[1, 0, 0])  # edge-padded
    np.testing.assert_array_equal(win[1, 1, 1, 1, :3], imgs[1, 9, 11])
    plain = ro["local_windows"](imgs, centres, 1, with_gradient=False).reshape(2, 2, 3, 3, 3)
    np.testing.assert_array_equal(plain, win[..., :3])


def test_centre_readout_mlp_finds_what_ridge_cannot():
    """The --mlp readout: a target that is a non-linear function of the features (|x|, which
    no linear map reads) is found by the MLP and missed by the ridge; noise scores near 0."""
    ro = runpy.run_path(str(SCRIPTS / "centre_readout.py"))
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 32, 4))
    target = np.abs(feats[..., :2]) - np.sqrt(2 / np.pi)
    train = np.arange(40) < 20
    assert ro["readout"](feats, target, train)["r2"] < 0.05
    found = ro["mlp_readout"](feats, target, train, hidden=32)
    assert found["r2"] > 0.8 and found["ci95"][0] > 0.7 and found["n_features"] == 4
    noise = ro["mlp_readout"](feats, rng.normal(size=(40, 32, 2)), train, hidden=32)
    assert noise["r2"] < 0.05 and noise["ci95"][0] < 0
    again = ro["mlp_readout"](feats, target, train, hidden=32)
    assert again == found  # seeded: the same numbers twice


def test_centre_readout_end_to_end(tmp_path, folder, monkeypatch, capsys):
    """scripts/centre_readout.py on a trained checkpoint: a JSON with the three readouts and the
    moves; a bad --json stops it before any fitting."""
    run = tmp_path / "tiny_run"
    sets = [f"data.spec=imagefolder:{folder}", *TINY, "model.num_gaussians=8"]
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, "--out",
                 str(run)]) == 0  # fmt: skip
    common = ["--ckpt", str(run / "last.pt"), "--data", f"imagefolder:{folder}", "--split",
              "train", "--num-images", "8", "--steps", "3", "--radius", "1",
              "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit, match="is a directory"):
        run_script("centre_readout.py", *common, "--json", str(tmp_path), monkeypatch=monkeypatch)
    assert "R^2" not in capsys.readouterr().out  # nothing was fitted
    out = tmp_path / "readout.json"
    run_script("centre_readout.py", *common, "--mlp", "--json", str(out), monkeypatch=monkeypatch)
    r = json.loads(out.read_text())
    assert set(r["readout_mlp"]) == {"decoder", "local", "decoder+local", "local_error",
                                     "decoder->own"}  # fmt: skip
    assert r["readout_mlp"]["local"]["n_features"] == 9 * 4
    assert (r["n_images"], r["n_queries"], r["steps"], r["radius"]) == (8, 8, 3, 1)
    assert set(r["readout"]) == {"decoder", "local", "decoder+local", "local_error",
                                 "decoder->own", "repeat"}  # fmt: skip
    assert r["readout"]["local_error"]["n_features"] == 9 * 3
    assert r["jitter"] == 0.02 and r["readout"]["repeat"]["r2"] < 1.0
    assert r["readout"]["local"]["n_features"] == 9 * 4
    assert r["readout"]["decoder+local"]["n_features"] == r["readout"]["decoder"]["n_features"] + 36
    assert r["move_px_rms"]["total"] > 0  # fitting moved the centres
    assert "held-out R^2" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="at least 8"):
        run_script("centre_readout.py", "--ckpt", "x", "--num-images", "4", "--json", "y",
                   monkeypatch=monkeypatch)  # fmt: skip


def test_health_sweep_all_is_the_first_sweep_only():
    """`scripts/health_sweep.py --variants all` runs the first sweep and its MAE baseline; the
    later probes (centre, slack, anchor, white) are run by name."""
    sweep = runpy.run_path(str(SCRIPTS / "health_sweep.py"))
    first = sweep["SWEEP"]
    assert "k256_c2_grey_guard" in first and first[-1] == "mae_pix"
    probes = (
        "centre_",
        "slack_",
        "anchor_",
        "white_",
        "refine",
        "autoenc",
        "seed",
        "capacity",
        "depth_",
        "lr_",
        "attend_",
        "mixed",
    )
    assert not [v for v in first if v.startswith(probes)]
    assert set(sweep["VARIANTS"]) >= {"white_anchor", "anchor_grid_normal", "centre_control"}
    # the probes run before the preset took anchored queries rerun unanchored, as they ran
    for name in (
        "centre_control",
        "centre_query_normal",
        "slack_k32",
        "refine1",
        "autoenc_mask0",
        "capacity_dec8",
        "capacity_w256",
        "depth_flat",
        "lr_warmup3",
        "lr_dec0.5",
        "lr_dec2",
    ):
        assert "model.query_anchor=none" in sweep["VARIANTS"][name][1]


def test_health_trend_compares_runs_step_by_step(tmp_path, monkeypatch, capsys):
    """scripts/health_trend.py: the logged health of each run at (or just before) each asked
    step, the median speed, and one-line errors for bad files."""
    a = tmp_path / "control.metrics.jsonl"
    b = tmp_path / "probe" / "metrics.jsonl"
    b.parent.mkdir()
    rows_a = [{"step": s, "images_per_s": 40.0 + s, "health/centre_ratio": s / 1000}
              for s in (10, 20, 30)]  # fmt: skip
    rows_b = [{"step": s, "images_per_s": 20.0, "health/centre_ratio": 0.5} for s in (10, 30)]
    rows_b.append({"step": 30, "val_loss": 0.1})  # a line without health is skipped
    a.write_text("\n".join(json.dumps(r) for r in rows_a) + "\n")
    b.write_text("\n".join(json.dumps(r) for r in rows_b) + "\n")
    run_script("health_trend.py", str(a), str(b), "--steps", "30", "20", "--keys",
               "centre_ratio", "z_std_within", monkeypatch=monkeypatch)  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| step | run | centre_ratio | z_std_within |"
    assert out[2:] == [
        "| 20 | control | 0.020 | - |",
        "| 20 (10) | probe | 0.500 | - |",
        "| 30 | control | 0.030 | - |",
        "| 30 | probe | 0.500 | - |",
        "| images/s (median) | control | 60.0 |",
        "| images/s (median) | probe | 20.0 |",
    ]
    with pytest.raises(SystemExit, match="not found"):
        run_script("health_trend.py", str(tmp_path / "missing.jsonl"), monkeypatch=monkeypatch)
    with pytest.raises(SystemExit, match="two runs named 'control'"):
        run_script("health_trend.py", str(a), str(a), monkeypatch=monkeypatch)
    with pytest.raises(SystemExit, match="logs none of"):
        run_script("health_trend.py", str(a), "--keys", "pinned_z", monkeypatch=monkeypatch)


def test_centre_sources_separates_photo_and_mask(tmp_path, folder, monkeypatch, capsys):
    """scripts/centre_sources.py: identical inputs give no spread; one photo under many masks
    isolates the mask, one mask over many photos the photo; the groups split every query."""
    sources = runpy.run_path(str(SCRIPTS / "centre_sources.py"))
    torch.manual_seed(0)
    from gmae.models import create_model

    model = create_model("gmae", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                         decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
                         num_gaussians=8).eval()  # fmt: skip
    imgs = torch.rand(4, 3, 16, 16)
    noise = torch.rand(4, 16)
    same = sources["centres_and_mask"]
    # one photo, one mask, four times: nothing varies
    c, d, inside, in_masked, opacity = same(model, imgs[:1].expand(4, -1, -1, -1), 0.75,
                                   noise[:1].expand(4, -1))  # fmt: skip
    assert c.shape == (4, 8, 2) and d.shape == inside.shape == in_masked.shape == (4, 8)
    assert opacity.shape == (4, 8) and ((opacity > 0) & (opacity < 1)).all()
    assert sources["ratio"](c, d)["centre_ratio"] < 1e-6
    # only the mask varies, or only the photo: both move the centres of a random model
    c, d, *_ = same(model, imgs[:1].expand(4, -1, -1, -1), 0.75, noise)
    assert sources["ratio"](c, d)["centre_ratio"] > 1e-4
    c, d, *_ = same(model, imgs, 0.75, noise[:1].expand(4, -1))
    assert sources["ratio"](c, d)["centre_ratio"] > 1e-4
    # the patch each centre lands in is the one gaussian_health finds
    from gmae.models.health import gaussian_health

    _, _, inside, in_masked, _ = same(model, imgs, 0.75, noise)
    per_image = [in_masked[i][inside[i]].mean() for i in range(4) if inside[i].any()]
    fraction = gaussian_health(model, imgs, 0.75, noise)["masked_centres"]["fraction"]
    assert float(np.mean(per_image)) == pytest.approx(fraction)
    # at mask 0 nothing is masked
    assert not same(model, imgs, 0.0, None)[3].any()

    # groups: queries 0-1 land in masked patches in most images and move (y std 1 and 0.5);
    # 2-3 stay put in visible ones; 4 is on screen in one image only, masked there; 5 never
    centres = np.zeros((4, 6, 2))
    centres[:, :, 0] = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    centres[:2, 0, 1] += 2.0
    centres[:2, 1, 1] += 1.0
    inside = np.ones((4, 6), dtype=bool)
    inside[1:, 4] = inside[:, 5] = False
    masked = np.zeros((4, 6), dtype=bool)
    masked[:3, :2] = masked[:, 4] = masked[:, 5] = True
    groups = sources["group_ratios"](centres, inside, masked)
    within = centres.std(1).mean()
    assert (groups["masked"]["queries"], groups["visible"]["queries"]) == (3, 2)
    assert groups["offscreen_queries"] == 1
    assert groups["visible"]["centre_ratio"] == 0.0
    assert groups["masked"]["centre_ratio"] == pytest.approx((0.5 + 0.25 + 0) / 3 / within)
    diff = groups["visible_minus_masked"]
    assert diff["centre_ratio"] == pytest.approx(-0.25 / within)
    assert diff["ci95"][0] < diff["centre_ratio"] < diff["ci95"][1] <= 0
    assert "visible_minus_masked" not in sources["group_ratios"](centres, inside, ~inside)

    # what the centres sit on: every photo dark but for one bright pixel, a different one per
    # photo; centres on their own photo's bright pixel read bright there and dark on another
    photos = torch.zeros(4, 3, 16, 16)
    spots = [(2, 3), (5, 11), (12, 4), (9, 9)]  # (row, col)
    for i, (r, c) in enumerate(spots):
        photos[i, :, r, c] = 1.0
    on_spot = np.array([[[c + 0.5, r + 0.5]] * 3 for r, c in spots])  # [4, 3, 2] (u, v)
    seek = sources["seeks"](photos, on_spot)
    lum = seek["luminance"]
    assert lum["own"] == pytest.approx(256.0) and lum["other_image"] == 0.0  # 1 / mean 1/256
    assert lum["own_minus_other"] == pytest.approx(256.0) and lum["ci95"][0] > 0
    still = sources["seeks"](photos, np.broadcast_to(on_spot[:1], on_spot.shape).copy())
    assert still["luminance"]["own_minus_other"] < lum["own_minus_other"]

    # by opacity: of 8 queries on 4 photos, the two most opaque move (y std 1), the rest stay
    moving = np.zeros((4, 8, 2))
    moving[:, :, 0] = np.arange(8) * 4.0
    moving[:2, 6:, 1] += 2.0
    opacity = np.tile(np.linspace(0.1, 0.8, 8), (4, 1))
    split = sources["opacity_split"](moving, opacity)
    within = moving.std(1).mean()
    assert split["top_quarter"]["queries"] == split["bottom_quarter"]["queries"] == 2
    assert split["top_quarter"]["centre_ratio"] == pytest.approx(0.5 / within)
    assert split["bottom_quarter"]["centre_ratio"] == 0.0
    assert split["top_quarter"]["mean_opacity"] == pytest.approx(0.75)
    weighted = split["opacity_weighted_ratio"]
    assert (moving.std(0).mean(-1).mean() / within) < weighted < 0.5 / within

    # attend_all: the pointer's attention on the masked patches; with keys that say nothing
    # (k = 0) it is uniform, so the share is the masked patches' share of the keys
    pointing = create_model("gmae", img_size=16, patch_size=4, embed_dim=32, depth=1,
                            num_heads=2, decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
                            num_gaussians=8, query_anchor="attend_all").eval()  # fmt: skip
    with torch.no_grad():
        pointing.pointer.k.weight.zero_()
    flat = sources["attention_to_masked"](pointing, imgs, 0.75, noise)
    assert flat["keys_share"] == 0.75
    assert flat["share"] == pytest.approx(0.75) and flat["per_query_p10_p90"] == pytest.approx(
        [0.75, 0.75])  # fmt: skip
    with torch.no_grad():  # keys = the input: the masked ones (token + place) now differ
        pointing.pointer.k.weight.copy_(torch.eye(32))
        pointing.pointer.mask_key.fill_(3.0)
        pointing.pointer.q.weight.copy_(torch.eye(32) * 5)
    assert sources["attention_to_masked"](pointing, imgs, 0.75, noise)["share"] != pytest.approx(
        0.75, abs=1e-3)  # fmt: skip

    # mixed: the grid's queries (the first 2) stay put, the attending ones move (y std 1)
    split = np.zeros((4, 6, 2))
    split[:, :, 0] = np.arange(6) * 4.0
    split[:2, 2:, 1] += 2.0
    in_view = np.ones((4, 6), dtype=bool)
    in_view[:, 5] = False  # one attending query never on screen: not counted as in or out
    masked = np.zeros((4, 6), dtype=bool)
    masked[:2, :2] = masked[:, 5] = True
    halves = sources["anchor_split"](split, in_view, masked, 2)
    within = split.std(1).mean()
    assert (halves["grid"]["queries"], halves["attending"]["queries"]) == (2, 4)
    assert halves["grid"]["centre_ratio"] == 0.0 and halves["grid"]["in_masked"] == 0.5
    assert halves["attending"]["centre_ratio"] == pytest.approx(0.5 / within)  # x 0, y 1
    assert halves["attending"]["in_masked"] == 0.0
    assert "in_masked" not in sources["anchor_split"](split, None, None, 2)["grid"]

    # end to end on a trained checkpoint; a model trained without a mask is refused
    run = tmp_path / "tiny_run"
    sets = [f"data.spec=imagefolder:{folder}", *TINY, "model.num_gaussians=8"]
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, "--out",
                 str(run)]) == 0  # fmt: skip
    out = tmp_path / "sources.json"
    common = ["--ckpt", str(run / "last.pt"), "--data", f"imagefolder:{folder}", "--num-images",
              "4", "--mask-images", "2"]  # fmt: skip
    run_script("centre_sources.py", *common, "--json", str(out), monkeypatch=monkeypatch)
    r = json.loads(out.read_text())
    assert r["n_images"] == 4 and r["same_image"]["images"] == 2
    groups = r["shared_mask"]["groups"]
    assert groups["visible"]["queries"] + groups["masked"]["queries"] == 8
    for key in ("own_masks", "shared_mask", "mask0"):
        assert r[key]["centre_ratio"] >= 0
    assert "by_pass" not in r and "pointer_to_masked" not in r  # single pass, no pointer
    assert set(r["mask0_seeks"]) == {"luminance", "gradient"}
    assert r["mask0_by_opacity"]["top_quarter"]["queries"] == 2  # a quarter of 8
    assert "shared mask" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"mask ratio in \(0, 1\)"):
        run_script("centre_sources.py", *common, "--mask-ratio", "0", "--json",
                   str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
    mask0 = tmp_path / "mask0_run"
    no_mask = ["model.mask_ratio=0.0", "model.loss_on=all"]
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, *no_mask,
                 "--out", str(mask0)]) == 0  # fmt: skip
    with pytest.raises(SystemExit, match=r"mask ratio in \(0, 1\), got 0.0 \(the model's own\)"):
        run_script("centre_sources.py", "--ckpt", str(mask0 / "last.pt"), *common[2:], "--json",
                   str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
    # a refining model: the ratio after each pass; after all of them it is the own-mask one
    refined = tmp_path / "refine_run"
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets,
                 "model.refine_steps=1", "--out", str(refined)]) == 0  # fmt: skip
    run_script("centre_sources.py", "--ckpt", str(refined / "last.pt"), *common[2:], "--json",
               str(out), monkeypatch=monkeypatch)  # fmt: skip
    r = json.loads(out.read_text())
    assert [row["refine_steps"] for row in r["by_pass"]] == [0, 1]
    assert r["by_pass"][-1]["own_masks"] == r["own_masks"]
    assert r["by_pass"][-1]["mask0"] == r["mask0"]
    assert "after 0 refinement passes" in capsys.readouterr().out
    # a mixed model: the two halves of its layout, told apart
    mixed = tmp_path / "mixed_run"
    mixed_sets = ["model.query_anchor=mixed", "model.grid_queries=2"]
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, *mixed_sets,
                 "--out", str(mixed)]) == 0  # fmt: skip
    run_script("centre_sources.py", "--ckpt", str(mixed / "last.pt"), *common[2:], "--json",
               str(out), monkeypatch=monkeypatch)  # fmt: skip
    r = json.loads(out.read_text())
    assert r["by_anchor"]["own_masks"]["grid"]["queries"] == 2
    assert r["by_anchor"]["mask0"]["attending"]["queries"] == 6
    assert 0 <= r["by_anchor"]["own_masks"]["attending"]["in_masked"] <= 1
    assert "attending queries (6)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="centre_sources: .*missing"):
        run_script("centre_sources.py", "--ckpt", str(tmp_path / "missing.pt"), *common[2:],
                   "--json", str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
    with pytest.raises(SystemExit, match="is a directory"):
        run_script("centre_sources.py", *common, "--json", str(tmp_path), monkeypatch=monkeypatch)


def test_health_sweep_table_rows():
    """The sweep's markdown table: one row per run, '-' where nothing was measured (an MAE has
    no health, a model trained without a mask has no masked-patch z-score, one with flat depth no
    depth order)."""
    sweep = runpy.run_path(str(SCRIPTS / "health_sweep.py"))
    health = {"verdict": "degraded", "pinned_size": 0.0, "pinned_z": 0.01, "screen_p90_p10": 2.4,
              "z_std_within": 0.164, "alpha_coverage": {"mean": 0.95},
              "masked_centres": {"fraction": 0.0, "z": None},
              "layout": {"centre_ratio": 0.058, "depth_order_agreement": 0.88}}  # fmt: skip
    masked = {**health, "masked_centres": {"fraction": 0.651, "z": -59.6}}
    # flat depth (model.flat_depth): every Gaussian at one depth, no order to agree on
    flat = {**masked, "layout": {"centre_ratio": 0.104, "depth_order_agreement": None}}
    rows = [{"name": "autoenc_mask0", "steps": 730, "health": health, "masked_psnr": None},
            {"name": "control", "steps": 730, "health": masked, "masked_psnr": 15.31},
            {"name": "mae_pix", "steps": 730, "masked_psnr": 15.32},
            {"name": "depth_flat", "steps": 730, "health": flat, "masked_psnr": 15.27}]  # fmt: skip
    lines = sweep["table"](rows).splitlines()
    assert len(lines) == 6 and all(line.count("|") == 13 for line in lines)
    assert "| 0.10 | 0.651 (-59.6) | - | 0.95 | 15.27 |" in lines[5]
    assert lines[2] == ("| autoenc_mask0 | 730 | degraded | 0.0% | 1.0% | 2.40 | 0.164 | 0.06 | "
                        "0.000 (-) | 0.88 | 0.95 | - |")  # fmt: skip
    assert "| 0.651 (-59.6) |" in lines[3] and lines[3].endswith("| 15.31 |")
    assert lines[4] == "| mae_pix | 730 | - |" + " - |" * 8 + " 15.32 |"


def test_coverage_error_bins_by_hand_and_end_to_end(tmp_path, folder, monkeypatch, capsys):
    """scripts/coverage_error.py: the alpha bins split the masked pixels and their error as
    counted by hand; on a trained checkpoint the shares add up to 1 and two checkpoints are
    scored on the same masks."""
    cov = runpy.run_path(str(SCRIPTS / "coverage_error.py"))
    err = np.array([1.0, 1.0, 2.0, 4.0, 0.0])
    alpha = np.array([0.1, 0.4, 0.6, 0.95, 1.0])
    r = cov["coverage_bins"](err, alpha)
    assert r["masked_mse"] == pytest.approx(1.6) and r["alpha_mean"] == pytest.approx(0.61)
    shares = [b["pixel_share"] for b in r["bins"]]
    assert shares == pytest.approx([0.4, 0.2, 0.2, 0.2])
    assert [b["mse"] for b in r["bins"]] == pytest.approx([1.0, 2.0, 4.0, 0.0])
    assert [b["error_share"] for b in r["bins"]] == pytest.approx([0.25, 0.25, 0.5, 0.0])
    assert r["bins"][-1]["alpha_to"] == 1.0  # alpha 1 is in the last bin
    empty = cov["coverage_bins"](err[:2], alpha[:2])
    assert empty["bins"][1]["mse"] is None and empty["bins"][1]["pixel_share"] == 0.0
    with pytest.raises(GmaeError, match="as many errors"):
        cov["coverage_bins"](err, alpha[:3])

    run = tmp_path / "tiny_run"
    sets = [f"data.spec=imagefolder:{folder}", *TINY, "model.num_gaussians=8"]
    assert main(["pretrain", "--config", "gmae_tiny_cifar10", "--set", *sets, "--out",
                 str(run)]) == 0  # fmt: skip
    out = tmp_path / "coverage.json"
    ckpt = str(run / "last.pt")
    common = ["--data", f"imagefolder:{folder}", "--num-images", "4"]
    run_script("coverage_error.py", "--ckpt", ckpt, ckpt, *common, "--json", str(out),
               monkeypatch=monkeypatch)  # fmt: skip
    r = json.loads(out.read_text())
    assert r["n_images"] == 4 and len(r["models"]) == 2
    a, b = r["models"]
    assert a["masked_mse"] == pytest.approx(b["masked_mse"])  # same model, same masks
    assert sum(x["pixel_share"] for x in a["bins"]) == pytest.approx(1.0)
    assert sum(x["error_share"] for x in a["bins"]) == pytest.approx(1.0)
    assert 0.0 <= a["alpha_mean"] <= 1.0 and "masked MSE" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="coverage_error: .*missing"):
        run_script("coverage_error.py", "--ckpt", str(tmp_path / "missing.pt"), *common,
                   "--json", str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
    with pytest.raises(SystemExit, match="mask-ratio in"):
        run_script("coverage_error.py", "--ckpt", ckpt, *common, "--mask-ratio", "0", "--json",
                   str(tmp_path / "x.json"), monkeypatch=monkeypatch)  # fmt: skip
