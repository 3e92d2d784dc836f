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


def test_seed_bootstrap_counts_seeds_as_the_replicates():
    """A recipe gap smaller than the seed-to-seed spread: the image bootstrap of one run against
    one run calls it certain, the seed-level test does not; a gap far beyond the spread is seen
    by both, and the permutation p never goes under its floor 1 / C(s_a + s_b, s_a)."""
    from gmae.evaluate.paired import seed_bootstrap

    rng = np.random.default_rng(3)
    images = rng.uniform(12, 20, 200)  # per-image difficulty shared by every run
    run = lambda offset: images + offset + rng.normal(0, 0.05, 200)  # noqa: E731
    a = [run(o) for o in (0.1, -0.2, 0.25)]  # seed offsets spread ~0.2 dB, mean +0.05
    b = [run(o) for o in (0.0, 0.15, -0.15)]  # mean 0
    one = paired_bootstrap(a[0], b[0])
    assert one["ci"][0] > 0  # seed 0 against seed 0: "A beats B"
    r = seed_bootstrap(a, b)
    assert r["seeds_a"] == r["seeds_b"] == 3 and r["n"] == 200
    assert r["mean_diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert r["seed_means_a"] == pytest.approx([np.mean(x) for x in a])
    assert r["ci"][0] < 0 < r["ci"][1]  # the seeds' spread is in the CI
    assert r["p_smallest_possible"] == pytest.approx(2 / 20) and r["p_seed_permutation"] > 0.3

    far = seed_bootstrap([x + 2.0 for x in a], b)
    assert far["ci"][0] > 1.5
    # the observed split and its mirror: the floor, never less
    assert far["p_seed_permutation"] == pytest.approx(far["p_smallest_possible"])

    single = seed_bootstrap(a[:1], b[:1])  # one seed each: the paired image bootstrap's CI
    assert single["mean_diff"] == pytest.approx(one["mean_diff"])
    assert single["p_seed_permutation"] == single["p_smallest_possible"] == 1.0
    with pytest.raises(GmaeError, match="same >= 2 images"):
        seed_bootstrap(a, [x[:100] for x in b])


def test_compare_recon_seeds_checks_every_run_and_the_script(tmp_path, capsys, monkeypatch):
    from gmae.evaluate.paired import compare_recon_seeds

    a = [_recon([20.0, 18.0, 16.0]), _recon([20.5, 18.0, 16.5])]
    b = [_recon([19.0, 17.5, 15.0]), _recon([19.5, 17.0, 15.0]), _recon([19.0, 18.0, 15.5])]
    r = compare_recon_seeds(a, b)
    assert r["metric"] == "masked_psnr" and r["mask_ratio"] == 0.75
    assert r["mean_diff"] == pytest.approx(109 / 6 - 155.5 / 9)
    assert r["p_seed_permutation"] == pytest.approx(1 / 10)  # no other split is as extreme
    assert r["p_smallest_possible"] == pytest.approx(1 / 10)  # 2 against 3: no mirror split
    with pytest.raises(GmaeError, match="settings.seed"):
        compare_recon_seeds(a, [*b, _recon([19.0, 17.5, 15.0], seed=1)])
    with pytest.raises(GmaeError, match="at least one"):
        compare_recon_seeds(a, [])

    paths = []
    for i, res in enumerate(a + b):
        p = tmp_path / f"run{i}.json"
        p.write_text(json.dumps(res))
        paths.append(str(p))
    out = tmp_path / "seeds.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "seed_compare.py"
    argv = ["seed_compare.py", "--a", *paths[:2], "--b", *paths[2:], "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert exit_.value.code == 0 and "2 seeds" in printed and "3 seeds" in printed
    assert json.loads(out.read_text())["seeds_b"] == 3


def test_diff_by_quartile_finds_where_a_difference_sits():
    from gmae.evaluate.paired import diff_by_quartile

    b = np.arange(8.0)  # B's scores, hardest (lowest) first after ranking
    a = b.copy()
    a[6:] -= 1.0  # A loses only on B's easiest quarter
    rng = np.random.default_rng(0)
    perm = rng.permutation(8)  # the order the images come in does not matter
    q = diff_by_quartile(a[perm], b[perm])
    assert [x["mean_diff"] for x in q] == pytest.approx([0, 0, 0, -1.0])
    assert [x["n"] for x in q] == [2, 2, 2, 2] and q[3]["b_range"] == [6.0, 7.0]
    assert [x["n"] for x in diff_by_quartile(np.zeros(5), np.arange(5.0))] == [2, 1, 1, 1]
    with pytest.raises(GmaeError, match=">= 4 scores"):
        diff_by_quartile([1.0, 2.0], [1.0, 2.0])
    r = compare_results(_recon([20.0, 18.0, 16.0, 14.0]), _recon([19.0, 18.0, 16.0, 15.0]))
    assert [x["mean_diff"] for x in r["by_quartile_of_b"]] == pytest.approx([-1, 0, 0, 1])
    assert compare_results(_recon([1.0, 2.0]), _recon([1.0, 1.0]))["by_quartile_of_b"] is None
