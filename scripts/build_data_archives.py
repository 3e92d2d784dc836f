"""Build the offline data archives gmae uses from their public sources, with checksums.

    python scripts/build_data_archives.py --out DIR --download              # all five
    python scripts/build_data_archives.py cifar10 --out DIR --sources SRC   # from files in SRC
    python scripts/build_data_archives.py weizmann-horse --out DIR \\
        --source weizmann=~/weizmann_horse_db.zip

Each archive is packed in the layout ``gmae.data.archives`` expects (docs/data.md), written
atomically into DIR, and its SHA-256 is added to ``DIR/SHA256SUMS``; point ``GMAE_SHARED_DATA``
at DIR and ``gmae data prepare`` verifies and extracts them. Sources are read straight from their
archives (no extraction; CIFAR-10 from the binary release, so nothing is unpickled) and checked
against their published MD5 where one exists. Packing is deterministic: sorted members, fixed
timestamps and owners, so the same source and Pillow version give the same SHA-256.

Downloads happen only with ``--download``. Rebuilt archives hold the same images and labels as the
shared copies but are not byte-identical to them (different JPEG re-encodings; docs/data.md).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gmae.data.datasets import decode_cifar10_records
from gmae.errors import GmaeError

# Fixed metadata for every member, so that a rebuild is byte-identical.
_MTIME = 1_700_000_000
CIFAR_CLASSES_FALLBACK = (
    "airplane automobile bird cat deer dog frog horse ship truck"  # batches.meta.txt order
).split()


@dataclass(frozen=True)
class Source:
    """A public source file: where it is published and its published MD5 (None: not published)."""

    filename: str
    url: str | None
    md5: str | None


SOURCES = {
    "cifar10": Source(
        "cifar-10-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "imagenette": Source(
        "imagenette2-320.tgz",
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
        "3df6f0d01a2c9592104656642f5e78a3",
    ),
    "bsds500": Source(
        "BSR_bsds500.tgz",
        "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
        None,
    ),
    # No stable public URL: pass the downloaded folder, .zip or .tar(.gz) with --source.
    "weizmann": Source("weizmann_horse_db", None, None),
}


class BuildError(Exception):
    """A one-line reason the build cannot go on."""


# --------------------------------------------------------------------------- reading sources


def iter_files(source: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(path, read)`` for every regular file in a directory, a tar(.gz) or a zip file.

    Paths use ``/`` and are relative to ``source``; ``read()`` returns the bytes. Archives are
    read in place, never extracted, so a hostile member name cannot write anywhere.
    """
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.is_file():
                yield p.relative_to(source).as_posix(), p.read_bytes
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda i=info: zf.read(i))
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            for member in tar:  # streaming: each member is read as it goes by
                if member.isfile():
                    data = tar.extractfile(member).read()
                    yield member.name, (lambda d=data: d)
    elif source.exists():
        raise BuildError(f"{source} is not a directory, tar or zip file")
    else:
        raise BuildError(f"source {source} not found")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- builders
# Each returns {path inside the archive: bytes}; paths start with the archive's top directory.


def build_cifar10(source: Path, quality: int = 75) -> dict[str, bytes]:
    """CIFAR-10 binary release -> ``cifar10/{train,test}/<class>/NNNN.jpg``.

    Each record is one label byte and 3072 pixel bytes (R, G, B planes of 32x32); images are
    numbered per split and class in file order (``data_batch_1..5``, then ``test_batch``).
    """
    batches: dict[str, bytes] = {}
    classes = list(CIFAR_CLASSES_FALLBACK)
    for name, read in iter_files(source):
        base = name.rsplit("/", 1)[-1]
        if re.fullmatch(r"(data_batch_[1-5]|test_batch)\.bin", base):
            batches[base] = read()
        elif base == "batches.meta.txt":
            classes = [c for c in read().decode().split() if c]
    expected = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    missing = [b for b in expected if b not in batches]
    if missing:
        raise BuildError(f"{source}: not the CIFAR-10 binary release (missing {missing[0]})")
    if len(classes) != 10:
        raise BuildError(f"{source}: batches.meta.txt lists {len(classes)} classes, not 10")
    out: dict[str, bytes] = {}
    for split, names in (("train", expected[:5]), ("test", expected[5:])):
        counts = [0] * 10
        for batch in names:
            try:
                images, labels = decode_cifar10_records(batches[batch], batch, len(classes))
            except GmaeError as exc:
                raise BuildError(str(exc)) from None
            for label, pixels in zip(labels.tolist(), images):
                path = f"cifar10/{split}/{classes[label]}/{counts[label]:04d}.jpg"
                out[path] = _jpeg(Image.fromarray(np.ascontiguousarray(pixels)), quality)
                counts[label] += 1
    return out


