"""gmae.data: archives (verify, atomic idempotent extraction), dataset specs, bad-image skipping,
transforms, BSDS500 / horse helpers, and the `gmae data` commands."""

from __future__ import annotations

import hashlib
import threading
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gmae.data
from gmae.cli import main
from gmae.data import (
    ARCHIVES,
    SafeImageFolder,
    UnreadableImageWarning,
    bsds500_pairs,
    build_dataset,
    eval_transform,
    load_bsds_ground_truth,
    load_image,
    prepare,
    pretrain_transform,
    verify,
    weizmann_horses,
)
from gmae.data import archives as archives_mod
from gmae.errors import GmaeError

SMALL = "weizmann-horse"  # 3.3 MB: the archive used for extraction tests


def _leftovers(root: Path) -> list[str]:
    """Anything in a data dir besides lock files: partial or temporary extraction directories."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gmae: error: ")
    return err[0]


# --- archives ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHIVES))
def test_archive_checksums(name, shared_data):
    assert verify(name, shared_data) == shared_data / ARCHIVES[name].filename


@pytest.mark.parametrize("name", ["weizmann-horse", "bsds500-bench"])
def test_prepare_extracts_into_data_dir(name, tmp_data_dir, capsys):
    assert main(["data", "prepare", name]) == 0
    target = tmp_data_dir / ARCHIVES[name].top
    assert f"{name}: extracted to {target}" in capsys.readouterr().out
    assert (target / ".gmae-complete").is_file()
    assert _leftovers(tmp_data_dir) == [ARCHIVES[name].top]
    if name == "weizmann-horse":
        assert len(list((target / "images").glob("*.jpg"))) == 128
        assert len(list((target / "masks").glob("*.png"))) == 128
    else:
        assert len(list((target / "images").glob("*.jpg"))) == 5
        assert (target / "test_2" / "eval_bdry.txt").is_file()


def test_prepare_is_idempotent(tmp_data_dir, monkeypatch, capsys):
    target = prepare(SMALL)
    marker = target / ".gmae-complete"
    stamp = (marker.stat().st_mtime_ns, target.stat().st_ino)

    def boom(*args, **kwargs):
        raise AssertionError("a prepared data set must not be verified or extracted again")

    monkeypatch.setattr(archives_mod, "verify", boom)
    monkeypatch.setattr(archives_mod, "_extract", boom)
    assert prepare(SMALL) == target
    assert main(["data", "prepare", SMALL]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert (marker.stat().st_mtime_ns, target.stat().st_ino) == stamp


def test_prepare_never_deletes_a_directory_it_did_not_write(tmp_data_dir, capsys):
    mine = tmp_data_dir / ARCHIVES[SMALL].top
    mine.mkdir(parents=True)
    (mine / "half-written.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(GmaeError, match="exists but is not a complete gmae extraction"):
        prepare(SMALL)
    assert main(["data", "prepare", SMALL, "--data-dir", str(tmp_data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(mine) in err
    assert (mine / "half-written.jpg").read_bytes() == b"\xff\xd8"  # untouched
    assert not (mine / ".gmae-complete").exists() and _leftovers(tmp_data_dir) == [mine.name]
    (mine / "half-written.jpg").unlink()
    mine.rmdir()  # the user moves it away: prepare works again
    assert (prepare(SMALL) / ".gmae-complete").is_file()


def test_prepare_removes_its_own_stale_temp_dirs_only(tmp_data_dir):
    top = ARCHIVES[SMALL].top
    tmp_data_dir.mkdir(parents=True)
    ours = tmp_data_dir / f".{top}-abcd1234"  # what a killed prepare leaves
    (ours / top).mkdir(parents=True)
    (ours / ".gmae-partial").write_text("123\n")
    theirs = tmp_data_dir / f".{top}-wxyz6789"  # same name pattern, no marker: not ours
    theirs.mkdir()
    (theirs / "keep.txt").write_text("keep")
    prepare(SMALL)
    assert not ours.exists()
    assert (theirs / "keep.txt").read_text() == "keep"


def test_concurrent_prepare_extracts_once(tmp_data_dir, monkeypatch):
    calls = []
    real = archives_mod._extract
    monkeypatch.setattr(archives_mod, "_extract", lambda *a: (calls.append(1), real(*a)))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(prepare("bsds500-bench"))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(calls) == 1


def _truncated_shared(shared_data: Path, tmp_path: Path, listed_digest: str | None) -> Path:
    """A shared dir with the first half of the small archive; SHA256SUMS lists ``listed_digest``
    (None: the digest of the truncated file itself, so only extraction can notice)."""
    fname = ARCHIVES[SMALL].filename
    shared = tmp_path / "shared"
    shared.mkdir()
    data = (shared_data / fname).read_bytes()
    (shared / fname).write_bytes(data[: len(data) // 2])
    digest = listed_digest or hashlib.sha256(data[: len(data) // 2]).hexdigest()
    (shared / "SHA256SUMS").write_text(f"{digest}  {fname}\n")
    return shared


def test_truncated_archive_fails_checksum(shared_data, tmp_path, tmp_data_dir, monkeypatch):
    real = archives_mod.read_checksums(shared_data)[ARCHIVES[SMALL].filename]
    monkeypatch.setenv("GMAE_SHARED_DATA", str(_truncated_shared(shared_data, tmp_path, real)))
    with pytest.raises(GmaeError, match="checksum mismatch.*truncated or corrupt"):
        prepare(SMALL)
    assert _leftovers(tmp_data_dir) == []


@pytest.mark.parametrize("cut", ["half", "trailer"])
def test_truncated_archive_fails_extraction(cut, shared_data, tmp_path, tmp_data_dir, monkeypatch):
    shared = _truncated_shared(shared_data, tmp_path, None)
    if cut == "trailer":  # only gzip's CRC/length trailer is missing: tar itself reads fine
        fname = ARCHIVES[SMALL].filename
        data = (shared_data / fname).read_bytes()[:-8]
        (shared / fname).write_bytes(data)
        (shared / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  {fname}\n")
    monkeypatch.setenv("GMAE_SHARED_DATA", str(shared))
    with pytest.raises(GmaeError, match="cannot extract"):
        prepare(SMALL)
    assert _leftovers(tmp_data_dir) == []


def test_missing_archive_and_sums(tmp_path, tmp_data_dir, monkeypatch):
    monkeypatch.setenv("GMAE_SHARED_DATA", str(tmp_path))
    with pytest.raises(GmaeError, match="no SHA256SUMS"):
        archives_mod.read_checksums(tmp_path)
    with pytest.raises(GmaeError, match="not found.*GMAE_SHARED_DATA"):
        prepare(SMALL)


# --- real data: counts and contents -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "splits"),
    [
        ("cifar10", {"train": 50_000, "test": 10_000, "val": 10_000}),
        ("imagenette-128", {"train": 9_469, "val": 3_925, "test": 3_925}),
    ],
)
def test_real_dataset_counts(spec, splits, monkeypatch):
    # Counting is a directory scan: nothing may be decoded.
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded while counting"))
    for split, n in splits.items():
        ds = build_dataset(spec, split)
        assert len(ds) == len(ds.samples) == len(ds.targets) == n
        assert len(ds.classes) == 10
        assert sorted(set(ds.targets)) == list(range(10))


@pytest.mark.slow
def test_real_items_are_rgb():
    img, label = build_dataset("cifar10", "test")[0]
    assert img.mode == "RGB" and img.size == (32, 32) and label == 0
    ds = build_dataset("imagenette-128", "val", transform=eval_transform(64))
    x, label = ds[len(ds) - 1]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and label == 9
    assert ds.classes[0] == "n01440764"


@pytest.mark.slow
def test_info_cli_on_cifar10(capsys, monkeypatch):
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded while counting"))
    assert main(["data", "info", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "airplane" in out and "truck" in out
    total = next(line for line in out.splitlines() if line.startswith("total")).split()
    assert total == ["total", "50000", "10000"]


@pytest.mark.slow
def test_bsds500_pairs_and_ground_truth():
    for split, n in (("train", 200), ("val", 100)):
        pairs = bsds500_pairs(split)
        assert len(pairs) == n
        for img_path, gt_path in pairs:
            assert img_path.stem == gt_path.stem
            with Image.open(img_path) as img:
                w, h = img.size
            assert (h, w) in {(321, 481), (481, 321)}
            gts = load_bsds_ground_truth(gt_path)
            assert 4 <= len(gts) <= 9
            for gt in gts:
                assert gt["segmentation"].dtype == np.uint16
                assert gt["boundaries"].dtype == np.bool_
                assert gt["segmentation"].shape == gt["boundaries"].shape == (h, w)
                assert gt["segmentation"].min() >= 1 and gt["boundaries"].any()
    with pytest.raises(GmaeError, match="test split is not in the offline archive"):
        bsds500_pairs("test")


def test_load_bsds_ground_truth_errors(tmp_path):
    with pytest.raises(GmaeError, match="not found"):
        load_bsds_ground_truth(tmp_path / "nope.mat")
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(GmaeError, match="cannot read BSDS ground truth"):
        load_bsds_ground_truth(bad)


def test_weizmann_horses():
    pairs = weizmann_horses()
    assert len(pairs) == 128
    for img_path, mask_path in pairs:
        assert img_path.stem == mask_path.stem
        with Image.open(img_path) as img, Image.open(mask_path) as mask:
            assert mask.size == img.size
            assert set(np.unique(np.asarray(mask))) <= {0, 255}


# --- image folders, corrupt images ------------------------------------------------------------


def _png(path: Path, color=(255, 0, 0), size=(16, 16), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


@pytest.fixture
def corrupt_folder(tmp_path) -> Path:
    """a/{0.png ok, 1.jpg truncated, 2.jpg ok}, b/{0.jpg not an image, 1.png ok} + ignored files."""
    root = tmp_path / "imgs"
    _png(root / "a" / "0.png", (255, 0, 0))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "a" / "full.jpg", quality=95)
    data = (root / "a" / "full.jpg").read_bytes()
    (root / "a" / "full.jpg").unlink()
    (root / "a" / "1.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (16, 16), (0, 255, 0)).save(root / "a" / "2.jpg")
    (root / "b").mkdir()
    (root / "b" / "0.jpg").write_text("this is not a JPEG")
    _png(root / "b" / "1.png", 128, mode="L")  # grayscale: must come back as RGB
    (root / "b" / ".0.jpg").write_bytes(b"macOS resource fork")  # hidden: ignored
    (root / "b" / "notes.txt").write_text("not an image extension: ignored")
    (root / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    return root


def test_corrupt_images_are_skipped_with_one_warning(corrupt_folder):
    ds = build_dataset(f"imagefolder:{corrupt_folder}")
    assert ds.classes == ["a", "b"] and ds.targets == [0, 0, 0, 1, 1]
    assert [Path(p).name for p, _ in ds.samples] == ["0.png", "1.jpg", "2.jpg", "0.jpg", "1.png"]
    with pytest.warns(UnreadableImageWarning) as record:
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    assert len(record) == 1
    assert "skipped 1 unreadable image(s) so far" in str(record[0].message)
    assert all(isinstance(img, Image.Image) and img.mode == "RGB" for img, _ in items)
    # Substitution is the next readable sample, with its label.
    assert np.array_equal(np.asarray(items[1][0]), np.asarray(items[2][0]))
    assert items[1][1] == 0 and items[3][1] == 1
    assert np.array_equal(np.asarray(items[3][0]), np.asarray(items[4][0]))
    assert [Path(p).name for p, _ in ds.skipped] == ["1.jpg", "0.jpg"]


def test_corrupt_images_in_dataloader_workers(corrupt_folder):
    ds = build_dataset(f"imagefolder:{corrupt_folder}", transform=eval_transform(16))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        batches = list(loader)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (5, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1]
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_all_images_unreadable(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_text("nope")
    ds = SafeImageFolder(tmp_path)
    with pytest.raises(GmaeError, match="no readable images"):
        ds[0]


def test_load_image(tmp_path, corrupt_folder):
    img = load_image(corrupt_folder / "b" / "1.png")
    assert img.mode == "RGB" and img.size == (16, 16)
    with pytest.raises(GmaeError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(GmaeError, match="cannot read image .*1.jpg"):
        load_image(corrupt_folder / "a" / "1.jpg")
    with pytest.raises(GmaeError, match="cannot read image .*0.jpg"):
        load_image(corrupt_folder / "b" / "0.jpg")


def test_imagefolder_split_layout(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _png(tmp_path / split / "cat" / f"{i}.png")
            _png(tmp_path / split / "dog" / f"{i}.png")
    spec = f"imagefolder:{tmp_path}"
    assert len(build_dataset(spec, "train")) == 6
    assert Path(build_dataset(spec, "val").root) == tmp_path / "val"
    assert Path(build_dataset(spec, "test").root) == tmp_path / "val"  # alias
    assert gmae.data.dataset_splits(spec) == ["train", "val"]
    with pytest.raises(GmaeError, match="unknown split 'dev'; valid: train, val, test"):
        build_dataset(spec, "dev")
    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(GmaeError, match="has no val/ folder \\(found: train\\)"):
        build_dataset(spec, "val")


def test_imagefolder_flat_layout(tmp_path):
    _png(tmp_path / "cat" / "0.png")
    _png(tmp_path / "dog" / "0.png")
    spec = f"imagefolder:{tmp_path}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_dataset(spec, "train")) == 2
    with pytest.warns(UserWarning, match="uses the same images as train"):
        assert Path(build_dataset(spec, "val").root) == tmp_path


def test_named_spec_errors():
    with pytest.raises(GmaeError, match="unknown data set spec 'cifar100'; valid: cifar10, "):
        build_dataset("cifar100")
    with pytest.raises(GmaeError, match="unknown split 'dev' for cifar10; valid: train, test"):
        build_dataset("cifar10", "dev")
    with pytest.raises(GmaeError, match="empty path"):
        build_dataset("imagefolder:")


# --- CIFAR-10 without the archive -------------------------------------------------------------


def _fake_cifar10_binary(path, n_train=4, n_test=2, classes=("airplane", "automobile"), n_labels=2):
    """A tar.gz with the binary version's layout: label byte + R, G, B planes per record."""
    import io
    import tarfile

    rng = np.random.default_rng(0)

    def records(n, first_label):
        out = bytearray()
        for i in range(n):
            out.append((first_label + i) % n_labels)
            out += rng.integers(0, 256, 3 * 32 * 32, dtype=np.uint8).tobytes()
        return bytes(out)

    members = {"cifar-10-batches-bin/batches.meta.txt": "\n".join(classes).encode() + b"\n\n"}
    for i in range(1, 6):
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = records(n_train if i == 1 else 0, 0)
    members["cifar-10-batches-bin/test_batch.bin"] = records(n_test, 0)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _serve_cifar10(monkeypatch, fake):
    """Replace the network: download_url copies ``fake`` (MD5 as published for it)."""
    import hashlib
    import shutil

    import torchvision.datasets.utils as tv_utils

    import gmae.data.datasets as datasets

    calls = []

    def download_url(url, root, filename=None, md5=None):
        calls.append(url)
        target = Path(root) / filename
        shutil.copyfile(fake, target)
        if not tv_utils.check_integrity(str(target), md5):
            raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tv_utils, "download_url", download_url)
    monkeypatch.setattr(datasets, "CIFAR10_BINARY_MD5", hashlib.md5(fake.read_bytes()).hexdigest())
    return calls


