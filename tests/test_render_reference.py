"""The reference renderer against gsplat's per-pixel loop, closed forms and the camera maths.

Everything here is float64 on CPU and small; the fast path is tested against the reference in
test_render_fast.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from gmae.errors import GmaeError
from gmae.render import Camera, RenderSettings, project, render
from gmae.render.testing import random_gaussians, saturated_gaussians

F64 = torch.float64
BACKENDS = ("reference", "fast")


def loop_composite(
    out,
    colors,
    height,
    width,
    background=0.0,
    max_alpha=0.999,
    alpha_threshold=1 / 255,
    transmittance_threshold=1e-4,
):
    """A literal per-pixel port of gsplat's rasterize_to_pixels forward loop, in Python floats.

    Takes the projected Gaussians from a RenderOutput. Returns (image, transmittance, depth
    numerator, number of pixels that stopped early).
    """
    B, K = out.depths.shape
    C = colors.shape[-1]
    image = torch.zeros(B, C, height, width, dtype=F64)
    trans = torch.ones(B, 1, height, width, dtype=F64)
    dnum = torch.zeros(B, 1, height, width, dtype=F64)
    stops = 0
    for b in range(B):
        z = out.depths[b].tolist()
        ids = [k for k in sorted(range(K), key=lambda k: (z[k], k)) if out.radii[b, k].any()]
        g = [
            (
                *out.means2d[b, k].tolist(),
                *out.conics[b, k].tolist(),
                out.opacities[b, k].item(),
                colors[b, k].tolist(),
                z[k],
            )
            for k in ids
        ]
        for i in range(height):
            for j in range(width):
                px, py = j + 0.5, i + 0.5
                T, acc, d = 1.0, [0.0] * C, 0.0
                for mx, my, a, bb, c, o, col, zk in g:
                    dx, dy = mx - px, my - py
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + bb * dx * dy
                    if sigma < 0:
                        continue
                    alpha = min(max_alpha, o * math.exp(-sigma))
                    if alpha < alpha_threshold:
                        continue
                    next_t = T * (1 - alpha)
                    if next_t <= transmittance_threshold:
                        stops += 1
                        break
                    for ch in range(C):
                        acc[ch] += col[ch] * alpha * T
                    d += zk * alpha * T
                    T = next_t
                image[b, :, i, j] = torch.tensor(acc, dtype=F64) + T * background
                trans[b, 0, i, j] = T
                dnum[b, 0, i, j] = d
    return image, trans, dnum, stops


@pytest.mark.parametrize("case", ["random", "saturated"])
def test_reference_matches_literal_gsplat_loop(case):
    if case == "random":
        g = random_gaussians(2, 16, dtype=F64, seed=1)
        H, W, bg = 10, 12, 0.25
    else:
        g = saturated_gaussians()
        H, W, bg = 11, 9, 0.7
    out = render(**g, camera=Camera(height=H, width=W), background=bg, backend="reference")
    image, trans, dnum, stops = loop_composite(out, g["colors"], H, W, background=bg)
    if case == "saturated":
        assert stops > 20, "the early stop must actually trigger in this case"
        assert (out.radii > 0).all()
    torch.testing.assert_close(out.image, image, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.alpha, 1 - trans, atol=1e-10, rtol=0)
    alpha = 1 - trans
    depth = torch.where(alpha > 0, dnum / alpha.clamp(min=1e-12), 0.0)
    torch.testing.assert_close(out.depth, depth, atol=1e-10, rtol=0)


# -- analytic cases -------------------------------------------------------------------------


def one_gaussian(mean=(0.0, 0.0, 0.0), scale=1.0, opacity=0.8, color=(0.2, 0.5, 1.0), quat=None):
    q = torch.tensor(quat or (1.0, 0.0, 0.0, 0.0), dtype=F64)
    s = torch.tensor(scale, dtype=F64).expand(3) if np.isscalar(scale) else torch.tensor(scale)
    return {
        "means": torch.tensor(mean, dtype=F64).view(1, 1, 3),
        "scales": s.to(F64).reshape(1, 1, 3).clone(),
        "quats": q.view(1, 1, 4),
        "colors": torch.tensor(color, dtype=F64).view(1, 1, -1),
        "opacities": torch.tensor([[opacity]], dtype=F64),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_centred_gaussian_closed_form(backend):
    """gmae camera, 32 x 32: centre at pixel corner (16, 16), on-screen variance
    (fx / 8)^2 s^2 + 0.3 = 4.3, alpha = o exp(-d^2 / (2 v)) cut below 1/255."""
    H = W = 32
    g = one_gaussian(scale=1.0, opacity=0.8)
    out = render(**g, camera=Camera(height=H, width=W), background=0.0, backend=backend)
    v = (W / 2 / 8.0) ** 2 + 0.3
    p = torch.arange(W, dtype=F64) + 0.5
    d2 = (p[None, :] - 16) ** 2 + (p[:, None] - 16) ** 2
    alpha = 0.8 * torch.exp(-d2 / (2 * v))
    alpha = torch.where(alpha >= 1 / 255, alpha, 0.0)
    torch.testing.assert_close(out.alpha[0, 0], alpha, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.image[0], g["colors"][0, 0, :, None, None] * alpha)
    peak = 0.8 * math.exp(-0.5 / (2 * v))  # the four pixels around the centre
    assert out.alpha.max().item() == pytest.approx(peak, rel=1e-12)
    assert (out.alpha[0, 0, 15:17, 15:17] == out.alpha.max()).all()
    torch.testing.assert_close(
        out.depth[out.alpha > 0], torch.full_like(out.depth[out.alpha > 0], 8.0)
    )
    assert (out.depth[out.alpha == 0] == 0).all()
    torch.testing.assert_close(out.means2d[0, 0], torch.tensor([16.0, 16.0], dtype=F64))
    r = math.ceil(math.sqrt(2 * math.log(0.8 * 255)) * math.sqrt(v))
    assert out.radii[0, 0].tolist() == [r, r]


@pytest.mark.parametrize("backend", BACKENDS)
def test_background_blending(backend):
    g = one_gaussian(opacity=0.6)
    g = {k: v.expand(2, *v.shape[1:]).clone() for k, v in g.items()}
    cam = Camera(height=12, width=10)
    black = render(**g, camera=cam, background=0.0, backend=backend)
    a = black.alpha
    for bg in (
        0.5,
        torch.tensor([0.1, 0.2, 0.3], dtype=F64),
        torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]),
    ):
        out = render(**g, camera=cam, background=bg, backend=backend)
        bgt = torch.as_tensor(bg, dtype=F64).expand(2, 3)[:, :, None, None]
        torch.testing.assert_close(out.image, black.image + (1 - a) * bgt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_depth_order_and_ties(backend):
    """Two overlapping Gaussians (red index 0, blue index 1). An orthographic camera keeps the
    footprint independent of depth, so only the order changes."""
    cam = Camera(mode="ortho", height=16, width=16, fx=4.0, fy=4.0)
    red, blue = (
        one_gaussian(opacity=0.7, color=(1, 0, 0)),
        one_gaussian(opacity=0.7, color=(0, 0, 1)),
    )
    g = {k: torch.cat([red[k], blue[k]], dim=1) for k in red}

    def draw(z0, z1):
        gg = dict(g, means=g["means"].clone())
        gg["means"][0, :, 2] = torch.tensor([z0, z1], dtype=F64)
        return render(**gg, camera=cam, background=0.0, backend=backend).image

    red_front, blue_front, tie = draw(0.0, 0.5), draw(0.5, 0.0), draw(0.2, 0.2)
    centre = red_front[0, :, 8, 8]
    assert centre[0] > centre[2] > 0
    assert blue_front[0, 2, 8, 8] > blue_front[0, 0, 8, 8]
    assert (red_front - blue_front).abs().max() > 0.1
    torch.testing.assert_close(tie, red_front, atol=0, rtol=0)  # ties: lower index in front


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["gmae", "pinhole"])
def test_gaussian_behind_near_plane_does_nothing(backend, mode):
    front = one_gaussian(mean=(0.1, 0.0, 0.0))
    behind = one_gaussian(mean=(0.0, 0.0, -8.005), opacity=0.9)  # camera depth -0.005 < near
    g = {k: torch.cat([front[k], behind[k]], dim=1).requires_grad_() for k in front}
    cam = Camera(mode=mode, height=16, width=16)
    both = render(**g, camera=cam, backend=backend)
    alone = render(**{k: v[:, :1] for k, v in g.items()}, camera=cam, backend=backend)
    assert both.radii[0, 1].tolist() == [0, 0]
    torch.testing.assert_close(both.image, alone.image, atol=0, rtol=0)
    (both.image.sum() + both.depth.sum()).backward()
    for v in g.values():
        assert torch.isfinite(v.grad).all()
        assert (v.grad[:, 1] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_resolution_2x_equals_upsampled_1x(backend):
    """A single rotated Gaussian (colour c, opacity o, background g) rendered at 64^2 and at
    128^2 with ``camera.resized``. Up-sampling the 64^2 render bilinearly (align_corners=False)
    should give the 128^2 render up to two effects, bounded per pixel by

        |c - g| o [ 3/32 (A_xx + A_yy) + 0.225 / (e lambda_min(S + 0.075 I)) ] + 1e-6

    * Interpolation: interior 128^2 pixel centres sit 1/4 and 3/4 of a 64^2 pixel from their
      neighbours, so linear interpolation errs by at most (1/2)(1/4)(3/4) max|f''| = 3/32 max|f''|
      per axis (bilinear = x then y, and the x pass is a convex combination). For f = o exp(-q/2),
      q = d^T A d, f_xx = f ((A d)_x^2 - A_xx) and (A d)_x^2 <= A_xx q (Cauchy-Schwarz), so
      |f_xx| <= o A_xx max(1, 2q e^{-q/2}) / ... <= o A_xx (A: the 64^2 conic).
    * Blur: both renders add eps2d = 0.3 px^2 in their own pixels, i.e. 0.3 vs 0.075 in 64^2
      pixels (Delta v = 0.225). With Sigma(v) = S + v I, |d/dv exp(-q/2)| = (1/2) d^T Sigma^-2 d
      exp(-q/2) <= q e^{-q/2} / (2 lambda_min) <= 1 / (e lambda_min).
    The 1/255 cut is a step, so alpha_threshold is set to 1e-9 (its error is then < 1e-9); the
    Gaussian sits > 8 sigma from the borders (where bilinear sampling clamps) and the 1e-6 covers
    that and rounding.
    """
    g = one_gaussian(
        mean=(0.1, -0.05, 0.3),
        scale=(0.9, 0.5, 0.7),
        opacity=0.7,
        color=(0.9, 0.2, 0.4),
        quat=(0.9, 0.2, -0.3, 0.25),
    )
    cam = Camera(height=64, width=64)
    kw = dict(background=0.5, settings=RenderSettings(alpha_threshold=1e-9), backend=backend)
    lo = render(**g, camera=cam, **kw)
    hi = render(**g, camera=cam.resized(128, 128), **kw)
    up = F.interpolate(lo.image, scale_factor=2, mode="bilinear", align_corners=False)
    err = (up - hi.image).abs().amax(dim=(0, 2, 3))  # per channel

    a, b, c = lo.conics[0, 0].tolist()
    cov = np.linalg.inv(np.array([[a, b], [b, c]]))  # S + 0.3 I
    lam = np.linalg.eigvalsh(cov - 0.3 * np.eye(2) + 0.075 * np.eye(2)).min()
    per_unit = 3 / 32 * (a + c) + 0.225 / (math.e * lam)
    bound = (g["colors"][0, 0] - 0.5).abs() * 0.7 * per_unit + 1e-6
    assert (err <= bound).all(), (err, bound)
    assert (err > bound / 20).all(), "the bound should not be vacuous"
    torch.testing.assert_close(hi.means2d, lo.means2d * 2)


# -- projection ------------------------------------------------------------------------------


def _expected_projection(mean, scale, quat, view, fx, fy, cx, cy, H, W, mode, opacity=0.5):
    """Closed form of renderer.md's projection for one Gaussian, in numpy float64."""
    w, x, y, z = quat / np.linalg.norm(quat)
    R = Rotation.from_quat([x, y, z, w]).as_matrix()  # scipy is xyzw
    cov3 = R @ np.diag(np.square(scale)) @ R.T
    mc = view[:3, :3] @ mean + view[:3, 3]
    covc = view[:3, :3] @ cov3 @ view[:3, :3].T
    tx, ty, tz = mc
    if mode == "ortho":
        J = np.array([[fx, 0, 0], [0, fy, 0]])
    else:
        limx = ((W - cx) / fx + 0.3 * W / (2 * fx), cx / fx + 0.3 * W / (2 * fx))
        limy = ((H - cy) / fy + 0.3 * H / (2 * fy), cy / fy + 0.3 * H / (2 * fy))
        ctx = tz * np.clip(tx / tz, -limx[1], limx[0])
        cty = tz * np.clip(ty / tz, -limy[1], limy[0])
        J = np.array([[fx / tz, 0, -fx * ctx / tz**2], [0, fy / tz, -fy * cty / tz**2]])
    if mode == "pinhole":
        m2 = np.array([fx * tx / tz + cx, fy * ty / tz + cy])
    else:
        m2 = np.array([fx * tx + cx, fy * ty + cy])
    cov2 = J @ covc @ J.T + 0.3 * np.eye(2)
    inv = np.linalg.inv(cov2)
    extend = math.sqrt(2 * math.log(opacity * 255))
    radii = [math.ceil(extend * math.sqrt(cov2[0, 0])), math.ceil(extend * math.sqrt(cov2[1, 1]))]
    return m2, np.array([inv[0, 0], inv[0, 1], inv[1, 1]]), tz, radii, cov2


