"""scripts/build_data_archives.py: fake public sources are packed into archives that
`gmae data prepare` verifies and extracts and the data set APIs then read (no download)."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from gmae.cli import main as gmae_main
from gmae.data import build_dataset
from gmae.data.archives import read_checksums
from gmae.data.segmentation import bsds500_pairs, load_bsds_ground_truth, weizmann_horses

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_data_archives.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_data_archives", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _cifar_record(label: int, colour: tuple[int, int, int]) -> bytes:
    planes = np.stack([np.full((32, 32), c, np.uint8) for c in colour])  # R, G, B planes
    return bytes([label]) + planes.tobytes()


@pytest.fixture
def shared(tmp_path, monkeypatch) -> Path:
    """The output directory, used as GMAE_SHARED_DATA, with an empty cache as GMAE_DATA_DIR."""
    out = tmp_path / "archives"
    monkeypatch.setenv("GMAE_SHARED_DATA", str(out))
    monkeypatch.setenv("GMAE_DATA_DIR", str(tmp_path / "cache"))
    return out


def test_cifar10_binary_release_packs_to_the_archive_layout(build, shared, tmp_path, capsys):
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
    batches = {
        f"cifar-10-batches-bin/data_batch_{i}.bin": _cifar_record(3, (200, 10, 10))
        + _cifar_record(i, (10, 200, 10))
        for i in range(1, 6)
    }
    batches["cifar-10-batches-bin/test_batch.bin"] = _cifar_record(9, (10, 10, 200))
    batches["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(classes) + "\n\n").encode()
    source = _tar(tmp_path / "cifar-10-binary.tar.gz", batches)

    # The fake's MD5 is not the published one: refused with one line naming both.
    assert build.main(["cifar10", "--out", str(shared), "--source", f"cifar10={source}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not the published c32a1d4ab5d03f1284b67883e8d87530" in err and "\n" not in err

    files = build.build_cifar10(source)
    digest = build.write_archive(files, shared / "cifar10-jpeg.tar.gz")
    build.update_checksums(shared, {"cifar10-jpeg.tar.gz": digest})
    assert gmae_main(["data", "prepare", "cifar10"]) == 0

    train = build_dataset("cifar10", "train")
    # Class folders exist for the labels present (ImageFolder lists only those).
    assert train.classes == ["automobile", "bird", "cat", "deer", "dog"]
    counts = {c: train.targets.count(train.class_to_idx[c]) for c in train.classes}
    # 5 cats (one per batch) and one image of each class 1-5, numbered per class in file order.
    assert counts == {"automobile": 1, "bird": 1, "cat": 6, "deer": 1, "dog": 1}
    cats = [p for p, t in train.samples if t == train.class_to_idx["cat"]]
    assert [Path(p).name for p in cats] == [f"{i:04d}.jpg" for i in range(6)]
    bird = np.asarray(train[train.targets.index(train.class_to_idx["bird"])][0], dtype=int)
    assert bird.shape == (32, 32, 3)  # the data_batch_2 record: green (planes are R, G, B)
    assert abs(bird[..., 1].mean() - 200) < 8 and bird[..., 0].mean() < 25
    test = build_dataset("cifar10", "test")
    assert len(test) == 1 and test.classes[test.targets[0]] == "truck"


def test_imagenette_is_centre_cropped_and_resized(build, shared, tmp_path):
    src = tmp_path / "imagenette2-320"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for wnid in ("n01440764", "n02102040"):
            (src / split / wnid).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
                pixels[:, :10] = pixels[:, 50:] = 0  # left/right margins the crop removes
                (src / split / wnid / f"{wnid}_{i}.JPEG").write_bytes(_jpeg(pixels))
    (src / "noisy_imagenette.csv").write_text("path,label\n")  # ignored

    # An extracted folder has no archive to check against the published MD5: used as it is.
    args = ["imagenette-128", "--out", str(shared), "--source", f"imagenette={src}"]
    assert build.main(args) == 0
    files = build.build_imagenette(src)
    assert sorted(files)[0] == "imagenette-128/train/n01440764/n01440764_0.jpg"
    train, val = build_dataset("imagenette-128", "train"), build_dataset("imagenette-128", "val")
    assert (len(train), len(val)) == (6, 2) and train.classes == ["n01440764", "n02102040"]
    image = np.asarray(train[0][0])
    assert image.shape == (128, 128, 3)
    assert image[:, :4].mean() > 20  # the black margins were cropped away


def test_bsds500_and_bench_from_one_release(build, shared, tmp_path):
    seg = np.array([[1, 1, 2], [1, 2, 2]], np.uint16)
    cell = np.empty((1, 2), dtype=object)
    for j in range(2):
        cell[0, j] = {"Segmentation": seg, "Boundaries": seg != 1}
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"groundTruth": cell})
    photo = _jpeg(np.zeros((2, 3, 3), np.uint8))
    base = "BSR/BSDS500/data"
    files = {
        f"{base}/images/train/2092.jpg": photo,
        f"{base}/images/train/Thumbs.db": b"junk",
        f"{base}/groundTruth/train/2092.mat": mat.getvalue(),
        f"{base}/images/val/3096.jpg": photo,
        f"{base}/groundTruth/val/3096.mat": mat.getvalue(),
        f"{base}/images/test/100007.jpg": photo,  # the test split stays out
        f"{base}/groundTruth/test/100007.mat": mat.getvalue(),
        "BSR/bench/data/images/2018.jpg": photo,
        "BSR/bench/data/png/2018.png": b"png",
        "BSR/bench/data/test_2/eval_bdry.txt": b"0.5 0.6 0.7 0.65\n",
        "BSR/bench/benchmarks/boundaryBench.m": b"% code, not data",
    }
    _tar(tmp_path / "BSR_bsds500.tgz", files)
    args = ["bsds500", "bsds500-bench", "--out", str(shared), "--sources", str(tmp_path)]
    assert build.main(args) == 0  # BSDS500 has no published checksum: built from --sources

    pairs = bsds500_pairs("train")
    assert [(i.name, g.name) for i, g in pairs] == [("2092.jpg", "2092.mat")]
    annotations = load_bsds_ground_truth(pairs[0][1])
    assert len(annotations) == 2 and (annotations[0]["segmentation"] == seg).all()
    assert [i.name for i, _ in bsds500_pairs("val")] == ["3096.jpg"]
    with tarfile.open(shared / "bsds500-trainval.tar.gz") as tar:
        names = tar.getnames()
    assert not any("test" in n or "Thumbs" in n for n in names)
    assert gmae_main(["data", "prepare", "bsds500-bench"]) == 0
    with tarfile.open(shared / "bsds500-bench-vectors.tar.gz") as tar:
        bench = sorted(n for n in tar.getnames() if "." in n)
    assert bench == [
        "bsds500-bench/images/2018.jpg",
        "bsds500-bench/png/2018.png",
        "bsds500-bench/test_2/eval_bdry.txt",
    ]
    assert set(read_checksums(shared)) == {
        "bsds500-trainval.tar.gz",
        "bsds500-bench-vectors.tar.gz",
    }


def test_weizmann_masks_thresholded_and_build_deterministic(build, shared, tmp_path, capsys):
    rng = np.random.default_rng(1)
    source = tmp_path / "weizmann_horse_db.zip"
    with zipfile.ZipFile(source, "w") as zf:
        for n in (1, 2, 129):  # 129 is outside the dev set
            zf.writestr(
                f"weizmann_horse_db/rgb/horse{n:03d}.jpg",
                _jpeg(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)),
            )
            mask = np.zeros((24, 32), np.uint8)
            mask[6:18, 8:24] = 255
            # JPEG masks carry ringing noise around the figure: thresholded to exactly 0 / 255.
            zf.writestr(
                f"weizmann_horse_db/figure_ground/horse{n:03d}.jpg",
                _jpeg(np.stack([mask] * 3, -1), 60),
            )
    args = ["weizmann-horse", "--out", str(shared), "--source", f"weizmann={source}"]
    assert build.main(args) == 0
    first = read_checksums(shared)["weizmann-horse-dev.tar.gz"]

    pairs = weizmann_horses()
    assert [(i.name, m.name) for i, m in pairs] == [
        ("horse001.jpg", "horse001.png"),
        ("horse002.jpg", "horse002.png"),
    ]
    mask = np.asarray(Image.open(pairs[0][1]))
    assert (
        set(np.unique(mask)) == {0, 255}
        and (mask[6:18, 8:24] == 255).all()
        and mask.sum() == 255 * 12 * 16
    )
    with zipfile.ZipFile(source) as zf:  # photos are kept byte for byte
        assert pairs[0][0].read_bytes() == zf.read("weizmann_horse_db/rgb/horse001.jpg")

    assert build.main(args) == 0  # same source -> same archive bytes
    assert read_checksums(shared)["weizmann-horse-dev.tar.gz"] == first

    assert build.main(["weizmann-horse", "--out", str(shared)]) == 1
    err = capsys.readouterr().err
    assert "pass --source weizmann=PATH" in err


def test_missing_source_without_download_names_the_flag(build, tmp_path, capsys):
    assert build.main(["cifar10", "--out", str(tmp_path), "--sources", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("pass --download") and "cifar-10-binary.tar.gz" in err
    assert not (tmp_path / "SHA256SUMS").exists()


def test_usage_names_real_source_keys(build):
    import re

    keys = re.findall(r"--source ([\w-]+)=", build.__doc__)
    assert keys and set(keys) <= set(build.SOURCES), keys