def test_cifar10_download_fallback(tmp_path, tmp_data_dir, monkeypatch):
    monkeypatch.setenv("GMAE_SHARED_DATA", str(tmp_path / "no-archives"))
    calls = _serve_cifar10(monkeypatch, _fake_cifar10_binary(tmp_path / "fake.tar.gz"))
    # Never a silent download: without the opt-in spec, one line naming it.
    with pytest.raises(GmaeError, match="no archive .* use the spec cifar10:download") as err:
        build_dataset("cifar10", "val")
    assert "\n" not in str(err.value) and not calls
    assert not (tmp_data_dir / "cifar10-binary").exists()
    assert gmae.data.dataset_splits("cifar10:download") == ["train", "test"]
    ds = build_dataset("cifar10:download", "val")
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    assert len(ds) == 2 and ds.classes == ["airplane", "automobile"] and ds.targets == [0, 1]
    assert ds.samples[1][0].endswith("cifar-10-batches-bin/test#1") and ds.samples[1][1] == 1
    img, label = ds[1]
    assert img.mode == "RGB" and img.size == (32, 32) and label == 1
    # The planes are R, G, B of 32 x 32 in row order: pixel (row 1, col 2) of image 1's red plane.
    import tarfile

    with tarfile.open(tmp_path / "fake.tar.gz") as tar:
        raw = tar.extractfile("cifar-10-batches-bin/test_batch.bin").read()
    record = np.frombuffer(raw, np.uint8)[3073:]
    assert record[0] == 1 and img.getpixel((2, 1)) == tuple(
        record[1 + c * 1024 + 32 + 2] for c in range(3)
    )
    x, _ = build_dataset("CIFAR10:download", "train", transform=eval_transform(32))[3]
    assert x.shape == (3, 32, 32) and len(calls) == 1  # the verified download is reused
    # Only the archive is left behind: no temporary files, nothing extracted.
    assert [p.name for p in (tmp_data_dir / "cifar10-binary").iterdir()] == [
        "cifar-10-binary.tar.gz"
    ]


