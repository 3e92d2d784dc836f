"""gmae.zeroshot.occlusion: depth-order scores against dead-leaves ground truth, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gmae.cli import main
from gmae.data.deadleaves import DeadLeavesParams, occlusion_pairs, render_scene
from gmae.models import create_model
from gmae.zeroshot import occlusion as OC

TINY = dict(
    patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip
SCENES = [render_scene(DeadLeavesParams(size=32), "test", i) for i in range(4)]


def save_checkpoint(path: Path, name: str = "gmae") -> Path:
    from gmae.train.checkpoint import model_kwargs, save_checkpoint
    from gmae.train.config import config_from_dict, config_to_dict

    model_cfg = {"name": name, **TINY, **({"num_gaussians": 16} if name == "gmae" else {})}
    cfg = config_from_dict({"model": model_cfg, "data": {"img_size": 32}})
    torch.manual_seed(0)
    model = create_model(**model_kwargs(cfg))
    save_checkpoint(path, {"format": 1, "config": config_to_dict(cfg), "model": model.state_dict()})
    return path


def test_pair_accuracy_and_rank_correlation_of_known_depths():
    leaf = SCENES[0].leaf
    near, far = occlusion_pairs(leaf)
    true = leaf.astype(float)  # depth = occlusion index: perfect
    assert OC.pair_accuracy(true, near, far) == (1.0, near.size)
    assert OC.pair_accuracy(-true, near, far)[0] == 0.0
    assert OC.pair_accuracy(np.zeros_like(true), near, far)[0] == 0.5  # ties: a half
    assert OC.leaf_rank_correlation(true, leaf) == pytest.approx(1.0)
    assert OC.leaf_rank_correlation(-true, leaf) == pytest.approx(-1.0)
    # uncovered (inf) pixels count as farthest; a map without 3 finite leaves has no rho
    assert np.isnan(OC.leaf_rank_correlation(np.full(leaf.shape, np.inf), leaf))


def test_depth_order_scores_separate_the_truth_from_controls():
    truth = np.stack([s.leaf.astype(float) for s in SCENES])
    rng = np.random.default_rng(0)
    depths = {"gmae": truth, "shuffled": truth[[1, 2, 3, 0]], "noise": rng.random(truth.shape)}
    d = OC.depth_order_scores(depths, SCENES, gap=1, n_boot=500)
    assert d["gmae"]["mean"] == 1.0 and d["gmae"]["pooled"] == 1.0
    assert d["gmae"]["ci"] == [1.0, 1.0] and d["gmae"]["p_vs_chance"] < 0.2
    assert 0.3 < d["noise"]["mean"] < 0.7 and d["noise"]["ci"][0] < 0.5 < d["noise"]["ci"][1]
    assert d["shuffled"]["mean"] < 0.8
    assert d["gmae_vs_shuffled"]["mean_diff"] > 0.2
    assert len(d["gmae"]["per_image"]) == 4 and d["gmae"]["pairs"] > 100
    r = OC.rank_correlation_scores(depths, SCENES, n_boot=500)
    assert r["gmae"]["mean"] == pytest.approx(1.0) and abs(r["noise"]["mean"]) < 0.5


def test_mean_ci_brackets_the_mean():
    s = OC.mean_ci([0.6, 0.7, 0.8, 0.9, float("nan")], chance=0.5, n_boot=2000)
    assert s["n"] == 4 and s["mean"] == pytest.approx(0.75)
    assert 0.6 <= s["ci"][0] < 0.75 < s["ci"][1] <= 0.9 and s["chance"] == 0.5


def test_occlusion_scores_with_a_tiny_model_and_baselines():
    torch.manual_seed(0)
    model = create_model("gmae", img_size=32, num_gaussians=16, **TINY).eval()
    torch.manual_seed(1)
    rand = create_model("gmae", img_size=32, num_gaussians=16, **TINY).eval()
    result, maps = OC.occlusion_scores(
        model, SCENES, rand, layers=(2, 4), n_boot=200, batch_size=3, workers=1
    )
    assert maps["gmae"].depth.shape == maps["gmae"].edges.shape == (4, 32, 32)
    for name in ("gmae", "random_gmae", "shuffled"):
        assert 0.0 <= result["depth_order"][name]["mean"] <= 1.0
        assert 0.0 <= result["boundaries"][name]["ods"] <= 1.0
    # the shuffled control is GMAE's own map of the next scene
    near, far = occlusion_pairs(SCENES[0].leaf)
    shuffled0 = OC.pair_accuracy(maps["gmae"].depth[1], near, far)[0]
    assert result["depth_order"]["shuffled"]["per_image"][0] == round(shuffled0, 4)
    assert {"canny", "sobel", "gmae_vs_canny"} <= set(result["boundaries"])
    # flat-coloured leaves: Sobel fires on the occlusion boundaries, an untrained GMAE does not
    assert result["boundaries"]["sobel"]["ods"] > result["boundaries"]["gmae"]["ods"] + 0.1
    fg = result["figure_ground"]
    assert {"gmae_depth_otsu", "random_gmae_depth_otsu", "shuffled_depth_otsu"} <= set(fg)
    assert fg["all_figure"]["iou_fg"] == pytest.approx(fg["figure_fraction"])
    with pytest.raises(Exception, match="at least 2 scenes"):
        OC.occlusion_scores(model, SCENES[:1])


def test_cli_occlusion_writes_json_and_pictures(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "gmae.pt")
    out, path = tmp_path / "pics", tmp_path / "occ.json"
    args = ["zeroshot", "occlusion", "--ckpt", str(ckpt), "--data", "deadleaves:size=32,eval_n=3",
            "--json", str(path), "--n-boot", "200", "--workers", "1", "--layers", "2", "4",
            "--out", str(out), "--pictures", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(path.read_text())
    assert result["n_images"] == 3 and result["split"] == "test"
    assert set(result["depth_order"]) >= {"gmae", "random_gmae", "shuffled", "gmae_vs_shuffled"}
    assert result["health"]["verdict"] in ("healthy", "degraded", "degenerate")
    assert sorted(p.name for p in out.iterdir()) == ["scene_000000.png", "scene_000001.png"]
    text = capsys.readouterr().out
    assert "depth order" in text and "canny" in text
    assert main([*args[:4], "--data", "cifar10", "--json", str(path)]) == 2
    assert "need a dead-leaves data set" in capsys.readouterr().err
    mae = save_checkpoint(tmp_path / "mae.pt", "mae")
    assert main(["zeroshot", "occlusion", "--ckpt", str(mae), "--data", "deadleaves:size=32",
                 "--json", str(path)]) == 2  # fmt: skip
    assert "needs a GMAE" in capsys.readouterr().err
