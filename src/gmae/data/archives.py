"""The offline data archives: locate, verify (SHA-256) and extract them into a cache directory.

Archives live in ``../shared/data`` next to the repository (override: ``GMAE_SHARED_DATA``) and
are extracted into ``~/.cache/gmae`` (override: ``GMAE_DATA_DIR`` or ``--data-dir``). Extraction
is atomic: the archive is unpacked into a temporary directory beside the target and renamed into
place, so an interrupted or failed extraction never leaves a partial data set behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gmae.errors import GmaeError


@dataclass(frozen=True)
class Archive:
    name: str  # what users type: gmae data prepare NAME
    filename: str  # the archive in the shared data directory
    top: str  # the top-level directory the archive unpacks to


ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive("cifar10", "cifar10-jpeg.tar.gz", "cifar10"),
        Archive("imagenette-128", "imagenette-128.tar.gz", "imagenette-128"),
        Archive("bsds500", "bsds500-trainval.tar.gz", "bsds500"),
        Archive("weizmann-horse", "weizmann-horse-dev.tar.gz", "weizmann-horse"),
        Archive("bsds500-bench", "bsds500-bench-vectors.tar.gz", "bsds500-bench"),
    )
}

_DONE_MARKER = ".gmae-complete"  # written last inside an extracted data set


def shared_data_root() -> Path:
    """The directory holding the archives and ``SHA256SUMS``."""
    env = os.environ.get("GMAE_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    # src/gmae/data/archives.py -> repository root is parents[3]; shared/ sits beside the repo.
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "data"


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache directory that extracted data sets live in."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("GMAE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gmae"


def _archive(name: str) -> Archive:
    if name not in ARCHIVES:
        raise GmaeError(f"unknown data set {name!r}; known: {', '.join(ARCHIVES)}")
    return ARCHIVES[name]


def read_checksums(shared: Path) -> dict[str, str]:
    sums = shared / "SHA256SUMS"
    if not sums.is_file():
        raise GmaeError(
            f"no SHA256SUMS in {shared}: set GMAE_SHARED_DATA to the directory holding the archives"
        )
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, fname = line.split(maxsplit=1)
            out[fname.strip().lstrip("*")] = digest.lower()
    return out


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(name: str, shared: Path | None = None) -> Path:
    """Return the archive's path after checking it against ``SHA256SUMS``."""
    arc = _archive(name)
    shared = shared if shared is not None else shared_data_root()
    path = shared / arc.filename
    if not path.is_file():
        raise GmaeError(f"archive {path} not found: set GMAE_SHARED_DATA to the shared data dir")
    expected = read_checksums(shared).get(arc.filename)
    if expected is None:
        raise GmaeError(f"{arc.filename} is not listed in {shared / 'SHA256SUMS'}")
    actual = sha256(path)
    if actual != expected:
        raise GmaeError(
            f"checksum mismatch for {path}: expected {expected[:12]}..., got {actual[:12]}... "
            "(truncated or corrupt archive)"
        )
    return path


def is_prepared(name: str, data_root: Path | None = None) -> bool:
    arc = _archive(name)
    return (data_dir(data_root) / arc.top / _DONE_MARKER).is_file()


def prepare(
    name: str, data_root: str | os.PathLike | None = None, shared: Path | None = None
) -> Path:
    """Verify and extract one archive (idempotent); return the extracted data set's directory."""
    arc = _archive(name)
    root = data_dir(data_root)
    target = root / arc.top
    if (target / _DONE_MARKER).is_file():
        return target
    path = verify(name, shared)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{arc.top}-", dir=root))
    try:
        try:
            with tarfile.open(path, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise GmaeError(f"cannot extract {path}: {exc}") from exc
        extracted = tmp / arc.top
        if not extracted.is_dir():
            raise GmaeError(f"{path} does not contain the expected directory {arc.top}/")
        (extracted / _DONE_MARKER).write_text(f"{arc.filename}\n")
        if target.exists():  # a stale, incomplete copy from an older tool: replace it
            shutil.rmtree(target)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dataset_root(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """The extracted data set's directory, extracting it on first use."""
    return prepare(name, data_root)