def test_cifar10_download_checksum_mismatch_leaves_nothing(tmp_path, tmp_data_dir, monkeypatch):
    import gmae.data.datasets as datasets

    monkeypatch.setenv("GMAE_SHARED_DATA", str(tmp_path / "no-archives"))
    _serve_cifar10(monkeypatch, _fake_cifar10_binary(tmp_path / "fake.tar.gz"))
    monkeypatch.setattr(datasets, "CIFAR10_BINARY_MD5", "0" * 32)
    with pytest.raises(GmaeError, match="CIFAR-10 unavailable.*corrupted"):
        build_dataset("cifar10:download")
    assert list((tmp_data_dir / "cifar10-binary").iterdir()) == []


def test_read_cifar10_binary_rejects_other_archives(tmp_path):
    import io
    import tarfile

    from gmae.data.datasets import read_cifar10_binary

    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(GmaeError, match="not the CIFAR-10 binary archive"):
        read_cifar10_binary(other, "train")
    torn = _fake_cifar10_binary(tmp_path / "torn.tar.gz")
    (tmp_path / "cut.tar.gz").write_bytes(torn.read_bytes()[:-200])
    with pytest.raises(GmaeError, match="cut.tar.gz"):
        read_cifar10_binary(tmp_path / "cut.tar.gz", "test")
    wrong = _fake_cifar10_binary(tmp_path / "wrong.tar.gz", classes=("one",))
    with pytest.raises(GmaeError, match=r"wrong.tar.gz \(test\): label 1 but 1 class names"):
        read_cifar10_binary(wrong, "test")


