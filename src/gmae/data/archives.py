"""The offline data archives: locate, verify (SHA-256) and extract them into a cache directory.

Archives live in ``../shared/data`` next to the repository (override: ``GMAE_SHARED_DATA``) and
are extracted into ``~/.cache/gmae`` (override: ``GMAE_DATA_DIR`` or ``--data-dir``). Extraction
is atomic: the archive is unpacked into a temporary directory beside the target and renamed into
place, so an interrupted or failed extraction never leaves a partial data set behind. A per-data-set
lock file serialises concurrent ``prepare`` calls (parallel test workers, several DataLoaders), so
one process extracts and the others wait for it and reuse the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmae.errors import GmaeError


@dataclass(frozen=True)
class Archive:
    """One offline archive in the shared data directory."""

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
_PARTIAL_MARKER = ".gmae-partial"  # written first inside our temporary extraction directory


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
    """Map archive file name -> expected SHA-256 hex digest, from ``shared/SHA256SUMS``."""
    sums = shared / "SHA256SUMS"
    if not sums.is_file():
        raise GmaeError(
            f"no SHA256SUMS in {shared}: set GMAE_SHARED_DATA to the directory holding the archives"
        )
    out = {}
    for n, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise GmaeError(f"malformed line {n} in {sums}: {line.strip()!r}")
        out[parts[1].strip().lstrip("*")] = parts[0].lower()
    return out


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
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


def is_prepared(name: str, data_root: str | os.PathLike | None = None) -> bool:
    """Whether ``name`` is fully extracted in the cache (no checksum work, no extraction)."""
    arc = _archive(name)
    return (data_dir(data_root) / arc.top / _DONE_MARKER).is_file()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _ReadProgress:
    """A read-only file wrapper that advances a tqdm bar by the bytes read (the compressed size)."""

    def __init__(self, f: Any, bar: Any) -> None:
        self._f, self._bar = f, bar

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._bar.update(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        pos = self._f.seek(offset, whence)
        self._bar.n = pos
        return pos

    def tell(self) -> int:
        return self._f.tell()


def _extract(path: Path, dest: Path, desc: str, progress: bool | None) -> None:
    from tqdm import tqdm  # here, not at the top: keeps `gmae --help` fast

    # disable=None lets tqdm show the bar only on a terminal.
    with (
        open(path, "rb") as raw,
        tqdm(
            total=path.stat().st_size,
            desc=desc,
            unit="B",
            unit_scale=True,
            leave=False,
            disable=None if progress is None else not progress,
        ) as bar,
        tarfile.open(fileobj=_ReadProgress(raw, bar), mode="r:gz") as tar,
    ):
        tar.extractall(dest, filter="data")
        # tarfile stops at the end-of-archive blocks, before gzip's CRC and length trailer: read
        # to the end so that a cut-off or corrupted tail fails too.
        while tar.fileobj.read(1 << 20):
            pass


def prepare(
    name: str,
    data_root: str | os.PathLike | None = None,
    shared: Path | None = None,
    progress: bool | None = None,
) -> Path:
    """Verify and extract one archive (idempotent); return the extracted data set's directory.

    ``progress``: show a tqdm bar while extracting (``None``: only on a terminal).
    """
    arc = _archive(name)
    root = data_dir(data_root)
    target = root / arc.top
    if (target / _DONE_MARKER).is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GmaeError(f"cannot create data directory {root}: {exc.strerror}") from exc
    with _lock(root / f".{arc.top}.lock"):
        if (target / _DONE_MARKER).is_file():  # another process finished while we waited
            return target
        if target.exists() or target.is_symlink():
            # Not ours (or not complete): never delete what gmae did not write.
            raise GmaeError(
                f"{target} exists but is not a complete gmae extraction (no {_DONE_MARKER}): "
                f"move it away or delete it, then run gmae data prepare {name} again"
            )
        _remove_stale_extractions(root, arc.top)
        path = verify(name, shared)
        tmp = Path(tempfile.mkdtemp(prefix=f".{arc.top}-", dir=root))
        try:
            (tmp / _PARTIAL_MARKER).write_text(f"{os.getpid()}\n")
            try:
                _extract(path, tmp, f"extract {name}", progress)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise GmaeError(f"cannot extract {path}: {exc}") from exc
            extracted = tmp / arc.top
            if not extracted.is_dir():
                raise GmaeError(f"{path} does not contain the expected directory {arc.top}/")
            (extracted / _DONE_MARKER).write_text(f"{arc.filename}\n")
            os.replace(extracted, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_extractions(root: Path, top: str) -> None:
    """Delete temporary extraction directories that a killed ``prepare`` left behind.

    Only gmae's own: ``.TOP-XXXXXXXX`` directories (``mkdtemp``'s name) holding the marker we
    write first. Called under the data set's lock, so no live ``prepare`` is using them.
    """
    pattern = re.compile(rf"^\.{re.escape(top)}-[a-z0-9_]{{8}}$")
    for entry in root.iterdir():
        if (
            pattern.match(entry.name)
            and entry.is_dir()
            and not entry.is_symlink()
            and (entry / _PARTIAL_MARKER).is_file()
        ):
            shutil.rmtree(entry, ignore_errors=True)


def dataset_root(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """The extracted data set's directory, extracting it on first use."""
    return prepare(name, data_root)