def build_imagenette(source: Path, size: int = 128, quality: int = 90) -> dict[str, bytes]:
    """imagenette2(-320) -> ``imagenette-128/{train,val}/<wnid>/<name>.jpg``, size x size.

    Centre square crop, then Lanczos resize and JPEG at ``quality``; grayscale photos become RGB.
    """
    pattern = re.compile(r"(?:^|/)(train|val)/(n\d{8})/([^/]+)\.(?:jpe?g|JPE?G)$")
    out: dict[str, bytes] = {}
    for name, read in iter_files(source):
        m = pattern.search(name)
        if not m:
            continue
        split, wnid, stem = m.groups()
        with Image.open(io.BytesIO(read())) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side))
            im = im.resize((size, size), Image.Resampling.LANCZOS)
            out[f"imagenette-{size}/{split}/{wnid}/{stem}.jpg"] = _jpeg(im, quality)
    if not out:
        raise BuildError(f"{source}: no train/<wnid>/*.JPEG images (not an Imagenette release)")
    return out


def build_bsds500(source: Path) -> dict[str, bytes]:
    """BSR_bsds500 -> ``bsds500/{images,groundTruth}/{train,val}/`` (the test split left out)."""
    pattern = re.compile(r"BSDS500/data/(images|groundTruth)/(train|val)/(\d+\.(?:jpg|mat))$")
    out = {
        f"bsds500/{m[1]}/{m[2]}/{m[3]}": read()
        for name, read in iter_files(source)
        if (m := pattern.search(name))
    }
    if not any("/images/" in p for p in out):
        raise BuildError(f"{source}: no BSDS500/data/images/train/*.jpg (not BSR_bsds500)")
    return out


def build_bsds500_bench(source: Path) -> dict[str, bytes]:
    """BSR_bsds500's ``bench/data`` (the benchmark's example inputs and expected outputs)."""
    pattern = re.compile(
        r"bench/data/((?:images|groundTruth|png|ucm2|segs)/[^/]+\.(?:jpg|png|mat)"
        r"|test_\d/eval_[^/]+\.txt)$"
    )
    out = {
        f"bsds500-bench/{m[1]}": read()
        for name, read in iter_files(source)
        if (m := pattern.search(name))
    }
    if not out:
        raise BuildError(f"{source}: no bench/data/ folder (not BSR_bsds500)")
    return out


def build_weizmann(source: Path, first: int = 1, last: int = 128) -> dict[str, bytes]:
    """Weizmann Horse Database -> ``weizmann-horse/{images,masks}/horseNNN.{jpg,png}``.

    Photos come from a ``rgb/`` (or ``horse/``, ``images/``) folder, figure-ground masks from
    ``figure_ground/`` (or ``mask/``, ``masks/``); masks are thresholded to 0 / 255 PNG (JPEG
    masks carry compression noise; 0/1 masks are scaled). Only horses ``first``-``last``.
    """
    pattern = re.compile(
        r"(?:^|/)(rgb|horse|horses|images|figure_ground|mask|masks)/horse(\d{3})\.(jpg|png)$",
        re.IGNORECASE,
    )
    photos: dict[int, tuple[str, bytes]] = {}
    masks: dict[int, bytes] = {}
    for name, read in iter_files(source):
        m = pattern.search(name)
        if not m or not first <= int(m[2]) <= last:
            continue
        folder, number, ext = m[1].lower(), int(m[2]), m[3].lower()
        if folder in ("figure_ground", "mask", "masks"):
            masks[number] = read()
        else:
            photos[number] = (ext, read())
    if not photos:
        raise BuildError(f"{source}: no rgb/horseNNN.jpg photos (not the Weizmann horse set)")
    out: dict[str, bytes] = {}
    for number, (ext, data) in sorted(photos.items()):
        if number not in masks:
            raise BuildError(f"{source}: no figure-ground mask for horse{number:03d}")
        with Image.open(io.BytesIO(data)) as photo, Image.open(io.BytesIO(masks[number])) as mask:
            if photo.size != mask.size:
                raise BuildError(
                    f"horse{number:03d}: mask {mask.size} and photo {photo.size} differ in size"
                )
            values = np.asarray(mask.convert("L"))
            figure = values > (0 if values.max() <= 1 else 127)
            out[f"weizmann-horse/masks/horse{number:03d}.png"] = _png(
                Image.fromarray(figure.astype(np.uint8) * 255)
            )
            # A JPEG photo is kept byte for byte; anything else is encoded once.
            photo_bytes = data if ext == "jpg" else _jpeg(photo, 95)
        out[f"weizmann-horse/images/horse{number:03d}.jpg"] = photo_bytes
    return out


