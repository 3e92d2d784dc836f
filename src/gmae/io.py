"""Atomic file output: write to a temporary file in the target's directory, then rename.

A crash or Ctrl-C mid-write never leaves a half-written checkpoint, JSON or picture behind; the
previous file (if any) stays intact until the new one is complete. A ``kill -9`` mid-write can
leave the temporary file itself (``.NAME.gmae-PID-XXXXXXXX.tmp``); its name records the writing
process, and the next write of the same file (and ``remove_stale_temps`` on a run directory)
deletes it once that process is gone. Temporary files of other programs are never touched.

Also here: checks of output paths (``--out``, ``--json``) made before any long work, JSON
that never contains bare ``NaN`` / ``Infinity`` (they become ``null``), and the reader of a
run's ``metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gmae.errors import GmaeError

_UMASK = os.umask(0)
os.umask(_UMASK)

_TEMP_TAG = ".gmae-"
# .NAME.gmae-PID-XXXXXXXX.tmp (mkstemp's random part is 8 characters of [a-z0-9_])
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.gmae-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale_temp(path: Path, name: str | None = None) -> bool:
    m = _TEMP_RE.match(path.name)
    if m is None or (name is not None and m["name"] != name):
        return False
    return path.is_file() and not path.is_symlink() and not _pid_alive(int(m["pid"]))


def remove_stale_temps(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files ``atomic_path`` left in ``directory`` when its process was
    killed (only ours: ``.NAME.gmae-PID-XXXXXXXX.tmp`` of a process that no longer exists).
    ``name``: only those of that target file. Returns what was removed."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in entries:
        if _is_stale_temp(path, name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}{_TEMP_TAG}{os.getpid()}-", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp (and writers that recreate the file) leave 0600: give the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN / Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes non-finite floats as ``null`` (always valid JSON)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file (a run's ``metrics.jsonl``), blank lines skipped; a
    missing file or a line that is not JSON is a ``GmaeError`` naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"metrics file {path} not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise GmaeError(f"{path}:{n}: not JSON ({exc.msg})") from exc
    return rows


# --- output paths, checked before any long work -----------------------------------------------


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return Path(".")


def _check_writable_dir(directory: Path, flag: str, target: Path) -> None:
    if not directory.is_dir():
        raise GmaeError(f"{flag} {target}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise GmaeError(f"{flag} {target}: cannot write in {directory} (permission denied)")
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            raise GmaeError(f"{flag} {target}: {directory} is on a read-only file system")
    except OSError:  # statvfs unsupported: the write itself will tell
        pass


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """An output directory must be a directory (or creatable) and writable. Creates nothing."""
    path = Path(path).expanduser()
    existing = _nearest_existing(path)
    if existing == path and not path.is_dir():
        raise GmaeError(f"{flag} {path} exists and is not a directory")
    _check_writable_dir(existing, flag, path)
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--json") -> Path:
    """An output file must not be a directory, and its directory must be writable (or
    creatable). Creates nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise GmaeError(f"{flag} {path} is a directory, expected a file name")
    existing = _nearest_existing(path.parent)
    if existing == path.parent and not existing.is_dir():
        raise GmaeError(f"{flag} {path}: {existing} is not a directory")
    _check_writable_dir(existing, flag, path)
    return path


def check_outputs(args: Any) -> None:
    """Check a parsed command line's ``--out`` / ``--json`` before the command runs.

    ``--json`` is always a file; ``--out`` is a directory unless the command sets
    ``out_kind="file"`` in its parser defaults.
    """
    json_path = getattr(args, "json", None)
    if json_path is not None:
        check_output_file(json_path, "--json")
    out = getattr(args, "out", None)
    if out is not None:
        kind = getattr(args, "out_kind", "dir")
        if kind == "file-or-dir":  # gmae export timm: a .safetensors name is a file
            kind = "file" if Path(out).suffix == ".safetensors" else "dir"
        if kind == "file":
            check_output_file(out, "--out")
        else:
            check_output_dir(out, "--out")


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a failed write, naming a full disk or a file-size limit."""
    err = exc if isinstance(exc, OSError) else None
    cause = exc
    while err is None and cause is not None:
        cause = cause.__cause__ or cause.__context__
        if isinstance(cause, OSError):
            err = cause
    if err is not None and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if err is not None and err.errno == errno.EFBIG:
        return "file too large (file-size limit)"
    if err is not None and err.strerror:
        return err.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
