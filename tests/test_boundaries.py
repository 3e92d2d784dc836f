"""The BSDS500 boundary benchmark (gmae.evaluate.boundaries, `gmae eval boundaries`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gmae.cli import main
from gmae.data.archives import dataset_root
from gmae.errors import GmaeError
from gmae.evaluate.boundaries import (
    correspond_pixels,
    evaluate_boundaries,
    load_gt_boundaries,
    load_prediction,
    thresholds_for,
)


@pytest.fixture(scope="module")
def bench():
    return dataset_root("bsds500-bench")


@pytest.fixture(scope="module")
def test2(bench):
    """Our scores of the benchmark's own test_2 input (5 PNG maps, 5 thresholds)."""
    return evaluate_boundaries(bench / "png", bench / "groundTruth", nthresh=5, workers=1)


def _line_gt(shape=(100, 100), col=50):
    gt = np.zeros(shape, dtype=bool)
    gt[10:90, col] = True
    return gt


# --- the benchmark's own vectors ------------------------------------------------------------


def test_reproduces_bsds_test2_summary(bench, test2):
    # eval_bdry.txt: bestT bestR bestP bestF (ODS) | R P F (OIS) | AP
    exp = np.loadtxt(bench / "test_2" / "eval_bdry.txt")
    assert test2.ods_threshold == pytest.approx(exp[0], abs=1e-4)
    assert test2.ods == pytest.approx(exp[3], abs=0.005)
    assert test2.ois == pytest.approx(exp[6], abs=0.005)
    assert test2.ap == pytest.approx(exp[7], abs=0.005)
    for ours, ref in [
        (test2.ods_recall, exp[1]),
        (test2.ods_precision, exp[2]),
        (test2.ois_recall, exp[4]),
        (test2.ois_precision, exp[5]),
    ]:
        assert ours == pytest.approx(ref, abs=0.005)


def test_reproduces_bsds_test2_per_image(bench, test2):
    # eval_bdry_img.txt: index (images in sorted order), best threshold, R, P, F
    exp = np.loadtxt(bench / "test_2" / "eval_bdry_img.txt")
    names = sorted(p.stem for p in (bench / "png").glob("*.png"))
    assert [s.name for s in test2.images] == names
    for s, row in zip(test2.images, exp):
        assert s.f == pytest.approx(row[4], abs=0.01), s.name
        assert s.threshold == pytest.approx(row[1], abs=1e-3), s.name
    # and the dataset PR curve (eval_bdry_thr.txt: threshold R P F)
    thr = np.loadtxt(bench / "test_2" / "eval_bdry_thr.txt")
    np.testing.assert_allclose(test2.thresholds, thr[:, 0], atol=1e-5)
    np.testing.assert_allclose(test2.f, thr[:, 3], atol=0.005)


