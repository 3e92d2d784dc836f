"""Data set specs -> ``torch.utils.data.Dataset`` of ``(image, label)``.

Spec strings:
    ``cifar10``              splits train / test (``val`` = test); offline archive
    ``cifar10:download``     the same, but without an archive download the authors' binary
                             version (MD5-checked, read as raw bytes: nothing is unpickled)
    ``imagenette-128``       splits train / val (``test`` = val); offline archive
    ``imagefolder:/path``    ``/path/{train,val,test}/<class>/<image>``: ``split`` picks the folder
                             (``val`` and ``test`` stand in for each other if only one exists).
                             A folder with class folders and no split folders is one set of
                             images that serves every split (with a warning for val/test).
    ``deadleaves[:k=v,...]`` procedural dead-leaves scenes (``gmae.data.deadleaves``): train is
                             an index-addressable stream, val / test fixed sets
"""

from __future__ import annotations

import os
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from gmae.data.archives import ARCHIVES, data_dir, dataset_root, shared_data_root
from gmae.data.deadleaves import SPLITS as DEADLEAVES_SPLITS
from gmae.data.deadleaves import build_deadleaves, is_deadleaves_spec, parse_spec
from gmae.data.images import SafeImageFolder
from gmae.errors import GmaeError
from gmae.io import atomic_path

IMAGEFOLDER_PREFIX = "imagefolder:"
# Opt-in to downloading CIFAR-10 when the offline archive is absent (never implicit). The authors'
# "binary version" (fixed-length records) rather than the Python one: the latter is pickled, and
# we never unpickle downloaded files. MD5 as published on the CIFAR page.
CIFAR10_DOWNLOAD_SPEC = "cifar10:download"
CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR10_BIN_DIR = "cifar-10-batches-bin"
_CIFAR10_BIN_MEMBERS = {
    "train": tuple(f"{_CIFAR10_BIN_DIR}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{_CIFAR10_BIN_DIR}/test_batch.bin",),
}
_CIFAR10_RECORD = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes of 32 x 32
SPLIT_NAMES = ("train", "val", "test")

# Named specs: the split folders each archive holds, and the names accepted as aliases.
NAMED_SPECS: dict[str, tuple[str, ...]] = {
    "cifar10": ("train", "test"),
    "imagenette-128": ("train", "val"),
}
_ALIASES: dict[str, dict[str, str]] = {
    "cifar10": {"val": "test"},
    "imagenette-128": {"test": "val"},
}


def _spec_help() -> str:
    return ", ".join(
        [
            *NAMED_SPECS,
            CIFAR10_DOWNLOAD_SPEC,
            f"{IMAGEFOLDER_PREFIX}/path/to/root",
            "deadleaves[:k=v,...]",
        ]
    )


def _parse(spec: str) -> tuple[str, Path | None]:
    """``("imagefolder", root)`` or ``(name, None)`` for a named spec."""
    spec = spec.strip()
    if spec.lower().startswith(IMAGEFOLDER_PREFIX):
        path = spec[len(IMAGEFOLDER_PREFIX) :].strip()
        if not path:
            raise GmaeError(f"empty path in {spec!r}: use {IMAGEFOLDER_PREFIX}/path/to/root")
        return "imagefolder", Path(path).expanduser()
    name = spec.lower()
    if name == CIFAR10_DOWNLOAD_SPEC:
        name = "cifar10"
    if name not in NAMED_SPECS:
        raise GmaeError(f"unknown data set spec {spec!r}; valid: {_spec_help()}")
    return name, None


def _named_split(name: str, split: str) -> str:
    split = split.lower()
    split = _ALIASES[name].get(split, split)
    if split not in NAMED_SPECS[name]:
        valid = [*NAMED_SPECS[name], *(f"{a} (= {t})" for a, t in _ALIASES[name].items())]
        raise GmaeError(f"unknown split {split!r} for {name}; valid: {', '.join(valid)}")
    return split


def _split_folders(root: Path) -> list[str]:
    return [s for s in SPLIT_NAMES if (root / s).is_dir()]


def _imagefolder_split(root: Path, split: str) -> Path:
    """The folder holding ``split`` of an image folder data set (see the module docstring)."""
    if split.lower() not in SPLIT_NAMES:
        raise GmaeError(f"unknown split {split!r}; valid: {', '.join(SPLIT_NAMES)}")
    split = split.lower()
    if not root.is_dir():
        raise GmaeError(f"image folder {root} not found")
    present = _split_folders(root)
    if not present:  # flat layout: root/<class>/<image>
        if split != "train":
            warnings.warn(
                f"{root} has no train/val/test folders: split {split!r} uses the same images as "
                "train",
                UserWarning,
                stacklevel=3,
            )
        return root
    if split in present:
        return root / split
    alias = {"val": "test", "test": "val"}.get(split)
    if alias in present:
        return root / alias
    raise GmaeError(f"{root} has no {split}/ folder (found: {', '.join(present)})")


def dataset_splits(spec: str, data_root: str | os.PathLike | None = None) -> list[str]:
    """The canonical split names ``spec`` has (a flat image folder reports just ``train``)."""
    if is_deadleaves_spec(spec):
        parse_spec(spec)  # a bad option is an error here too
        return list(DEADLEAVES_SPLITS)
    kind, root = _parse(spec)
    if kind != "imagefolder":
        return list(NAMED_SPECS[kind])
    if not root.is_dir():
        raise GmaeError(f"image folder {root} not found")
    return _split_folders(root) or ["train"]


