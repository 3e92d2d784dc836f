"""CPU checks of the GPU paths (issue: ready for the first GPU hour): backend choice with a fake
gsplat, fp32 islands under autocast, per-rank CUDA RNG state, the rank-0 resume decision, the
uint8 input pipeline."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

from gmae.errors import GmaeError

# Module level stays light: the two-process test's children import this file.

# --- backend choice -----------------------------------------------------------------------


@pytest.fixture
def fake_gsplat(monkeypatch):
    """Install a fake ``gsplat`` whose compiled module is ``kernels`` (None: not built)."""
    from gmae.render import api as render_api
    from gmae.render import gsplat_backend

    def install(kernels):
        pkg = types.ModuleType("gsplat")
        pkg.__version__ = "1.5.3"
        cuda = types.ModuleType("gsplat.cuda")
        backend = types.ModuleType("gsplat.cuda._backend")
        backend._C = kernels
        pkg.cuda, cuda._backend = cuda, backend
        for name, mod in (
            ("gsplat", pkg),
            ("gsplat.cuda", cuda),
            ("gsplat.cuda._backend", backend),
        ):
            monkeypatch.setitem(sys.modules, name, mod)
        gsplat_backend.gsplat_kernel_problem.cache_clear()
        gsplat_backend.gsplat_max_alpha.cache_clear()
        monkeypatch.setattr(render_api, "_warned_fallback", set())

    yield install
    gsplat_backend.gsplat_kernel_problem.cache_clear()
    gsplat_backend.gsplat_max_alpha.cache_clear()


@pytest.fixture
def gpu_memory(monkeypatch):
    """Fake the total memory of the (absent) CUDA device, in GiB."""

    def install(gib: float):
        props = types.SimpleNamespace(total_memory=int(gib * 2**30), name="fake GPU")
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)

    return install


def test_auto_skips_gsplat_without_kernels_and_warns_once(fake_gsplat, gpu_memory):
    from gmae.render import api as render_api

    fake_gsplat(None)  # gsplat imports, but no CUDA toolkit built its kernels
    gpu_memory(80)
    assert not render_api.gsplat_available()
    with pytest.warns(RuntimeWarning, match=r"runs 'reference'.*kernels are not built"):
        assert render_api.resolve_backend("auto", "cuda") == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time is silent
        assert render_api.resolve_backend("auto", "cuda") == "reference"
        assert render_api.resolve_backend("auto", "cpu") == "fast"  # CPU: no warning at all
    with pytest.raises(GmaeError, match="backend 'gsplat' cannot be used: .*kernels are not built"):
        render_api.resolve_backend("gsplat", "cuda")


def test_auto_picks_gsplat_when_kernels_load(fake_gsplat, gpu_memory):
    from gmae.render import api as render_api

    fake_gsplat(types.SimpleNamespace())  # a loaded compiled module
    gpu_memory(80)
    assert render_api.gsplat_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # gsplat first, whatever the size: its memory is per tile, not per pixel x Gaussian
        assert render_api.resolve_backend("auto", "cuda", pairs=10**12) == "gsplat"
    assert render_api.resolve_backend("auto", "cpu") == "fast"
    with pytest.warns(RuntimeWarning, match="runs 'reference'.*float32-only"):
        assert render_api.resolve_backend("auto", "cuda", dtype=torch.float64) == "reference"


def test_auto_on_cuda_without_gsplat_reference_then_fast_by_size(
    monkeypatch, fake_gsplat, gpu_memory
):
    """gsplat > reference > fast on CUDA: the dense reference while its ~64 B per pixel x
    Gaussian pair fit in a quarter of the GPU's memory, the fast path above; CPU always fast."""
    from gmae.render import api as render_api
    from gmae.render import gsplat_backend

    monkeypatch.setitem(sys.modules, "gsplat", None)  # not installed
    gsplat_backend.gsplat_kernel_problem.cache_clear()
    monkeypatch.setattr(render_api, "_warned_fallback", set())
    gpu_memory(139.8)  # an H200: 34.9 GiB for the reference, ~5.9e8 pairs
    small = 128 * 64 * 64 * 256  # the flagship's training render: 1.3e8 pairs, 8 GiB
    large = 128 * 224 * 224 * 256  # the same at 224 px: 1.6e9 pairs, 98 GiB
    with pytest.warns(RuntimeWarning) as caught:
        assert render_api.resolve_backend("auto", "cuda", pairs=small) == "reference"
        assert render_api.resolve_backend("auto", "cuda", pairs=large) == "fast"
        assert render_api.resolve_backend("auto", "cuda", pairs=large // 2) == "fast"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2  # once per choice, not once per size
    assert "runs 'reference'" in messages[0] and "not importable" in messages[0]
    assert "runs 'fast'" in messages[1] and "98.0 GiB for 1.64e+09" in messages[1]
    assert "> 34.9 GiB" in messages[1]
    # float64 doubles the bytes per pair; a smaller GPU lowers the threshold
    with pytest.warns(RuntimeWarning, match="float32-only"):
        f64 = render_api.resolve_backend("auto", "cuda", pairs=small, dtype=torch.float64)
    assert f64 == "reference"
    gpu_memory(24)
    assert render_api.resolve_backend("auto", "cuda", pairs=small) == "fast"
    assert render_api.resolve_backend("auto", "cuda", pairs=small // 2) == "reference"
    assert render_api.resolve_backend("auto", "cpu", pairs=1) == "fast"
    # explicit names are never overridden by the size guard
    assert render_api.resolve_backend("reference", "cuda", pairs=large) == "reference"
    assert render_api.resolve_backend("fast", "cuda", pairs=1) == "fast"
    gsplat_backend.gsplat_kernel_problem.cache_clear()


def test_render_passes_its_size_to_the_choice(monkeypatch):
    """render() decides with this call's B * H * W * K (what the size guard compares)."""
    from gmae.render import Camera, render
    from gmae.render import api as render_api
    from gmae.render.testing import random_gaussians

    seen = []
    choose = render_api._choose_backend

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pairs"))
        return choose(*args, **kwargs)

    monkeypatch.setattr(render_api, "_choose_backend", spy)
    out = render(**random_gaussians(3, 5, seed=0), camera=Camera(height=8, width=6))
    assert out.backend == "fast" and seen == [3 * 8 * 6 * 5]


def test_gsplat_not_importable(monkeypatch):
    from gmae.render import gsplat_backend

    monkeypatch.setitem(sys.modules, "gsplat", None)  # import raises ImportError
    gsplat_backend.gsplat_kernel_problem.cache_clear()
    try:
        assert "not importable" in gsplat_backend.gsplat_kernel_problem()
    finally:
        gsplat_backend.gsplat_kernel_problem.cache_clear()


# --- fp32 islands under autocast ----------------------------------------------------------

# Ops CUDA autocast runs in bf16 / fp16 (its "lower precision" list, the matmul-like part).
CUDA_LOW_PRECISION = {
    "einsum", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "addbmm", "baddbmm",
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "prelu",
    "chain_matmul", "multi_dot", "mv", "addmv", "addr", "_convolution",
}  # fmt: skip


class LowPrecisionCalls(torch.overrides.TorchFunctionMode):
    """Records the autocast-eligible ops called while CUDA autocast is on. The tensors are on
    the CPU, so CUDA autocast changes nothing here: only its switch is read, exactly where a GPU
    run would consult it."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in CUDA_LOW_PRECISION and torch.is_autocast_enabled("cuda"):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def under_cuda_autocast(fn):
    torch.set_autocast_enabled("cuda", True)
    try:
        with LowPrecisionCalls() as rec:
            out = fn()
    finally:
        torch.set_autocast_enabled("cuda", False)
    return out, rec.calls


def test_fp32_islands_have_no_autocast_eligible_ops():
    from gmae.models.latent_mim import mean_pairwise_similarity, patch_infonce
    from gmae.models.vit import patchify, unpatchify
    from test_models import images, tiny_gmae, tiny_mae

    x = images()
    patches, calls = under_cuda_autocast(lambda: patchify(x, 8))
    assert calls == [] and torch.equal(unpatchify(patches, 8, 32, 32), x)
    _, calls = under_cuda_autocast(lambda: unpatchify(patches, 8, 32, 32))
    assert calls == []

    mask = (torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.75).float()
    gmae, mae = tiny_gmae(), tiny_mae()
    _, calls = under_cuda_autocast(lambda: gmae.forward_loss(x, x.flip(-1), mask))
    assert calls == []
    _, calls = under_cuda_autocast(lambda: mae.forward_loss(x, patchify(x, 8), mask))
    assert calls == []
    tokens = torch.randn(2, 8, 32)
    raw, calls = under_cuda_autocast(lambda: gmae.head.raw(tokens))
    assert calls == [] and raw.dtype == torch.float32
    pred, target = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    _, calls = under_cuda_autocast(lambda: patch_infonce(pred, target))
    assert calls == []
    _, calls = under_cuda_autocast(lambda: mean_pairwise_similarity(pred))
    assert calls == []
    # The renderer too (its projection uses einsum), and TF32 is off inside every island.
    from gmae.render import Camera, render

    g = gmae.head(tokens)
    args = (g.means, g.scales, g.quats, g.colors, g.opacities, Camera(height=16, width=16))
    _, calls = under_cuda_autocast(lambda: render(*args))
    assert calls == []
    from gmae.precision import fp32_island

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with fp32_island():
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    # The recorder does see eligible ops outside the islands (the check can fail).
    _, calls = under_cuda_autocast(lambda: gmae.decoder_embed(torch.randn(2, 3, 64)))
    assert calls == ["linear"]


def test_tf32_flags_are_restored_after_a_run_or_benchmark():
    from gmae.precision import tf32_matmuls

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = tuple(f.allow_tf32 for f in flags)
    try:
        for f in flags:
            f.allow_tf32 = False
        with pytest.raises(RuntimeError, match="boom"), tf32_matmuls(True):
            assert all(f.allow_tf32 for f in flags)
            raise RuntimeError("boom")  # restored on the way out of a failed run too
        assert not any(f.allow_tf32 for f in flags)
    finally:
        for f, value in zip(flags, before, strict=True):
            f.allow_tf32 = value


def test_losses_and_head_stay_fp32_under_cpu_autocast():
    """CPU autocast rounds linear / matmul to bf16 too: the head, the losses and InfoNCE must
    come out in fp32 and equal the fp32 computation of the same (bf16-rounded) inputs."""
    from gmae.models.latent_mim import patch_infonce
    from test_models import images, tiny_gmae

    gmae = tiny_gmae()
    x = images()
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gmae(x, noise=noise)
        tokens = torch.randn(2, 8, 32).bfloat16()
        raw = gmae.head.raw(tokens)
        pred, target = torch.randn(2, 5, 16).bfloat16(), torch.randn(2, 5, 16).bfloat16()
        nce = patch_infonce(pred, target)
    assert out.raw.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert gmae.last_render_backend == "fast"
    torch.testing.assert_close(raw, gmae.head.proj(tokens.float()), rtol=0, atol=0)
    torch.testing.assert_close(nce, patch_infonce(pred.float(), target.float()), rtol=0, atol=0)


def test_doctor_build_flags_exclude_each_other(capsys):
    from gmae.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--build", "--no-build"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_doctor_reports_backends(tmp_path, fake_gsplat, capsys):
    import json

    from gmae.cli import main
    from gmae.doctor import report

    assert main(["doctor", "--no-build", "--json", str(tmp_path / "d.json")]) == 0
    r = json.loads((tmp_path / "d.json").read_text())
    assert r["auto_backend"] == "fast" and r["cuda_available"] is False
    assert "render backend 'auto' on cpu: fast" in capsys.readouterr().out
    fake_gsplat(None)
    assert "kernels are not built" in report(build=True)["gsplat_kernels"]
    fake_gsplat(types.SimpleNamespace())
    assert report(build=True)["gsplat_kernels"] == "loaded"


# --- device mapping and per-rank CUDA RNG state -------------------------------------------


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CPU machine that claims ``n`` GPUs; each GPU's RNG state is a distinct small tensor and
    ``set_rng_state`` calls are recorded."""
    restored: list[tuple[list[int], int]] = []

    def install(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

        def get_state(device="cuda"):
            index = torch.device(device).index or 0
            if index >= n:
                raise IndexError(f"no GPU {index} (fake machine with {n})")
            return torch.tensor([index, 7], dtype=torch.uint8)

        def set_state(state, device="cuda"):
            index = torch.device(device).index or 0
            if index >= n:
                raise IndexError(f"no GPU {index} (fake machine with {n})")
            restored.append((state.tolist(), index))

        def get_all():
            return [get_state(torch.device("cuda", i)) for i in range(n)]

        monkeypatch.setattr(torch.cuda, "get_rng_state", get_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", get_all)
        monkeypatch.setattr(
            torch.cuda,
            "set_rng_state_all",
            lambda states: [set_state(s, i) for i, s in enumerate(states)],
        )
        return restored

    return install


def test_device_is_local_rank_modulo_device_count(fake_cuda):
    from gmae.train.distributed import pick_device

    fake_cuda(1)  # one GPU visible per process (CUDA_VISIBLE_DEVICES set per rank)
    assert pick_device("cuda", local_rank=3) == torch.device("cuda", 0)
    fake_cuda(4)
    assert pick_device("auto", local_rank=5) == torch.device("cuda", 1)
    assert pick_device("cpu", local_rank=5) == torch.device("cpu")


def test_one_device_rule_outside_torchrun(fake_cuda, monkeypatch):
    from gmae.cli import build_parser
    from gmae.train.distributed import pick_device

    fake_cuda(4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert pick_device("cuda:2") == torch.device("cuda", 2)  # gmae.devices' rule
    with pytest.raises(GmaeError, match="only 4 CUDA devices"):
        pick_device("cuda:7")
    assert build_parser().parse_args(["bench", "train", "--device", "cuda:1"]).device == "cuda:1"


def test_rng_state_keeps_only_this_ranks_gpu(fake_cuda, tmp_path):
    from gmae.train import checkpoint as ckpt_io

    fake_cuda(8)  # saved on an 8-GPU node by the rank on GPU 5
    state = ckpt_io.rng_state(torch.device("cuda", 5))
    assert state["cuda"].tolist() == [5, 7]
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)

    restored = fake_cuda(4)  # resumed on a 4-GPU node (4 x 2 accumulation): rank on GPU 1
    ckpt_io.set_rng_state(loaded, torch.device("cuda", 1))
    assert restored == [([5, 7], 1)]

    # A checkpoint of the old format (every visible GPU's state per rank) on fewer GPUs.
    restored.clear()
    fake_cuda(1)
    old = {**loaded, "cuda": [torch.tensor([i, 7], dtype=torch.uint8) for i in range(8)]}
    ckpt_io.set_rng_state(old, torch.device("cuda", 0))
    assert restored == [([0, 7], 0)]
    # CPU training ignores any CUDA state.
    restored.clear()
    ckpt_io.set_rng_state(loaded, torch.device("cpu"))
    assert restored == [] and ckpt_io.rng_state(torch.device("cpu"))["cuda"] is None


# --- rank 0 decides resume (two gloo processes) -------------------------------------------


def _resume_worker(rank, port, cases, results):
    import os

    from gmae.train import distributed, outputs

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = distributed.init("cpu")
    try:
        lines = []
        for dirs, resume in cases:
            try:
                path = outputs.decide_resume(dirs[rank], resume, False, info)
                lines.append(str(path))
            except GmaeError as exc:
                lines.append(f"error: {exc}")
        (results / f"rank{rank}.txt").write_text("\n".join(lines))
    finally:
        distributed.cleanup()


@pytest.mark.slow  # two processes: about 10 s, mostly importing torch twice
def test_rank0_decides_resume_for_every_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Per-rank --out directories stand for a file system that is not shared.
    fresh0, stale1, run0, empty1 = (tmp_path / n for n in ("fresh0", "stale1", "run0", "empty1"))
    for d in (fresh0, stale1, run0, empty1):
        d.mkdir()
    (stale1 / "last.pt").write_bytes(b"x")  # only rank 1 would have resumed on its own
    (run0 / "last.pt").write_bytes(b"x")
    cases = [
        ((fresh0, stale1), True),
        ((run0, empty1), True),
        ((run0, empty1), str(tmp_path / "missing.pt")),
    ]
    mp.spawn(_resume_worker, args=(port, cases, tmp_path), nprocs=2)
    r0, r1 = ((tmp_path / f"rank{r}.txt").read_text().splitlines() for r in range(2))
    assert r0 == r1  # the same decision everywhere
    assert r0[0] == "None"
    assert r0[1] == str(run0 / "last.pt")
    assert r0[2].startswith("error: checkpoint") and "missing.pt not found" in r0[2]


# --- input pipeline: uint8 batches, the epoch in the sampler's indices ----------------------


class TinyImages(torch.utils.data.Dataset):
    def __init__(self, n: int = 6, size: int = 20):
        import numpy as np

        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return Image.fromarray(self.images[i]), i


def _epochs(transform, num_workers: int, persistent: bool, epochs: int = 2):
    from torch.utils.data import DataLoader

    from gmae.data.transforms import to_unit_float
    from gmae.train.sampling import ResumableSampler, SeededSamples

    data = SeededSamples(TinyImages(), transform, num_patches=4, seed=5)
    sampler = ResumableSampler(data, 1, 0, seed=5)
    loader = DataLoader(
        data, batch_size=3, sampler=sampler, num_workers=num_workers,
        persistent_workers=persistent, drop_last=True,
    )  # fmt: skip
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)  # what the engine does; a persistent worker never sees it
        out.append([(to_unit_float(x), y, noise) for x, y, noise in loader])
    return out


def test_uint8_batches_match_the_float_pipeline_with_persistent_workers():
    from gmae.data.transforms import pretrain_transform

    reference = _epochs(pretrain_transform(16), num_workers=0, persistent=False)
    uint8 = _epochs(pretrain_transform(16, uint8=True), num_workers=1, persistent=True)
    for ref_epoch, new_epoch in zip(reference, uint8, strict=True):
        for (a, ya, na), (b, yb, nb) in zip(ref_epoch, new_epoch, strict=True):
            assert b.dtype == torch.float32
            assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(na, nb)
    # The persistent worker augmented epoch 1 differently from epoch 0 (same images).
    first = {int(y): x for x, ys, _ in uint8[0] for y, x in zip(ys, x)}
    second = {int(y): x for x, ys, _ in uint8[1] for y, x in zip(ys, x)}
    common = first.keys() & second.keys()
    assert common and all(not torch.equal(first[i], second[i]) for i in common)


# --- bench flags --------------------------------------------------------------------------


def test_bench_render_backend_choice(monkeypatch):
    import gmae.render.bench as bench

    assert bench.parse_backends(None) == (bench.DEFAULT_BACKENDS, {})
    assert bench.parse_backends("fast, fast-torch") == (("fast", "fast-torch"), {})
    with pytest.raises(GmaeError, match="unknown --backend 'foo'"):
        bench.parse_backends("fast,foo")
    with pytest.raises(GmaeError, match="needs a CUDA device"):
        bench.parse_backends("gsplat,fast-cuda")
    monkeypatch.setattr(bench, "_subprocess", lambda job, timeout: bench.run_job(job))
    report = bench.run_benchmark(
        [bench.Config("tiny", 2, 8, 16, 16)], 1, 0, log=lambda m: None, backends=("fast-torch",)
    )
    table = bench.format_table(report)
    assert "fast-torch img/s" in table and "fast img/s" not in table and "error" not in table
    assert report["backends"] == ["fast-torch"] and report["goals"] == {}


def test_gpu_check_script_dry_run_writes_json(tmp_path):
    import json
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    proc = subprocess.run(
        ["bash", str(script), str(tmp_path / "gc"), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    steps = report["steps"]
    assert set(steps) == {"doctor", "parity", "amp_step", "nccl", "bench_render", "bench_train"}
    assert all(s["status"] == "skipped" for s in steps.values()) and report["ok"]
    # Nothing failed, but nothing ran either: the report must not read as a finished check.
    assert report["counts"] == {"ok": 0, "failed": 0, "skipped": 6}
    assert report["complete"] is False and "incomplete" in proc.stdout