@pytest.mark.parametrize("mode", ["pinhole", "ortho", "gmae"])
def test_projection_closed_form(mode):
    H, W = 48, 64
    fx, fy, cx, cy = (50.0, 40.0, 30.0, 20.0) if mode == "pinhole" else (20.0, 16.0, 30.0, 20.0)
    view = np.eye(4)
    view[:3, :3] = Rotation.from_euler("y", 20, degrees=True).as_matrix()
    view[:3, 3] = (0.2, -0.1, 6.0)
    rng = np.random.default_rng(0)
    means = np.concatenate([rng.uniform(-1, 1, (5, 3)), [[9.0, 0.5, 0.0]]])  # last: off-axis
    scales = rng.uniform(0.1, 0.8, (6, 3))
    quats = rng.normal(size=(6, 4))
    cam = Camera(
        mode=mode, height=H, width=W, fx=fx, fy=fy, cx=cx, cy=cy, viewmat=torch.tensor(view)
    )
    t = {
        k: torch.tensor(v)[None]
        for k, v in (("means", means), ("scales", scales), ("quats", quats))
    }
    proj = project(t["means"], t["scales"], t["quats"], torch.full((1, 6), 0.5, dtype=F64), cam)
    for k in range(6):
        m2, con, z, radii, _ = _expected_projection(
            means[k], scales[k], quats[k], view, fx, fy, cx, cy, H, W, mode
        )
        np.testing.assert_allclose(proj.depths[0, k].item(), z, rtol=1e-12)
        np.testing.assert_allclose(proj.means2d[0, k].numpy(), m2, rtol=1e-12)
        if proj.radii[0, k].any():
            np.testing.assert_allclose(proj.conics[0, k].numpy(), con, rtol=1e-10)
            assert proj.radii[0, k].tolist() == radii
    if mode == "pinhole":  # the off-axis Gaussian exercises the frustum clamp
        x_over_z = view[:3, :3] @ means[5] + view[:3, 3]
        assert x_over_z[0] / x_over_z[2] > (W - cx) / fx + 0.3 * W / (2 * fx)