def test_cifar10_offline_without_archive(tmp_path, tmp_data_dir, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setenv("GMAE_SHARED_DATA", str(tmp_path / "no-archives"))
    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(GmaeError, match="CIFAR-10 unavailable.*GMAE_SHARED_DATA.*network"):
        build_dataset("cifar10:download")


def test_cifar10_corrupt_archive_does_not_fall_back(tmp_path, tmp_data_dir, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "cifar10-jpeg.tar.gz").write_bytes(b"not really")
    (shared / "SHA256SUMS").write_text(f"{'0' * 64}  cifar10-jpeg.tar.gz\n")
    monkeypatch.setenv("GMAE_SHARED_DATA", str(shared))
    calls = _serve_cifar10(monkeypatch, _fake_cifar10_binary(tmp_path / "fake.tar.gz"))
    with pytest.raises(GmaeError, match="checksum mismatch"):
        build_dataset("cifar10:download")  # even with the download allowed
    assert not calls


# --- transforms -------------------------------------------------------------------------------


def test_transforms_give_unnormalised_tensors():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    for tf in (pretrain_transform(16), pretrain_transform(16, scale=(0.5, 1.0))):
        x = tf(img)
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert eval_transform(16, crop_pct=0.875)(img).shape == (3, 16, 16)
    # At the native size, eval is exactly ToTensor: no resampling, no normalisation.
    square = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    expected = torch.from_numpy(np.array(square)).permute(2, 0, 1).float() / 255
    assert torch.equal(eval_transform(32)(square), expected)
    names = [type(t).__name__ for t in pretrain_transform(16).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor"]
    assert pretrain_transform(16).transforms[0].interpolation.value == "bicubic"


@pytest.mark.parametrize(
    "make",
    [
        lambda: pretrain_transform(0),
        lambda: pretrain_transform(16, scale=(0.0, 1.0)),
        lambda: eval_transform(16, crop_pct=1.5),
    ],
)
def test_transform_argument_errors(make):
    with pytest.raises(GmaeError):
        make()


# --- CLI --------------------------------------------------------------------------------------


def test_cli_info_imagefolder(corrupt_folder, capsys):
    assert main(["data", "info", f"imagefolder:{corrupt_folder}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["class", "train"]
    assert lines[3].split() == ["a", "3"] and lines[4].split() == ["b", "2"]
    assert lines[5].split() == ["total", "5"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["data", "info", "nosuch"], "unknown data set spec 'nosuch'"),
        (["data", "info", "imagefolder:{tmp}/missing"], "image folder {tmp}/missing not found"),
        (["data", "info", "imagefolder:{tmp}/empty"], "no class folders in {tmp}/empty"),
        (["data", "info", "imagefolder:{tmp}/noimg"], "no images in class folder(s) c of"),
        (["data", "prepare", "nosuch"], "unknown data set 'nosuch'; known: cifar10, "),
    ],
)
def test_cli_errors_are_one_line(argv, needle, tmp_path, tmp_data_dir, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noimg" / "c").mkdir(parents=True)
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert needle.format(tmp=tmp_path) in _one_error_line(capsys)
    assert _leftovers(tmp_data_dir) == []


def test_public_api_resolves():
    for name in gmae.data.__all__:
        assert getattr(gmae.data, name) is not None
    with pytest.raises(AttributeError):
        gmae.data.no_such_name  # noqa: B018
