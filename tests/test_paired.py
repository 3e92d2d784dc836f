"""The paired bootstrap used to test zero-shot edges against their control."""

from __future__ import annotations

import numpy as np
import pytest

from gmae.errors import GmaeError
from gmae.evaluate.paired import compare_boundaries, paired_bootstrap


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
