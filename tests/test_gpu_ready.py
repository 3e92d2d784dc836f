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
from gmae.render import api as render_api
from gmae.render import gsplat_backend

# --- backend choice -----------------------------------------------------------------------


@pytest.fixture
def fake_gsplat(monkeypatch):
    """Install a fake ``gsplat`` whose compiled module is ``kernels`` (None: not built)."""

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


def test_auto_skips_gsplat_without_kernels_and_warns_once(fake_gsplat):
    fake_gsplat(None)  # gsplat imports, but no CUDA toolkit built its kernels
    assert not render_api.gsplat_available()
    with pytest.warns(RuntimeWarning, match=r"runs 'fast'.*kernels are not built"):
        assert render_api.resolve_backend("auto", "cuda") == "fast"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time is silent
        assert render_api.resolve_backend("auto", "cuda") == "fast"
        assert render_api.resolve_backend("auto", "cpu") == "fast"  # CPU: no warning at all
    with pytest.raises(GmaeError, match="backend 'gsplat' cannot be used: .*kernels are not built"):
        render_api.resolve_backend("gsplat", "cuda")


def test_auto_picks_gsplat_when_kernels_load(fake_gsplat):
    fake_gsplat(types.SimpleNamespace())  # a loaded compiled module
    assert render_api.gsplat_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert render_api.resolve_backend("auto", "cuda") == "gsplat"
    assert render_api.resolve_backend("auto", "cpu") == "fast"
    with pytest.warns(RuntimeWarning, match="float32-only"):
        assert render_api.resolve_backend("auto", "cuda", dtype=torch.float64) == "fast"


def test_gsplat_not_importable(monkeypatch):
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
