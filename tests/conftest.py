"""Shared pytest fixtures (keep generic: any subpackage's tests may use them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmae.data.archives import shared_data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the offline data archives and SHA256SUMS."""
    root = shared_data_root()
    assert (root / "SHA256SUMS").is_file(), f"no archives at {root}: set GMAE_SHARED_DATA"
    return root


@pytest.fixture
def tmp_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory, used as GMAE_DATA_DIR for the test (archives extract there)."""
    path = tmp_path / "gmae-data"
    monkeypatch.setenv("GMAE_DATA_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny imagefolder root (spec ``imagefolder:ROOT``): train/ (2 classes x 6) and val/
    (2 classes x 2) random 20 px images, for end-to-end pretraining tests."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root