def test_thresholds_are_matlab_linspace():
    np.testing.assert_allclose(thresholds_for(5), [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    t = thresholds_for(99)
    assert t.size == 99 and t[0] == pytest.approx(0.01) and t[-1] == 0.99


# --- behaviour ------------------------------------------------------------------------------


def test_load_gt_boundaries(bench):
    gts = load_gt_boundaries(bench / "groundTruth" / "2018.mat")
    assert len(gts) >= 4
    assert all(g.dtype == bool and g.shape == gts[0].shape for g in gts)
    assert gts[0].shape in [(321, 481), (481, 321)] and gts[0].any()


def test_perfect_prediction_has_full_precision(bench):
    gts = load_gt_boundaries(bench / "groundTruth" / "2018.mat")
    pred = gts[0].astype(np.float64)  # one annotator's boundaries as the prediction
    res = evaluate_boundaries({"2018": pred}, {"2018": gts}, nthresh=3, workers=1)
    assert res.ods_precision > 0.99
    assert res.precision.min() > 0.99
    assert 0.3 < res.ods_recall < 1  # the other annotators disagree somewhat


def test_empty_prediction_scores_zero():
    gt = _line_gt()
    res = evaluate_boundaries({"a": np.zeros(gt.shape)}, {"a": [gt]}, nthresh=5, workers=1)
    # no predicted pixels: P = 0/0 counts as 0 (as the original), R = 0
    assert res.ods == res.ois == res.ap == 0.0
    assert (res.recall == 0).all() and (res.precision == 0).all()
    assert res.images[0].f == 0.0
    assert (res.counts["a"][:, 3] == 0).all()


@pytest.mark.parametrize("shift, hits", [(0, True), (2, True), (4, False)])
def test_shifted_prediction_matches_within_tolerance(shift, hits):
    gt = _line_gt()
    pred = _line_gt(col=50 + shift).astype(float)
    # tolerance 0.02 x diagonal (141.4 px) = 2.83 px
    res = evaluate_boundaries({"a": pred}, {"a": [gt]}, nthresh=1, max_dist=0.02, workers=1)
    if hits:
        assert res.recall[0] == res.precision[0] == 1.0
    else:
        assert res.recall[0] == res.precision[0] == 0.0


def test_correspond_pixels_is_one_to_one_and_prefers_near_pixels():
    gt = np.zeros((40, 40), dtype=bool)
    pred = np.zeros_like(gt)
    gt[20, 20] = True
    pred[20, 20] = pred[20, 21] = True  # two candidates for one annotator pixel
    m_pred, m_gt = correspond_pixels(pred, gt, max_dist=0.05)
    assert m_gt.sum() == 1 and m_pred.sum() == 1
    assert m_pred[20, 20]  # the exact one, not the neighbour


def test_8_and_16_bit_pngs_score_the_same(bench, tmp_path):
    p8, p16, gt = tmp_path / "p8", tmp_path / "p16", tmp_path / "gt"
    for d in (p8, p16, gt):
        d.mkdir()
    name = "3063"
    shutil.copy(bench / "png" / f"{name}.png", p8)
    shutil.copy(bench / "groundTruth" / f"{name}.mat", gt)
    v8 = np.array(Image.open(bench / "png" / f"{name}.png"))
    Image.fromarray(v8.astype(np.uint16) * 257).save(p16 / f"{name}.png")
    np.testing.assert_array_equal(load_prediction(p8 / f"{name}.png"), v8 / 255)
    np.testing.assert_array_equal(
        load_prediction(p8 / f"{name}.png"), load_prediction(p16 / f"{name}.png")
    )
    r8 = evaluate_boundaries(p8, gt, nthresh=5, workers=1)
    r16 = evaluate_boundaries(p16, gt, nthresh=5, workers=1)
    assert (r8.ods, r8.ois, r8.ap) == (r16.ods, r16.ois, r16.ap)
    np.testing.assert_array_equal(r8.counts[name], r16.counts[name])


# --- errors ---------------------------------------------------------------------------------


def test_error_missing_prediction_dir(bench, tmp_path):
    with pytest.raises(GmaeError, match="prediction directory .* not found"):
        evaluate_boundaries(tmp_path / "nope", bench / "groundTruth")


def test_error_missing_gt_dir(bench, tmp_path):
    with pytest.raises(GmaeError, match="ground-truth directory .* not found"):
        evaluate_boundaries(bench / "png", tmp_path / "nope")


def test_error_prediction_without_ground_truth(bench, tmp_path):
    shutil.copy(bench / "png" / "2018.png", tmp_path / "2018.png")
    shutil.copy(bench / "png" / "2018.png", tmp_path / "99999.png")
    with pytest.raises(GmaeError, match="no ground truth for 1 prediction.*99999"):
        evaluate_boundaries(tmp_path, bench / "groundTruth", workers=1)


def test_error_non_png(bench, tmp_path):
    shutil.copy(bench / "png" / "2018.png", tmp_path / "2018.png")
    (tmp_path / "2018.jpg").write_bytes(b"\xff\xd8 not a png")
    with pytest.raises(GmaeError, match="non-PNG file.*2018.jpg"):
        evaluate_boundaries(tmp_path, bench / "groundTruth", workers=1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "2018.png").write_bytes(b"this is not a PNG")
    with pytest.raises(GmaeError, match="not a valid PNG"):
        evaluate_boundaries(bad, bench / "groundTruth", workers=1)


def test_error_size_mismatch(bench):
    gts = load_gt_boundaries(bench / "groundTruth" / "2018.mat")
    with pytest.raises(GmaeError, match="ground truth is"):
        evaluate_boundaries({"2018": np.zeros((10, 10))}, {"2018": gts}, workers=1)


# --- command line ---------------------------------------------------------------------------


def test_cli_writes_json(bench, tmp_path, test2, capsys):
    out = tmp_path / "res" / "bdry.json"
    argv = ["eval", "boundaries", "--pred", str(bench / "png"), "--gt", str(bench / "groundTruth")]
    argv += ["--nthresh", "5", "--workers", "2", "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    # the process pool gives the same numbers as the in-process run
    assert data["ods"] == pytest.approx(test2.ods, abs=1e-12)
    assert data["ois"] == pytest.approx(test2.ois, abs=1e-12)
    assert data["ap"] == pytest.approx(test2.ap, abs=1e-12)
    assert len(data["images"]) == 5 and {"name", "threshold", "f"} <= set(data["images"][0])
    assert len(data["curve"]["recall"]) == 5
    assert data["settings"]["nthresh"] == 5 and data["settings"]["n_images"] == 5
    assert "ODS" in capsys.readouterr().out
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_cli_error_is_one_line(tmp_path, capsys):
    argv = ["eval", "boundaries", "--pred", str(tmp_path / "x"), "--gt", str(tmp_path)]
    assert main(argv + ["--json", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gmae: error:") and "\n" not in err
    assert not (tmp_path / "o.json").exists()
