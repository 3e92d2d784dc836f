"""The paired bootstrap used to test zero-shot edges against their control and to compare two
models' reconstructions image by image."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from gmae.errors import GmaeError
from gmae.evaluate.paired import compare_boundaries, compare_results, paired_bootstrap


def test_a_clear_gain_has_a_ci_above_zero():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.2, 0.6, 100)
    r = paired_bootstrap(b + 0.05 + rng.normal(0, 0.02, 100), b)
    assert r["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert 0 < r["ci"][0] < r["mean_diff"] < r["ci"][1]
    assert r["p_sign_flip"] < 0.001 and r["a_better_fraction"] > 0.9


def test_no_difference_has_a_ci_around_zero():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.2, 0.6, 100)
    r = paired_bootstrap(b + rng.normal(0, 0.05, 100), b)
    assert r["ci"][0] < 0 < r["ci"][1] and r["p_sign_flip"] > 0.05
    # Pairing matters: the image-to-image spread (0.12) is far wider than the CI.
    assert r["ci"][1] - r["ci"][0] < 0.05


def test_compare_boundaries_pairs_by_image_and_checks_coverage():
    a = {"images": [{"name": "x", "f": 0.5}, {"name": "y", "f": 0.7}, {"name": "z", "f": 0.6}]}
    b = {"images": [{"name": "z", "f": 0.5}, {"name": "x", "f": 0.4}, {"name": "y", "f": 0.6}]}
    assert compare_boundaries(a, b)["mean_diff"] == pytest.approx(0.1)
    with pytest.raises(GmaeError, match="different images"):
        compare_boundaries(a, {"images": b["images"][:2]})
    with pytest.raises(GmaeError, match="not a"):
        compare_boundaries(a, {"ods": 0.3})


def _recon(psnr: list[float], seed: int = 0, ratio: float = 0.75) -> dict:
    images = [{"masked_psnr": v, "masked_ssim": 0.5, "psnr": v, "ssim": 0.5} for v in psnr]
    return {
        "protocol": "recon",
        "data": {"spec": "imagenette-128", "splits": {"val": len(psnr)}, "img_size": 64,
                 "crop_pct": 1.0},
        "settings": {"seed": seed, "mask_ratios": [ratio]},
        "results": [{"mask_ratio": ratio, "n_images": len(psnr), "images": images}],
    }  # fmt: skip


def test_compare_recon_pairs_images_and_refuses_unpaired_results(tmp_path, capsys, monkeypatch):
    a, b = _recon([20.0, 18.0, 16.0]), _recon([19.0, 17.5, 15.0])
    r = compare_results(a, b)
    assert r["metric"] == "masked_psnr" and r["mask_ratio"] == 0.75
    assert r["mean_diff"] == pytest.approx(2.5 / 3) and r["n"] == 3
    with pytest.raises(GmaeError, match="settings.seed"):  # other masks: not a paired design
        compare_results(a, _recon([19.0, 17.5, 15.0], seed=1))
    with pytest.raises(GmaeError, match="data.splits"):
        compare_results(a, _recon([19.0, 17.5]))
    with pytest.raises(GmaeError, match="no mask ratio"):
        compare_results(a, _recon([19.0, 17.5, 15.0], ratio=0.5))
    old = _recon([19.0, 17.5, 15.0])
    del old["results"][0]["images"]
    with pytest.raises(GmaeError, match="without per-image"):
        compare_results(a, old)

    # the script prints the comparison and writes it atomically
    pa, pb, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    script = Path(__file__).resolve().parents[1] / "scripts" / "paired_compare.py"
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", str(pa), str(pb), "--json", str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0 and "diff +0.8333" in capsys.readouterr().out
    assert json.loads(out.read_text())["mean_diff"] == pytest.approx(2.5 / 3)


def test_format_diff_gives_the_mean_difference_and_its_ci():
    from gmae.evaluate.paired import format_diff

    test = paired_bootstrap([1.0, 2.0, 3.5], [1.0, 1.0, 1.0])
    lo, hi = test["ci"]
    assert format_diff(test) == f"{test['mean_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    assert format_diff({"mean_diff": -0.5, "ci": [-1.0, 0.25]}, digits=2) == "-0.50 [-1.00, +0.25]"
