"""Shared pytest fixtures (keep generic: any subpackage's tests may use them)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