def test_projection_antialiased_compensation():
    g = one_gaussian(scale=(0.3, 0.1, 0.2), opacity=0.6)
    cam = Camera(height=32, width=32)
    classic = project(g["means"], g["scales"], g["quats"], g["opacities"], cam)
    aa = project(
        g["means"], g["scales"], g["quats"], g["opacities"], cam,
        settings=RenderSettings(rasterize_mode="antialiased"),
    )  # fmt: skip
    a, b, c = classic.conics[0, 0].tolist()
    cov = np.linalg.inv(np.array([[a, b], [b, c]]))
    ratio = np.linalg.det(cov - 0.3 * np.eye(2)) / np.linalg.det(cov)
    assert aa.opacities[0, 0].item() == pytest.approx(0.6 * math.sqrt(ratio), rel=1e-10)


def test_projection_matches_gsplat_torch_impl():
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    g = random_gaussians(1, 20, dtype=torch.float32, seed=5)
    for mode in ("pinhole", "ortho"):
        cam = Camera(mode=mode, height=40, width=56, fx=30.0, fy=28.0)
        ours = project(g["means"], g["scales"], g["quats"], g["opacities"], cam)
        R = torch_impl._quat_to_rotmat(g["quats"][0])
        M = R * g["scales"][0][:, None, :]
        covars = M @ M.transpose(-1, -2)
        Ks = torch.tensor([[[30.0, 0, 28.0], [0, 28.0, 20.0], [0, 0, 1]]])
        try:
            out = torch_impl._fully_fused_projection(
                g["means"][0], covars, cam.viewmats(1), Ks, 56, 40, camera_model=mode
            )
        except TypeError as exc:  # its private signature changes between gsplat versions
            pytest.skip(f"gsplat's _fully_fused_projection has another signature: {exc}")
        _, means2d, depths, conics = out[:4]
        vis = ours.visible[0]
        torch.testing.assert_close(ours.means2d[0][vis], means2d[0][vis], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(ours.depths[0], depths[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours.conics[0][vis], conics[0][vis], rtol=1e-4, atol=1e-6)


# -- camera ----------------------------------------------------------------------------------


def test_camera_defaults_and_resize():
    cam = Camera(height=32, width=48)
    assert cam.mode == "gmae"
    assert cam.intrinsics(2).tolist() == [[24.0, 16.0, 24.0, 16.0]] * 2
    assert cam.viewmats(1)[0, 2, 3].item() == 8.0
    big = cam.resized(64, 96)
    assert big.intrinsics(1).tolist() == [[48.0, 32.0, 48.0, 32.0]]
    custom = Camera(mode="pinhole", height=10, width=20, fx=torch.tensor([5.0, 6.0]))
    assert custom.batch_size == 2
    assert custom.resized(20, 40).intrinsics(2)[:, 0].tolist() == [10.0, 12.0]
    Ks = torch.tensor([[10.0, 0, 5], [0, 11, 6], [0, 0, 1]])
    assert Camera.from_matrices("ortho", 12, 10, Ks).intrinsics(1).tolist() == [[10, 11, 5, 6]]
    assert "gmae" in repr(cam)


def test_non_square_gmae_is_a_stretch():
    """With fy = H/2 a non-square gmae render is the square one stretched: centres and
    footprints scale per axis."""
    g = one_gaussian(mean=(0.3, -0.2, 0.1), scale=(0.4, 0.6, 0.5), quat=(0.8, 0.1, 0.5, -0.2))
    sharp = RenderSettings(eps2d=0.0)
    sq = project(
        g["means"], g["scales"], g["quats"], g["opacities"], Camera(height=40, width=40),
        settings=sharp,
    )  # fmt: skip
    wide = project(
        g["means"], g["scales"], g["quats"], g["opacities"], Camera(height=40, width=80),
        settings=sharp,
    )  # fmt: skip
    torch.testing.assert_close(wide.means2d, sq.means2d * torch.tensor([2.0, 1.0], dtype=F64))
    a, b, c = sq.conics[0, 0]
    torch.testing.assert_close(wide.conics[0, 0], torch.stack([a / 4, b / 2, c]))


# -- errors ----------------------------------------------------------------------------------


def _good():
    return random_gaussians(2, 5, seed=0)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda g: g.update(means=g["means"][..., :2]), "means must be"),
        (lambda g: g.update(scales=g["scales"][:, :3]), "scales must be"),
        (lambda g: g.update(quats=g["quats"][..., :3]), "quats must be"),
        (lambda g: g.update(colors=g["colors"][..., :0]), "colors must be"),
        (lambda g: g.update(opacities=g["opacities"][..., None]), "opacities must be"),
        (lambda g: g.update(keep=torch.ones(2, 5)), "keep must be a bool"),
        (lambda g: g.update(keep=torch.ones(2, 4, dtype=torch.bool)), "keep must be"),
        (lambda g: g.update(background=torch.ones(4)), "background must be"),
        (lambda g: g.update(backend="cuda"), "unknown render backend"),
        (lambda g: g.update(mode="fancy"), "unknown render mode"),
        (lambda g: g.update(backend="gsplat"), "gsplat"),
        (lambda g: g.update(camera=Camera(fx=torch.ones(3))), "3 per-image"),
        (lambda g: g.update(camera="gmae"), "camera must be"),
        (lambda g: g.update(means=g["means"].long()), "floating-point"),
        (lambda g: g.update(max_alpha=1.5), "max_alpha"),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # mode=, max_alpha=: the loose keywords
def test_errors_are_one_line_gmae_errors(change, match):
    g = dict(_good(), camera=Camera(height=8, width=8))
    change(g)
    if g["camera"] is not None and isinstance(g["camera"], Camera) and "backend" in g:
        if g["backend"] == "gsplat" and torch.cuda.is_available():
            pytest.skip("gsplat may be usable here")
    with pytest.raises(GmaeError, match=match) as info:
        render(**g)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="fisheye"), "unknown camera mode"),
        (dict(height=0), "height"),
        (dict(width=3.5), "width"),
        (dict(viewmat=torch.eye(3)), "viewmat"),
        (dict(fx=torch.ones(2), viewmat=torch.eye(4).expand(3, 4, 4)), "different sizes"),
    ],
)
def test_camera_errors(kwargs, match):
    with pytest.raises(GmaeError, match=match) as info:
        Camera(**kwargs)
    assert "\n" not in str(info.value)