def build_dataset(
    spec: str,
    split: str = "train",
    transform: Callable | None = None,
    data_root: str | os.PathLike | None = None,
) -> Dataset:
    """The ``split`` of data set ``spec`` as a Dataset of ``(image, label: int)``.

    With ``transform=None`` images are PIL RGB. The result has ImageFolder's ``classes``,
    ``class_to_idx``, ``samples`` and ``targets``; unreadable images are skipped (see
    ``SafeImageFolder``). ``data_root`` overrides the cache directory for named specs (archives
    are verified and extracted there on first use).
    """
    if is_deadleaves_spec(spec):
        return build_deadleaves(spec, split, transform)
    kind, root = _parse(spec)
    if kind == "imagefolder":
        return SafeImageFolder(_imagefolder_split(root, split), transform=transform)
    split = _named_split(kind, split)
    if kind == "cifar10":
        allow_download = spec.strip().lower() == CIFAR10_DOWNLOAD_SPEC
        return _cifar10(split, transform, data_root, allow_download)
    return SafeImageFolder(dataset_root(kind, data_root) / split, transform=transform)


def _cifar10(split: str, transform: Callable | None, data_root, allow_download: bool) -> Dataset:
    # The offline JPEG archive first; torchvision's download only when asked for and there is no
    # archive at all (a corrupt archive is an error to fix, not a reason to switch data).
    archive = shared_data_root() / ARCHIVES["cifar10"].filename
    try:
        root = dataset_root("cifar10", data_root)
    except GmaeError:
        if archive.exists():
            raise
        if not allow_download:
            raise GmaeError(
                f"CIFAR-10 unavailable: no archive {archive} (set GMAE_SHARED_DATA to the "
                "directory holding cifar10-jpeg.tar.gz, or build it with "
                f"scripts/build_data_archives.py); use the spec {CIFAR10_DOWNLOAD_SPEC} to "
                "download the authors' binary version instead"
            ) from None
        return _cifar10_download(split, transform, data_root, archive)
    return SafeImageFolder(root / split, transform=transform)


def _cifar10_download(split: str, transform, data_root, archive: Path) -> Dataset:
    from torchvision.datasets.utils import check_integrity, download_url

    dest = data_dir(data_root) / "cifar10-binary"
    tar_path = dest / Path(CIFAR10_BINARY_URL).name
    if not check_integrity(str(tar_path), CIFAR10_BINARY_MD5):
        try:
            # Downloaded beside its final name and renamed only once the MD5 matches.
            with atomic_path(tar_path) as tmp:
                download_url(CIFAR10_BINARY_URL, str(tmp.parent), tmp.name, CIFAR10_BINARY_MD5)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            raise GmaeError(
                f"CIFAR-10 unavailable: no archive {archive} (set GMAE_SHARED_DATA to the "
                f"directory holding cifar10-jpeg.tar.gz) and downloading it to {dest} failed: {exc}"
            ) from exc
    data, targets, classes = read_cifar10_binary(tar_path, split)
    ident = f"{dest}/{_CIFAR10_BIN_DIR}/{split}"
    return ArrayImageDataset(data, targets, classes, ident, transform=transform)


def read_cifar10_binary(
    path: str | os.PathLike, split: str
) -> tuple[np.ndarray, list[int], list[str]]:
    """Images [N, 32, 32, 3] uint8, labels and class names of one split of the CIFAR-10 binary
    archive, read from the tar members' bytes (nothing is extracted or unpickled)."""
    path = Path(path)

    def member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
        try:
            info = tar.getmember(name)
        except KeyError:
            raise GmaeError(f"{path}: not the CIFAR-10 binary archive (no {name})") from None
        handle = tar.extractfile(info) if info.isfile() else None
        if handle is None:
            raise GmaeError(f"{path}: {name} is not a regular file")
        return handle.read()

    try:
        with tarfile.open(path, "r:gz") as tar:
            meta = member_bytes(tar, f"{_CIFAR10_BIN_DIR}/batches.meta.txt")
            raw = b"".join(member_bytes(tar, m) for m in _CIFAR10_BIN_MEMBERS[split])
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise GmaeError(f"{path}: unreadable CIFAR-10 archive ({exc})") from exc
    classes = [
        line.strip() for line in meta.decode("ascii", "replace").splitlines() if line.strip()
    ]
    images, labels = decode_cifar10_records(raw, f"{path} ({split})", len(classes))
    return images, labels.tolist(), classes


def decode_cifar10_records(
    raw: bytes, source: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary records -> images [N, 32, 32, 3] uint8 and labels [N] int64.

    A record is one label byte and 3072 pixel bytes: the R, G and B planes of 32 x 32, each in
    row order. Errors name ``source``.
    """
    if not raw or len(raw) % _CIFAR10_RECORD:
        raise GmaeError(f"{source}: {len(raw)} bytes are not whole {_CIFAR10_RECORD}-byte records")
    records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if int(labels.max()) >= num_classes:
        raise GmaeError(f"{source}: label {int(labels.max())} but {num_classes} class names")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


class ArrayImageDataset(Dataset):
    """In-memory uint8 images (N, H, W, 3) with ImageFolder-style attributes.

    Wraps the downloaded CIFAR-10 binary version. ``samples`` holds ``("<source>#<index>", label)``
    identifiers in place of file paths.
    """

    def __init__(
        self,
        data: np.ndarray,
        targets: list[int],
        classes: list[str],
        source: str,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        if data.ndim != 4 or data.shape[-1] != 3 or len(data) != len(targets):
            raise GmaeError(f"{source}: expected (N, H, W, 3) images with N labels")
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(f"{source}#{i}", t) for i, t in enumerate(self.targets)]
        self.imgs = self.samples
        self.root = source
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample: Any = Image.fromarray(np.ascontiguousarray(self.data[index]))
        target: Any = self.targets[index]
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target