# --------------------------------------------------------------------------- writing archives


def write_archive(files: dict[str, bytes], path: Path) -> str:
    """Pack ``files`` into a deterministic ``.tar.gz`` at ``path`` (atomically); return SHA-256.

    Members are sorted, with their parent directories first, fixed mtime, root owner and modes
    0755 / 0644; the gzip header carries no name or timestamp.
    """
    dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in sorted([*dirs, *files], key=lambda n: n.split("/")):
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = (
                    _MTIME,
                    0,
                    0,
                    "root",
                    "root",
                )
                if name in files:
                    info.size, info.mode = len(files[name]), 0o644
                    tar.addfile(info, io.BytesIO(files[name]))
                else:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def update_checksums(out: Path, digests: dict[str, str]) -> None:
    """Merge ``{archive file name: sha256}`` into ``out/SHA256SUMS`` (atomically, sorted)."""
    sums = out / "SHA256SUMS"
    entries: dict[str, str] = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                entries[parts[1].strip().lstrip("*")] = parts[0]
    entries.update(digests)
    tmp = sums.with_name(".SHA256SUMS.tmp")
    tmp.write_text("".join(f"{h}  {n}\n" for n, h in sorted(entries.items())))
    os.replace(tmp, sums)


# --------------------------------------------------------------------------- the command

# Archive name (as `gmae data prepare NAME`) -> (archive file, source key, builder).
ARCHIVES: dict[str, tuple[str, str, Callable[[Path], dict[str, bytes]]]] = {
    "cifar10": ("cifar10-jpeg.tar.gz", "cifar10", build_cifar10),
    "imagenette-128": ("imagenette-128.tar.gz", "imagenette", build_imagenette),
    "bsds500": ("bsds500-trainval.tar.gz", "bsds500", build_bsds500),
    "weizmann-horse": ("weizmann-horse-dev.tar.gz", "weizmann", build_weizmann),
    "bsds500-bench": ("bsds500-bench-vectors.tar.gz", "bsds500", build_bsds500_bench),
}


def locate_source(
    key: str, sources_dir: Path | None, overrides: dict[str, Path], download: bool
) -> Path:
    """The source for ``key``: ``--source``, else ``--sources/<file>``, else a download."""
    src = SOURCES[key]
    if key in overrides:
        path = overrides[key]
    elif sources_dir is not None and (sources_dir / src.filename).exists():
        path = sources_dir / src.filename
    elif download and src.url is not None:
        dest_dir = sources_dir if sources_dir is not None else Path.cwd()
        dest_dir.mkdir(parents=True, exist_ok=True)
        path = dest_dir / src.filename
        print(f"downloading {src.url} -> {path}", flush=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{src.filename}-", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(src.url) as response:
                while block := response.read(1 << 20):
                    f.write(block)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        how = "--download" if src.url else f"--source {key}=PATH (no stable public URL)"
        where = f" in {sources_dir}" if sources_dir is not None else ""
        raise BuildError(f"no {key} source {src.filename}{where}: pass {how}")
    if src.md5 is not None and path.is_file():
        actual = file_digest(path, "md5")
        if actual != src.md5:
            raise BuildError(f"{path}: MD5 {actual} is not the published {src.md5}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(ARCHIVES)}"
    )
    ap.add_argument("--out", type=Path, required=True, help="directory for archives + SHA256SUMS")
    ap.add_argument(
        "--sources", type=Path, default=None, help="directory holding (or receiving) the sources"
    )
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help=f"a source file or folder by key ({', '.join(SOURCES)})",
    )
    ap.add_argument("--download", action="store_true", help="download missing sources")
    args = ap.parse_args(argv)
    try:
        names = args.names or list(ARCHIVES)
        unknown = [n for n in names if n not in ARCHIVES]
        if unknown:
            raise BuildError(f"unknown archive {unknown[0]!r}; known: {', '.join(ARCHIVES)}")
        overrides = {}
        for item in args.source:
            key, sep, value = item.partition("=")
            if not sep or key not in SOURCES:
                raise BuildError(
                    f"--source {item!r}: expected KEY=PATH, KEY one of {list(SOURCES)}"
                )
            overrides[key] = Path(value).expanduser()
        args.out.mkdir(parents=True, exist_ok=True)
        for name in dict.fromkeys(names):
            filename, key, build = ARCHIVES[name]
            source = locate_source(key, args.sources, overrides, args.download)
            files = build(source)
            digest = write_archive(files, args.out / filename)
            update_checksums(args.out, {filename: digest})
            print(
                f"{name}: {len(files)} files -> {args.out / filename} sha256 {digest}", flush=True
            )
    except (BuildError, OSError) as exc:
        print(f"build_data_archives: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
