"""The fast path against the dense reference: values, gradients, options; gradcheck; gsplat.

Every test runs twice, once per compositing kernel of the fast path: the compiled C loops
(skipped where no compiler works) and the PyTorch loops (the fallback)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from gmae.errors import GmaeError
from gmae.render import Camera, RenderSettings, fast_kernel, render
from gmae.render.fast import render_fast, resolve_kernel, use_kernel
from gmae.render.testing import random_gaussians, saturated_gaussians

F64, F32 = torch.float64, torch.float32
INPUTS = ("means", "scales", "quats", "colors", "opacities")


@pytest.fixture(autouse=True, params=["c", "torch"])
def kernel(request):
    if request.param == "c" and fast_kernel.load() is None:
        pytest.skip(f"compiled kernel unavailable: {fast_kernel.error()}")
    with use_kernel(request.param):
        yield request.param


def _loss_weights(out, seed=0):
    """Fixed random weights so every output pixel and channel gets a distinct gradient."""
    g = torch.Generator().manual_seed(seed)
    outs = (out.image, out.alpha, out.depth)
    return [None if t is None else torch.rand(t.shape, generator=g, dtype=t.dtype) for t in outs]


def _run(g, camera, backend, weights=None, **kw):
    g = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in g.items()}
    out = render(**g, camera=camera, backend=backend, **kw)
    loss = 0
    if weights is not None:
        for w, t in zip(weights, (out.image, out.alpha, out.depth)):
            if t is not None:
                loss = loss + (w * t).sum()
        loss.backward()
    grads = {k: v.grad for k, v in g.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    return out, grads


def compare(g, camera, dtype=F64, grads=True, **kw):
    g = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in g.items()}
    for k in INPUTS:
        g[k].requires_grad_(grads)
    ref, g_ref = _run(g, camera, "reference", None, **kw)
    weights = _loss_weights(ref) if grads else None
    if grads:
        ref, g_ref = _run(g, camera, "reference", weights, **kw)
    fast, g_fast = _run(g, camera, "fast", weights, **kw)
    assert fast.backend == "fast"
    tol = dict(atol=1e-10, rtol=0) if dtype == F64 else dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.image, ref.image, **tol)
    torch.testing.assert_close(fast.alpha, ref.alpha, **tol)
    if ref.depth is not None:
        # depth = sum(w z) / alpha: z ~ 8 and alpha >= 1/255 amplify float32 rounding.
        dtol = tol if dtype == F64 else dict(atol=2e-3, rtol=1e-5)
        torch.testing.assert_close(fast.depth, ref.depth, **dtol)
    else:
        assert fast.depth is None
    for name in ("means2d", "depths", "radii", "conics", "opacities"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), atol=0, rtol=0)
    if grads:
        assert set(g_fast) == set(g_ref)
        for k in g_ref:
            scale = g_ref[k].abs().max().clamp(min=1e-30)
            err = (g_fast[k] - g_ref[k]).abs().max() / scale
            assert err < (1e-6 if dtype == F64 else 2e-3), (k, err.item())
    return ref, fast


def gmae_like(B, K, seed=0, **kw):
    return random_gaussians(B, K, seed=seed, dtype=F64, **kw)


def test_fast_matches_reference_gmae_like_float64():
    compare(gmae_like(3, 64, seed=1), Camera(height=24, width=32))


def test_fast_matches_reference_float32_images():
    compare(gmae_like(2, 64, seed=2), Camera(height=32, width=32), dtype=F32)


def test_fast_matches_reference_saturated():
    """Nearly opaque, piled-up Gaussians: early stop, max_alpha clamp and depth ties."""
    ref, _ = compare(saturated_gaussians(dtype=F64), Camera(height=11, width=9), background=0.3)
    assert ref.alpha.max() > 0.999


@pytest.mark.parametrize("channels", [1, 5])
def test_fast_matches_reference_channels(channels):
    compare(gmae_like(2, 24, seed=3, channels=channels), Camera(height=16, width=12))


def test_fast_matches_reference_keep_mask_and_background_grad():
    g = gmae_like(2, 40, seed=4)
    keep = torch.rand(2, 40, generator=torch.Generator().manual_seed(0)) > 0.4
    bg = torch.tensor([[0.2, 0.4, 0.9], [1.0, 0.0, 0.5]], dtype=F64, requires_grad=True)
    g["background"] = bg
    ref, fast = compare(g, Camera(height=20, width=20), keep=keep)
    assert (ref.radii[~keep] == 0).all()


@pytest.mark.parametrize("mode", ["pinhole", "ortho"])
def test_fast_matches_reference_per_image_cameras(mode):
    B = 3
    angles = torch.tensor([0.0, 0.3, -0.4], dtype=F64)
    view = torch.eye(4, dtype=F64).repeat(B, 1, 1)
    view[:, 0, 0], view[:, 0, 2] = torch.cos(angles), torch.sin(angles)
    view[:, 2, 0], view[:, 2, 2] = -torch.sin(angles), torch.cos(angles)
    view[:, 2, 3] = torch.tensor([3.0, 4.0, 5.0])
    f = torch.tensor([20.0, 25.0, 18.0], dtype=F64) * (1 if mode == "pinhole" else 0.4)
    cam = Camera(mode=mode, height=18, width=26, fx=f, fy=f * 0.9, viewmat=view)
    compare(gmae_like(B, 30, seed=5), cam)


def test_fast_matches_reference_antialiased_no_depth():
    compare(
        gmae_like(2, 32, seed=6),
        Camera(height=16, width=16),
        settings=RenderSettings(rasterize_mode="antialiased"),
        return_depth=False,
    )


@pytest.mark.parametrize("tile, group_pixels, workers", [(4, 64, 2), (16, 1 << 15, 0), (8, 256, 3)])
def test_fast_layouts_agree(tile, group_pixels, workers):
    """Tile size, group size and worker count change the schedule, not the result."""
    g = gmae_like(2, 48, seed=7)
    cam = Camera(height=20, width=28)
    kw = dict(
        camera_model="gmae",
        height=20,
        width=28,
        settings=RenderSettings(),
        return_depth=True,
    )
    args = (
        g["means"],
        g["scales"],
        g["quats"],
        g["colors"],
        g["opacities"],
        torch.ones(2, 3, dtype=F64),
        cam.intrinsics(2, dtype=F64),
        cam.viewmats(2, dtype=F64),
    )
    base = render_fast(*args, **kw)
    other = render_fast(*args, **kw, tile=tile, group_pixels=group_pixels, workers=workers)
    for a, b in zip(base[:3], other[:3]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_gradcheck_both_backends():
    """Large, semi-transparent Gaussians cover the whole 6 x 5 image: every alpha is well inside
    (1/255, 0.999) and T stays far above 1e-4, so the thresholds cannot flip under perturbation."""
    g = {
        "means": torch.tensor([[[0.1, -0.2, 0.0], [-0.3, 0.2, 0.5], [0.0, 0.1, -0.4]]], dtype=F64),
        "scales": torch.tensor([[[15.0, 12.5, 10], [10, 17.5, 15], [14, 11, 12]]], dtype=F64),
        "quats": torch.tensor(
            [[[1.0, 0.1, 0.2, 0.0], [0.9, -0.2, 0.1, 0.3], [0.8, 0.0, -0.3, 0.1]]], dtype=F64
        ),
        "colors": torch.tensor([[[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.5, 0.5, 0.9]]], dtype=F64),
        "opacities": torch.tensor([[0.5, 0.6, 0.4]], dtype=F64),
        "background": torch.tensor([0.3, 0.6, 0.9], dtype=F64),
    }
    cam = Camera(height=5, width=6)
    names = list(g)
    for backend in ("reference", "fast"):

        def fn(*xs, backend=backend):
            out = render(**dict(zip(names, xs)), camera=cam, backend=backend)
            assert out.alpha.min() > 0.5 and out.alpha.max() < 0.95
            return out.image, out.alpha, out.depth

        xs = tuple(v.clone().requires_grad_() for v in g.values())
        assert torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_dtypes_and_autocast():
    g = random_gaussians(2, 16, seed=8)
    cam = Camera(height=12, width=12)
    ref = render(**g, camera=cam)
    assert ref.backend == "fast" and ref.image.dtype == F32
    g64 = {k: v.double() for k, v in g.items()}
    assert render(**g64, camera=cam).image.dtype == F64
    bf = {k: v.bfloat16().requires_grad_() for k, v in g.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = render(**bf, camera=cam)
        out.image.sum().backward()
    assert out.image.dtype == F32
    assert all(v.grad is not None and v.grad.dtype == torch.bfloat16 for v in bf.values())
    g32 = {k: v.bfloat16().float() for k, v in g.items()}
    torch.testing.assert_close(out.image, render(**g32, camera=cam).image, atol=1e-6, rtol=0)


def test_everything_culled():
    g = random_gaussians(2, 4, seed=9, requires_grad=True)
    g["means"].data[..., 2] = -9.0  # behind the camera
    out = render(**g, camera=Camera(height=8, width=8), background=0.5)
    assert (out.image == 0.5).all() and (out.alpha == 0).all() and (out.depth == 0).all()
    out.image.sum().backward()
    assert all((v.grad == 0).all() for v in g.values())


def test_meta_outputs_are_differentiable():
    g = gmae_like(1, 6, seed=10)
    for k in INPUTS:
        g[k].requires_grad_()
    grads = {}
    for backend in ("reference", "fast"):
        for v in g.values():
            v.grad = None
        out = render(**g, camera=Camera(height=10, width=10), backend=backend)
        (out.means2d.sum() + out.depths.sum() + out.conics.sum() + out.image.sum()).backward()
        grads[backend] = [g[k].grad.clone() for k in ("means", "scales", "quats")]
    for a, b in zip(grads["reference"], grads["fast"]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gsplat_parity_on_cuda():
    pytest.importorskip("gsplat")
    g = random_gaussians(4, 128, seed=11, device="cuda", requires_grad=True)
    cam = Camera(height=48, width=64)
    outs, grads = {}, {}
    for backend in ("fast", "gsplat"):
        for v in g.values():
            v.grad = None
        out = render(**g, camera=cam, backend=backend)
        assert out.backend == backend
        (out.image.square().sum() + out.alpha.sum() + 0.01 * out.depth.sum()).backward()
        outs[backend] = out
        grads[backend] = {k: v.grad.clone() for k, v in g.items()}
    assert render(**g, camera=cam).backend == "gsplat"  # auto picks gsplat on CUDA
    a, b = outs["fast"], outs["gsplat"]
    torch.testing.assert_close(a.image, b.image, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.alpha, b.alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.depth, b.depth, atol=2e-3, rtol=1e-5)
    for k in grads["fast"]:
        ga, gb = grads["fast"][k], grads["gsplat"][k]
        assert ((ga - gb).abs().max() / gb.abs().max()) < 1e-3, k


def test_fast_rare_branches(monkeypatch):
    """The sigma < 0 guard only runs when some conic is ill-conditioned enough for rounding to
    make sigma negative (cond ~ 1 / eps); force it on and check nothing changes, and check the
    flag itself on a nearly singular float32 conic."""
    import gmae.render.fast as fast

    g = gmae_like(2, 12, seed=12)
    ref = render(**g, camera=Camera(height=16, width=16), backend="reference")
    real = fast._row_coeffs

    def forced(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), check_sign=True, may_clamp=True)

    monkeypatch.setattr(fast, "_row_coeffs", forced)
    g = {k: v.requires_grad_() for k, v in g.items()}
    out = render(**g, camera=Camera(height=16, width=16), backend="fast")
    torch.testing.assert_close(out.image, ref.image, atol=1e-10, rtol=0)
    out.image.sum().backward()  # the unclamped-mask branch of the backward
    monkeypatch.undo()

    tl = SimpleNamespace(row_gid=torch.tensor([0, 1]), row_cx=torch.zeros(2), row_cy=torch.zeros(2))
    prm = torch.tensor([[0, 0, 1.0, 0.0, 1.0, 0.5, 1], [0, 0, 1e4, 0.99999, 1e-4, 0.5, 1]])
    assert real(prm, tl, 0.999).check_sign
    tl.row_gid = torch.tensor([0, 0])
    assert not real(prm, tl, 0.999).check_sign


def test_camera_parameters_get_gradients():
    g = gmae_like(2, 16, seed=13)
    grads = {}
    for backend in ("reference", "fast"):
        fx = torch.tensor([20.0, 24.0], dtype=F64, requires_grad=True)
        view = torch.eye(4, dtype=F64).repeat(2, 1, 1)
        view[:, 2, 3] = 5.0
        view.requires_grad_()
        cam = Camera(mode="pinhole", height=14, width=18, fx=fx, fy=fx * 0.8, viewmat=view)
        out = render(**g, camera=cam, backend=backend)
        (out.image.square().sum() + out.depth.sum()).backward()
        grads[backend] = (fx.grad, view.grad)
    for a, b in zip(grads["reference"], grads["fast"]):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_fast_matches_reference_large_gaussians(dtype):
    """The regime the compiled kernel is for: scale cap 2, Gaussians spanning many tiles, so
    lists are long and many pixels reach the early stop."""
    g = gmae_like(2, 96, seed=14, scale_cap=2.0)
    g["opacities"] = 0.7 + 0.299 * g["opacities"]
    g["means"][..., :2] *= 0.5
    ref, _ = compare(g, Camera(height=40, width=36), dtype=dtype)
    # T stops just above 1e-4: whole tiles of saturated pixels, where the loop ends early
    assert (ref.alpha > 0.9998).float().mean() > 0.1


def test_kernels_agree_and_layouts(kernel):
    """Both kernels give the same values; tile size and worker count do not change them."""
    g = gmae_like(3, 80, seed=15, scale_cap=1.5)
    cam = Camera(height=33, width=30)
    with use_kernel("torch"):
        base = render(**g, camera=cam, backend="fast")
    kw = dict(
        camera_model="gmae", height=33, width=30, settings=RenderSettings(), return_depth=True
    )
    args = (*(g[k] for k in INPUTS), torch.ones(3, 3, dtype=F64))
    args += (cam.intrinsics(3, dtype=F64), cam.viewmats(3, dtype=F64))
    for tile, workers in [(0, 0), (4, 2), (16, 3), (32, 0)]:  # 32: beyond the kernel's tiles
        out = render_fast(*args, **kw, tile=tile, workers=workers, kernel=kernel)
        for a, b in zip(out[:3], (base.image, base.alpha, base.depth)):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_kernel_selection_and_fallback(monkeypatch):
    """No compiler: `auto` falls back to the PyTorch loops, an explicit "c" says why not."""
    assert resolve_kernel("torch", torch.device("cpu")) == "torch"
    with pytest.raises(GmaeError, match="unknown fast kernel"):
        with use_kernel("cuda"):
            pass
    monkeypatch.setattr(fast_kernel, "_lib", None)
    monkeypatch.setattr(fast_kernel, "_tried", False)
    monkeypatch.setattr(fast_kernel, "_error", None)
    monkeypatch.setattr(fast_kernel, "_compiler", lambda: None)
    with use_kernel("auto"):
        assert resolve_kernel("auto", torch.device("cpu")) == "torch"
        out = render(**random_gaussians(1, 8, seed=16), camera=Camera(height=8, width=8))
        assert out.backend == "fast" and out.alpha.max() > 0
    with pytest.raises(GmaeError, match="no C compiler"):
        resolve_kernel("c", torch.device("cpu"))
    monkeypatch.setenv("GMAE_RENDER_KERNEL", "torch")
    assert fast_kernel.load() is None
    monkeypatch.setattr(fast_kernel, "_error", None)
    with pytest.raises(GmaeError, match="GMAE_RENDER_KERNEL=torch"):
        resolve_kernel("c", torch.device("cpu"))


def test_backward_twice_with_retain_graph():
    g = random_gaussians(2, 24, seed=17, requires_grad=True)
    out = render(**g, camera=Camera(height=16, width=16), backend="fast")
    loss = out.image.square().sum() + out.depth.sum()
    loss.backward(retain_graph=True)
    first = {k: v.grad.clone() for k, v in g.items()}
    loss.backward()
    for k, v in g.items():
        torch.testing.assert_close(v.grad, 2 * first[k])
