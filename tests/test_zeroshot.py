"""gmae.zeroshot: depth layering, layer-index edges, figure-ground, statistics, PLY export, CLI.

Tiny random models and hand-built Gaussian scenes (the model is then only the camera and the
renderer), small images: the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.export.ply import PROPERTIES, SH_C0, read_ply, read_ply_arrays, write_ply
from gmae.models import Gaussians, create_model
from gmae.render import Camera, RenderSettings, render
from gmae.zeroshot import edges as E
from gmae.zeroshot import figure_ground as FG
from gmae.zeroshot import layers as LY
from gmae.zeroshot.common import Photo, list_images, model_input, take_images
from gmae.zeroshot.stats import GaussianStats, layout_dependence, spearman

TINY = dict(
    img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip


def tiny_gmae(num_gaussians: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("gmae", num_gaussians=num_gaussians, **TINY).eval()


def save_tiny_checkpoint(path: Path, name: str = "gmae", seed: int = 0) -> Path:
    """A checkpoint in the training engine's format (what load_pretrained reads)."""
    from gmae.train.checkpoint import model_kwargs, save_checkpoint
    from gmae.train.config import config_from_dict, config_to_dict

    model_cfg = {"name": name, **{k: v for k, v in TINY.items() if k != "img_size"}}
    if name == "gmae":
        model_cfg["num_gaussians"] = 16
    cfg = config_from_dict({"model": model_cfg, "data": {"img_size": TINY["img_size"]}})
    torch.manual_seed(seed)
    model = create_model(**model_kwargs(cfg))
    save_checkpoint(path, {"format": 1, "config": config_to_dict(cfg), "model": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def model():
    return tiny_gmae()


@pytest.fixture(scope="module")
def gaussians(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.predict_gaussians(torch.rand(2, 3, 32, 32))


def grid_layer(cols, rows, x_range, y_range, z, scale, color, opacity=0.99):
    """Gaussians on a cols x rows grid of centres over the given ranges (GMAE world units)."""
    xs = torch.linspace(*x_range, cols * 2 + 1)[1::2]
    ys = torch.linspace(*y_range, rows * 2 + 1)[1::2]
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    n = cols * rows
    means = torch.stack([xx.ravel(), yy.ravel(), torch.full((n,), float(z))], -1)
    return dict(
        means=means,
        scales=torch.tensor(scale, dtype=torch.float32).expand(n, 3),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
        colors=torch.tensor(color, dtype=torch.float32).expand(n, 3),
        opacities=torch.full((n,), opacity),
    )


def scene(*layers) -> Gaussians:
    """Concatenate layers into a one-image Gaussians batch."""
    return Gaussians(
        **{k: torch.cat([layer[k] for layer in layers])[None].contiguous() for k in layers[0]}
    )


# --- depth order and subsets ------------------------------------------------------------------


def test_depth_rank_orders_by_camera_depth(model, gaussians):
    d = LY.camera_depths(model, gaussians)
    assert torch.allclose(d, gaussians.means[..., 2] + 8.0)  # default camera: z + 8
    rank = LY.depth_rank(d)
    assert (rank.sort(dim=1).values == torch.arange(16)).all()  # a permutation
    order = rank.argsort(dim=1)
    assert (torch.diff(torch.gather(d, 1, order), dim=1) >= 0).all()  # nearest first
    ties = LY.depth_rank(torch.zeros(1, 5))
    assert ties.tolist() == [[0, 1, 2, 3, 4]]  # stable


def test_group_bounds_are_equal_and_validated():
    for num, L in [(16, 4), (10, 3), (96, 32), (7, 7)]:
        b = LY.group_bounds(num, L)
        sizes = np.diff(b)
        assert b[0] == 0 and b[-1] == num and len(b) == L + 1
        assert sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
        rank = torch.arange(num)[None]
        gi = LY.group_index(rank, L)[0]
        for g in range(L):  # group_index agrees with the bounds
            assert (gi[b[g] : b[g + 1]] == g).all()
    with pytest.raises(GmaeError, match="groups"):
        LY.group_bounds(4, 8)


def test_first_k_all_is_full_render_and_zero_is_background(model, gaussians):
    h, w = 24, 40  # non-square: the photo's own size
    rank = LY.depth_rank(LY.camera_depths(model, gaussians))
    out = LY.render_subsets(model, gaussians, LY.first_k_keep(rank, [0, 5, 16]), h, w)
    full = model.render_gaussians(gaussians, h, w)
    assert out.image.shape == (2, 3, 3, h, w)
    torch.testing.assert_close(out.image[:, 2], full.image, atol=1e-6, rtol=0)
    assert torch.all(out.image[:, 0] == 1.0) and torch.all(out.alpha[:, 0] == 0.0)
    # K=5 draws exactly the 5 nearest
    keep5 = rank < 5
    ref = render(
        gaussians.means, gaussians.scales, gaussians.quats, gaussians.colors,
        gaussians.opacities, Camera(height=h, width=w), keep=keep5,
    )  # fmt: skip
    torch.testing.assert_close(out.image[:, 1], ref.image, atol=1e-6, rtol=0)


def test_group_renders_add_up(model, gaussians):
    h, w = 20, 28
    rank = LY.depth_rank(LY.camera_depths(model, gaussians))
    bounds = LY.group_bounds(16, 4)
    alone = LY.render_subsets(model, gaussians, LY.range_keep(rank, bounds), h, w, 0.0)
    cumul = LY.render_subsets(model, gaussians, LY.range_keep(rank, bounds, True), h, w, 0.0)
    c, a = LY.composite(alone.image, alone.alpha)
    torch.testing.assert_close(c, cumul.image, atol=2e-3, rtol=0)
    torch.testing.assert_close(a, cumul.alpha, atol=2e-3, rtol=0)
    full = model.render_gaussians(gaussians, h, w, background=0.0)
    torch.testing.assert_close(c[:, -1], full.image, atol=2e-3, rtol=0)
    # Each Gaussian in exactly one group; the groups partition the Gaussians.
    keep = LY.range_keep(rank, bounds)
    assert (keep.sum(dim=1) == 1).all()


def test_layer_set_shapes_and_depth_maps(model, gaussians):
    ls = LY.layer_set(model, gaussians, 18, 30, ks=[4, 8, 100], groups=4)
    assert ls.ks == [4, 8, 16]  # clipped to K, "all" last
    assert ls.first_k.shape == (2, 3, 3, 18, 30)
    assert ls.groups_alone.shape == ls.groups_cumulative.shape == (2, 4, 3, 18, 30)
    torch.testing.assert_close(ls.groups_cumulative[:, -1], ls.full, atol=2e-6, rtol=0)
    for m in (ls.depth_render, ls.depth_expected):
        assert m.shape == (2, 18, 30) and m.min() >= 0 and m.max() <= 1 + 1e-6


# --- the model's camera and render helper (one owner of rendering) ----------------------------


def _old_render_subsets(model, g, keep, height, width, background=None, max_pixels=1 << 23):
    """``render_subsets`` as it was before the model owned its camera: its own Camera and
    render call. The reference the model's helper must reproduce bit for bit."""
    b, s, k = keep.shape
    flat_keep = keep.reshape(b * s, k)
    src = torch.arange(b).repeat_interleave(s)
    chunk = max(1, max_pixels // (height * width))
    bg = model.background if background is None else background
    if isinstance(bg, tuple | list):
        bg = torch.tensor(bg, device=g.means.device)
    cam = Camera(mode=model.camera, height=height, width=width)
    images, alphas, depths = [], [], []
    for start in range(0, b * s, chunk):
        sub = take_images(g, src[start : start + chunk])
        out = render(
            sub.means, sub.scales, sub.quats, sub.colors, sub.opacities, camera=cam,
            background=bg, keep=flat_keep[start : start + chunk],
            backend=model.render_backend,
        )  # fmt: skip
        images.append(out.image)
        alphas.append(out.alpha)
        depths.append(out.depth)
    return [torch.cat(t).reshape(b, s, *t[0].shape[1:]) for t in (images, alphas, depths)]


@pytest.mark.parametrize("mode", ["gmae", "pinhole", "ortho"])
def test_model_camera_at_matches_the_old_construction(mode):
    model = create_model("gmae", num_gaussians=4, camera=mode, **TINY)
    assert model.camera_model == model.camera == mode
    assert model.render_settings == RenderSettings()
    with pytest.raises(AttributeError):
        model.camera = "ortho"  # read-only: the string lives in camera_model
    for h, w in [(32, 32), (24, 40)]:
        new, old = model.camera_at(h, w), Camera(mode=model.camera, height=h, width=w)
        assert (new.mode, new.height, new.width) == (old.mode, old.height, old.width)
        assert torch.equal(new.intrinsics(2), old.intrinsics(2))
        assert torch.equal(new.viewmats(2), old.viewmats(2))


def test_layers_unchanged_from_the_old_code_path():
    model = tiny_gmae(seed=3)
    model.background = (0.2, 0.5, 0.9)  # a per-channel background takes the tuple path
    torch.manual_seed(4)
    with torch.no_grad():
        g = model.predict_gaussians(torch.rand(2, 3, 32, 32))
    h, w = 20, 28
    rank = LY.depth_rank(LY.camera_depths(model, g))
    old_view = Camera(mode=model.camera, height=32, width=32).viewmats(2)
    old_depths = torch.einsum("bkj,bj->bk", g.means, old_view[:, 2, :3]) + old_view[:, 2, 3, None]
    assert torch.equal(LY.camera_depths(model, g), old_depths)
    for keep, background, max_pixels in [
        (LY.first_k_keep(rank, [0, 5, 16]), None, 1 << 23),
        (LY.range_keep(rank, LY.group_bounds(16, 4)), 0.0, h * w * 3),  # several chunks
    ]:
        new = LY.render_subsets(model, g, keep, h, w, background, max_pixels=max_pixels)
        old = _old_render_subsets(model, g, keep, h, w, background, max_pixels)
        for a, b in zip((new.image, new.alpha, new.depth), old):
            assert torch.equal(a, b)
    ls = LY.layer_set(model, g, h, w, ks=[4, 8], groups=4)
    first_k = _old_render_subsets(model, g, LY.first_k_keep(rank, [4, 8, 16]), h, w)[0]
    assert torch.equal(ls.first_k, first_k) and torch.equal(ls.full, first_k[:, -1])
    dnorm, lo, hi = LY.normalized_depths(old_depths)
    old_gray = render(
        g.means, g.scales, g.quats, dnorm[..., None], g.opacities,
        camera=Camera(mode=model.camera, height=h, width=w), background=1.0,
        backend=model.render_backend,
    )  # fmt: skip
    assert torch.equal(ls.depth_render, old_gray.image[:, 0])
    assert torch.equal(ls.means2d, old_gray.means2d)


def test_stats_projection_unchanged_from_the_old_code_path(model, gaussians):
    from gmae.render import project

    s = model.img_size
    g = gaussians
    old = project(
        g.means.float(), g.scales.float(), g.quats.float(), g.opacities.float(),
        Camera(mode=model.camera, height=s, width=s),
    )  # fmt: skip
    new = model.project_gaussians(g.float(), s, s)
    for name in ("means2d", "conics", "opacities", "depths", "radii"):
        assert torch.equal(getattr(new, name), getattr(old, name)), name


# --- edges --------------------------------------------------------------------------------------


def two_layer_scene(same_color: bool = False) -> Gaussians:
    """A near layer over the left half, a far layer over everything: 32 + 32 Gaussians."""
    near = grid_layer(4, 8, (-1.0, 0.0), (-1.0, 1.0), -0.5, [1.0, 1.0, 1.0], [0.9, 0.1, 0.1])
    far_color = [0.9, 0.1, 0.1] if same_color else [0.1, 0.1, 0.9]
    far = grid_layer(8, 4, (-1.0, 1.0), (-1.0, 1.0), 0.5, [1.0, 2.0, 1.0], far_color)
    return scene(near, far)


@pytest.mark.parametrize("rule", ["median", "argmax"])
@pytest.mark.parametrize("same_color", [False, True])
def test_edge_lands_on_layer_boundary(model, rule, same_color):
    g = two_layer_scene(same_color)
    per_l, combined, idx = E.gmae_edges(model, g, 32, 32, layers=[2], rule=rule)
    i = idx[2][0]
    assert (i[4:-4, :12] == 0).all() and (i[4:-4, 20:] == 1).all()  # near left, far right
    edge = per_l[2][0].numpy()
    cols = edge[4:-4].mean(axis=0)
    assert 13 <= int(cols.argmax()) <= 19  # the boundary of the near layer (x = 0 -> u = 16)
    assert cols[13:20].max() > 0.5
    assert edge[4:-4, :10].max() == 0 and edge[4:-4, 23:].max() == 0
    torch.testing.assert_close(combined, per_l[2])


def test_luminance_order_control(model):
    """Grouping by brightness gives the depth edges when brighter is nearer, and loses the near
    layer's boundary when the far layer is the brighter one."""
    near = grid_layer(4, 8, (-1.0, 0.0), (-1.0, 1.0), -0.5, [1.0, 1.0, 1.0], [0.9, 0.9, 0.9])
    for far_color, same in (([0.1, 0.1, 0.2], True), ([1.0, 1.0, 1.0], False)):
        far = grid_layer(8, 4, (-1.0, 1.0), (-1.0, 1.0), 0.5, [1.0, 2.0, 1.0], far_color)
        g = scene(near, far)
        _, by_depth, _ = E.gmae_edges(model, g, 32, 32, layers=[2])
        _, by_luminance, _ = E.gmae_edges(model, g, 32, 32, layers=[2], order="luminance")
        boundary = by_depth[0, 4:-4, 13:20].max()
        assert boundary > 0.5
        if same:
            torch.testing.assert_close(by_luminance, by_depth)
        else:  # the bright far layer comes first and forms every pixel: no boundary left
            assert by_luminance[0, 4:-4, 13:20].max() < 0.5 * boundary
    with pytest.raises(GmaeError, match="order"):
        E.gmae_edges(model, g, 32, 32, layers=[2], order="bogus")


def test_edges_in_range_and_combined_is_mean(model, gaussians):
    per_l, combined, idx = E.gmae_edges(model, gaussians, 21, 27, layers=[2, 4, 8])
    for L, e in per_l.items():
        assert e.shape == (2, 21, 27) and e.min() >= 0 and e.max() <= 1
        assert idx[L].min() >= 0 and idx[L].max() <= L
    torch.testing.assert_close(combined, torch.stack(list(per_l.values())).mean(0))
    with pytest.raises(GmaeError, match="rule"):
        E.index_map(torch.rand(1, 2, 4, 4), "bogus")


def test_cumulative_alpha_matches_direct_renders(model, gaussians):
    acc = E.cumulative_alpha(model, gaussians, 16, 16, [2, 4])
    rank = LY.depth_rank(LY.camera_depths(model, gaussians))
    for L, a in acc.items():
        direct = LY.render_subsets(
            model, gaussians, LY.range_keep(rank, LY.group_bounds(16, L), True), 16, 16
        ).alpha[:, :, 0]
        torch.testing.assert_close(a, direct, atol=2e-3, rtol=0)


def test_index_edges_of_a_step():
    idx = torch.zeros(1, 6, 8, dtype=torch.long)
    idx[:, :, 4:] = 3
    e = E.index_edges(idx, 4)[0]
    assert torch.allclose(e[:, 3:5], torch.tensor(math.sqrt(3 / 4)))
    assert e[:, :3].abs().max() == 0 and e[:, 5:].abs().max() == 0


def test_index_map_rules_and_background():
    # Two groups at one pixel: 0.3 then 0.9 of the alpha -> median: group 1; argmax: group 1.
    acc = torch.tensor([0.3, 0.9]).reshape(1, 2, 1, 1).repeat(1, 1, 1, 3)
    acc[..., 1] = torch.tensor([0.6, 0.9]).reshape(1, 2, 1)  # half formed by group 0
    acc[..., 2] = 0.01  # almost nothing drawn: background index L
    assert E.index_map(acc, "median")[0, 0].tolist() == [1, 0, 2]
    assert E.index_map(acc, "argmax")[0, 0].tolist() == [1, 0, 2]


def test_baseline_edges_are_maps_in_range():
    rng = np.random.default_rng(0)
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, 20:] = 200
    img = (img + rng.integers(0, 10, img.shape)).astype(np.uint8)
    for name in E.BASELINES:
        m = E.baseline_edges(name, img)
        assert m.shape == (30, 40) and m.min() >= 0 and m.max() <= 1
        assert m[:, 18:22].max() > 0.3 and m[5:-5, 5:12].max() < 0.2
    with pytest.raises(GmaeError):
        E.baseline_edges("prewitt", img)


# --- figure-ground ------------------------------------------------------------------------------


def blob_scene() -> Gaussians:
    """16 near Gaussians in a central blob over 48 far ones covering the image."""
    blob = grid_layer(4, 4, (-0.4, 0.4), (-0.4, 0.4), -0.6, [1.0, 1.0, 1.0], [0.2, 0.2, 0.2])
    back = grid_layer(8, 6, (-1.0, 1.0), (-1.0, 1.0), 0.6, [1.0, 1.4, 1.0], [0.2, 0.2, 0.2])
    return scene(blob, back)


def test_figure_ground_rules_find_the_near_blob(model):
    masks = FG.gmae_figure_masks(model, blob_scene(), 64, 64)
    y, x = np.mgrid[0:64, 0:64] + 0.5
    # The blob: centres within +-0.3 * 32 = 9.6 px of the middle, footprint std 32 / 7.4 = 4.3 px.
    gt = (np.abs(x - 32) <= 16) & (np.abs(y - 32) <= 16)
    for rule in FG.GMAE_RULES:
        m = masks[rule][0]
        assert m.shape == (64, 64)
        assert FG.iou(m, gt) > 0.85, rule
        assert not m[:6].any() and not m[:, -6:].any()  # the border is ground


def test_iou_and_score_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b[1:3] = True  # 8 px, 4 shared
    assert FG.iou(a, b) == pytest.approx(4 / 12)
    assert FG.iou(a, a) == 1.0
    assert FG.iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # both empty
    s = FG.score_masks({"x": a, "y": ~b}, {"x": b, "y": b})
    assert s["iou_fg"] == pytest.approx((4 / 12 + 0.0) / 2)
    assert s["miou"] == pytest.approx(((4 / 12 + 4 / 12) / 2 + 0.0) / 2)
    assert s["n_images"] == 2
    with pytest.raises(GmaeError, match="shapes"):
        FG.iou(a, np.zeros((3, 3)))
    with pytest.raises(GmaeError, match="no prediction"):
        FG.score_masks({}, {"x": b})


def test_centre_prior_and_otsu():
    c = FG.centre_prior(90, 150)
    assert c.mean() == pytest.approx(1 / 3, abs=0.01)
    assert c[45, 75] and not c[0, 0]
    assert not FG.otsu_above(np.ones((5, 5))).any()
    v = np.zeros((4, 4))
    v[:, 2:] = 1.0
    assert (FG.otsu_above(v) == (v > 0.5)).all()


def test_figure_ground_methods_cover_every_photo(model):
    mae = create_model("mae", **TINY).eval()
    rng = np.random.default_rng(0)
    photos = [
        Photo(f"p{i}", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for i, (h, w) in enumerate([(20, 30), (24, 24), (20, 30)])
    ]
    masks = FG.figure_ground(model, photos, mae_model=mae, batch_size=2)
    expected = {*FG.GMAE_RULES, "gmae_feature_pca", "mae_recon_error", "mae_feature_pca"}
    assert expected | {"centre_prior", "all_figure", "all_ground"} == set(masks)
    for per in masks.values():
        assert [per[p.name].shape for p in photos] == [p.size for p in photos]
    assert all(m.all() for m in masks["all_figure"].values())


def test_recon_error_masks_every_patch():
    mae = create_model("mae", **TINY).eval()
    err = FG.recon_error_maps(mae, torch.rand(2, 3, 32, 32))
    assert err.shape == (2, 32, 32) and (err > 0).all()  # every pixel masked at least once


# --- statistics ---------------------------------------------------------------------------------


def test_spearman_on_monotone_cases():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(10)))


def test_gaussian_stats_constructed(model):
    # Larger Gaussians nearer: scale decreases monotonically with depth -> rho = -1.
    n = 12
    z = torch.linspace(-0.9, 0.9, n)
    s = torch.linspace(0.5, 0.05, n)
    # Centres on a vertical edge of the image (u = 16) -> high-frequency ratio > 1.
    means = torch.stack([torch.zeros(n), torch.linspace(-0.8, 0.8, n), z], -1)[None]
    # Brighter nearer: grey levels fall with depth -> Spearman(luminance, depth) = -1.
    grey = torch.linspace(0.9, 0.1, n)[None, :, None].expand(1, n, 3).contiguous()
    g = Gaussians(
        means, s[None, :, None].expand(1, n, 3).contiguous(),
        torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4), grey, torch.full((1, n), 0.9),
    )  # fmt: skip
    img = torch.zeros(1, 3, 32, 32)
    img[..., 16:] = 1.0
    acc = GaussianStats()
    acc.add(model, img, g)
    out = acc.summary()
    assert out["spearman_luminance_vs_depth"]["pooled"] == pytest.approx(-1.0)
    # Colours unrelated to depth: |rho| well below 1.
    shuffled = GaussianStats()
    order = torch.tensor([5, 0, 9, 3, 11, 7, 1, 10, 4, 8, 2, 6])
    shuffled.add(model, img, Gaussians(g.means, g.scales, g.quats, grey[:, order], g.opacities))
    assert abs(shuffled.summary()["spearman_luminance_vs_depth"]["pooled"]) < 0.5
    rho = out["spearman_size_vs_depth"]
    assert rho["scale_gmean"]["pooled"] == pytest.approx(-1.0)
    assert rho["scale_largest_axis"]["per_image_mean"] == pytest.approx(-1.0)
    assert rho["screen_size"]["pooled"] == pytest.approx(-1.0)
    assert out["hf_ratio"]["pooled"] > 5.0  # all centres sit on the edge
    assert out["n_gaussians"] == n
    assert math.isnan(out["layout"]["depth_order_agreement"])  # one image: no pairs


def _edge_gaussians(u_or_v: str, n: int = 12) -> Gaussians:
    """n Gaussians on the line x = 0 ("u": a vertical line) or y = 0 ("v") of the image."""
    line, zero = torch.linspace(-0.8, 0.8, n), torch.zeros(n)
    xy = [zero, line] if u_or_v == "u" else [line, zero]
    means = torch.stack([*xy, torch.zeros(n)], -1)[None]
    return Gaussians(
        means, torch.full((1, n, 3), 0.1), torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4),
        torch.rand(1, n, 3), torch.full((1, n), 0.9),
    )  # fmt: skip


def test_hf_ratio_control_reads_centres_on_another_image(model):
    vertical, horizontal = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    vertical[..., 16:] = 1.0  # an edge along the column x = 16
    horizontal[..., 16:, :] = 1.0  # an edge along the row y = 16
    # A layout that follows each photo: its Gaussians sit on that photo's edge.
    follows = GaussianStats()
    follows.add(model, vertical, _edge_gaussians("u"))
    follows.add(model, horizontal, _edge_gaussians("v"))
    out = follows.summary()
    own, other = out["hf_ratio"]["per_image_mean"], out["hf_ratio_other_image"]["per_image_mean"]
    assert own > 5.0 and other < 2.0  # on another photo the line crosses its edge once
    test = out["hf_ratio_own_vs_other"]
    assert test["n"] == 2 and test["mean_diff"] == pytest.approx(own - other)
    assert test["a_better_fraction"] == 1.0
    # A fixed layout on two copies of one photo: the control equals the measure exactly.
    fixed = GaussianStats()
    for _ in range(2):
        fixed.add(model, vertical, _edge_gaussians("u"))
    out = fixed.summary()
    assert out["hf_ratio_own_vs_other"]["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    # One image has no other photo: no control, and nothing breaks.
    one = GaussianStats()
    one.add(model, vertical, _edge_gaussians("u"))
    assert "hf_ratio_other_image" not in one.summary()


def test_layout_dependence_separates_fixed_from_image_driven_layouts():
    rng = np.random.default_rng(0)
    k, n = 32, 6
    base = rng.normal(size=k)
    grid = rng.uniform(0, 32, (k, 2))
    # The same layout in every image, up to a tiny jitter: the depth order agrees fully.
    fixed = layout_dependence(base + 1e-6 * rng.normal(size=(n, k)),
                              grid + 1e-3 * rng.normal(size=(n, k, 2)))  # fmt: skip
    assert fixed["depth_order_agreement"] == pytest.approx(1.0, abs=1e-6)
    assert fixed["centre_px"]["across_images"] < 0.01 < 5 < fixed["centre_px"]["within_image"]
    # Every image its own order: agreement near 0.
    free = layout_dependence(rng.normal(size=(n, k)), rng.uniform(0, 32, (n, k, 2)))
    assert abs(free["depth_order_agreement"]) < 0.2
    assert free["centre_px"]["across_images"] > 5
    # Reversed order in half the images: of the 15 pairs, 2 * C(3, 2) = 6 within a half agree
    # (+1) and 9 across the halves disagree (-1): mean -0.2.
    flip = np.stack([base if i % 2 else -base for i in range(n)])
    assert layout_dependence(flip, np.zeros((n, k, 2)))["depth_order_agreement"] == (
        pytest.approx(-0.2)
    )


# --- PLY ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["pinhole", "gmae"])
def test_ply_round_trip_re_renders_the_same_image(tmp_path, model, gaussians, frame):
    g = Gaussians(*(t[:1] for t in vars(gaussians).values()))
    path = write_ply(tmp_path / "g.ply", g.means[0], g.scales[0], g.quats[0], g.colors[0],
                     g.opacities[0], frame=frame)  # fmt: skip
    data, meta = read_ply_arrays(path)
    assert list(data.dtype.names) == PROPERTIES and data.dtype["x"] == np.dtype("<f4")
    assert meta["gmae_frame"] == frame and len(data) == 16
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    np.testing.assert_allclose(data["f_dc_0"] * SH_C0 + 0.5, g.colors[0, :, 0], atol=1e-6)
    back = read_ply(path)
    for name in ("means", "scales", "quats", "colors", "opacities"):
        torch.testing.assert_close(getattr(back, name), getattr(g, name), atol=2e-6, rtol=2e-6)
    a = model.render_gaussians(g, 24, 24).image
    b = model.render_gaussians(back, 24, 24).image
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_ply_pinhole_frame_matches_a_pinhole_camera(tmp_path, model):
    # The documented viewing camera: pinhole at distance 8, focal 8 W / 2.
    g = two_layer_scene()
    path = write_ply(tmp_path / "s.ply", *(t[0] for t in vars(g).values()), frame="pinhole")
    data, _ = read_ply_arrays(path)
    means = torch.from_numpy(np.stack([data["x"], data["y"], data["z"]], -1))[None]
    scales = torch.from_numpy(np.exp(np.stack([data[f"scale_{i}"] for i in range(3)], -1)))[None]
    w = 32
    cam = Camera(mode="pinhole", height=w, width=w, fx=8 * w / 2, fy=8 * w / 2)
    viewer = render(means, scales, g.quats, g.colors, g.opacities, cam).image
    ours = model.render_gaussians(g, w, w).image
    diff = (viewer - ours).abs()
    assert diff.mean() < 1e-3 and diff.max() < 1e-2


def test_ply_reader_errors(tmp_path):
    with pytest.raises(GmaeError, match="not found"):
        read_ply(tmp_path / "none.ply")
    (tmp_path / "bad.ply").write_bytes(b"hello")
    with pytest.raises(GmaeError, match="not a PLY"):
        read_ply(tmp_path / "bad.ply")
    (tmp_path / "ascii.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(GmaeError, match="binary_little_endian"):
        read_ply(tmp_path / "ascii.ply")


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A GMAE and an MAE checkpoint, a folder of small photos (two sizes) and their masks."""
    root = tmp_path_factory.mktemp("zs")
    save_tiny_checkpoint(root / "gmae.pt", "gmae")
    save_tiny_checkpoint(root / "mae.pt", "mae")
    rng = np.random.default_rng(0)
    for sub in ("images", "masks", "ds/val/a"):
        (root / sub).mkdir(parents=True)
    for i, (h, w) in enumerate([(30, 44), (30, 44), (36, 28)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 20
        Image.fromarray(img).save(root / "images" / f"im{i}.jpg")
        Image.fromarray(img).save(root / "ds/val/a" / f"im{i}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def test_cli_inspect_reports_health(workspace, tmp_path, capsys):
    path = tmp_path / "health.json"
    data = f"imagefolder:{workspace / 'ds'}"
    rc = main(["inspect", "--ckpt", str(workspace / "gmae.pt"), "--data", data,
               "--num-images", "3", "--json", str(path)])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "Gaussian health:" in out and "saturated raw outputs" in out
    assert "Spearman(luminance, depth) per image" in out
    result = json.loads(path.read_text())
    assert -1 <= result["unmasked"]["luminance_depth_rho"] <= 1
    assert result["masked"]["n_images"] == 3 and result["unmasked"]["mask_ratio"] == 0.0
    assert result["masked"]["verdict"] in ("healthy", "degraded", "degenerate")
    assert main(["inspect", "--ckpt", str(workspace / "mae.pt"), "--data",
                 f"imagefolder:{workspace / 'ds'}"]) == 2  # fmt: skip
    assert "needs a GMAE" in capsys.readouterr().err


def test_cli_layers(workspace, tmp_path):
    out = tmp_path / "layers"
    rc = main(["zeroshot", "layers", "--ckpt", str(workspace / "gmae.pt"),
               "--image", str(workspace / "images/im2.jpg"), "--out", str(out),
               "--ks", "0", "4", "8", "--groups", "4"])  # fmt: skip
    assert rc == 0
    html = (out / "index.html").read_text()
    assert html.count("<img") == 5  # first-K, groups alone / cumulative, depth, scatter
    names = sorted(p.name for p in (out / "first_k").iterdir())
    assert names == ["K0000.png", "K0004.png", "K0008.png", "K0016.png"]
    with Image.open(out / "first_k" / "K0016.png") as im:
        assert im.size == (28, 36)  # the photo's own size
    with Image.open(out / "first_k" / "K0000.png") as im:
        assert np.all(np.asarray(im) == 255)  # nothing drawn: white background
    assert len(list((out / "groups").iterdir())) == 8


def test_cli_layers_reads_a_save_pretrained_directory(workspace, tmp_path):
    """--ckpt takes what gmae.from_pretrained takes, as occlusion and eval do."""
    import gmae

    saved = gmae.from_pretrained(workspace / "gmae.pt").save_pretrained(tmp_path / "saved")
    outs = [tmp_path / "from_pt", tmp_path / "from_dir"]
    for ckpt, out in zip([workspace / "gmae.pt", saved], outs, strict=True):
        rc = main(["zeroshot", "layers", "--ckpt", str(ckpt), "--image",
                   str(workspace / "images/im0.jpg"), "--out", str(out), "--ks", "4"])  # fmt: skip
        assert rc == 0
    a, b = ((o / "first_k" / "K0004.png").read_bytes() for o in outs)
    assert a == b  # the same model either way


def test_cli_edges_writes_boundary_pngs(workspace, tmp_path):
    from gmae.evaluate.boundaries import load_prediction

    out = tmp_path / "edges"
    rc = main(["zeroshot", "edges", "--ckpt", str(workspace / "gmae.pt"),
               "--images", str(workspace / "images"), "--out", str(out), "--layers", "2", "4",
               "--baselines", "canny", "sobel", "shuffled", "luminance_order", "--batch-size",
               "2", "--no-progress"])  # fmt: skip
    assert rc == 0
    methods = {"gmae_L2", "gmae_L4", "gmae_combined", "canny", "sobel", "shuffled",
               "luminance_order"}  # fmt: skip
    assert {p.name for p in out.iterdir() if p.is_dir()} == methods
    for m in methods:
        assert sorted(p.name for p in (out / m).iterdir()) == ["im0.png", "im1.png", "im2.png"]
        with Image.open(out / m / "im2.png") as im:
            assert im.size == (28, 36) and im.mode.startswith("I")  # 16-bit grayscale
        pred = load_prediction(out / m / "im0.png")  # what `gmae eval boundaries` reads
        assert pred.shape == (30, 44) and 0 <= pred.min() and pred.max() <= 1
    assert json.loads((out / "settings.json").read_text())["layers"] == [2, 4]
    # The control: photo i carries photo i+1's GMAE map (same size here: unchanged), and the
    # last photo the first one's, resized to its own size.
    combined = {n: load_prediction(out / "gmae_combined" / f"{n}.png") for n in ("im0", "im1")}
    np.testing.assert_allclose(load_prediction(out / "shuffled" / "im0.png"), combined["im1"],
                               atol=1e-4)  # fmt: skip
    assert not np.allclose(load_prediction(out / "shuffled" / "im1.png"), combined["im1"])
    assert load_prediction(out / "shuffled" / "im2.png").shape == (36, 28)


def test_cli_figure_ground_scores_every_method(workspace, tmp_path):
    out, js = tmp_path / "fg", tmp_path / "fg.json"
    rc = main(["zeroshot", "figure-ground", "--ckpt", str(workspace / "gmae.pt"),
               "--images", str(workspace / "images"), "--masks", str(workspace / "masks"),
               "--out", str(out), "--json", str(js), "--mae-ckpt", str(workspace / "mae.pt"),
               "--no-progress"])  # fmt: skip
    assert rc == 0
    scores = json.loads(js.read_text())["scores"]
    assert {"gmae_depth_otsu", "centre_prior", "all_ground", "mae_recon_error"} <= set(scores)
    assert scores["all_ground"]["iou_fg"] == 0.0
    assert scores["all_figure"]["iou_fg"] == pytest.approx(1 / 9, abs=0.03)
    with Image.open(out / "gmae_depth_otsu" / "im0.png") as im:
        assert im.size == (44, 30) and set(np.unique(np.asarray(im))) <= {0, 255}


def test_cli_stats_on_images_and_data_spec(workspace, tmp_path):
    js = tmp_path / "s.json"
    assert main(["zeroshot", "stats", "--ckpt", str(workspace / "gmae.pt"), "--images",
                 str(workspace / "images"), "--json", str(js), "--no-progress"]) == 0  # fmt: skip
    s = json.loads(js.read_text())
    assert s["n_images"] == 3 and -1 <= s["spearman_size_vs_depth"]["scale_gmean"]["pooled"] <= 1
    spec = f"imagefolder:{workspace / 'ds'}"
    assert main(["zeroshot", "stats", "--ckpt", str(workspace / "gmae.pt"), "--data", spec,
                 "--num-images", "2", "--json", str(js), "--no-progress"]) == 0  # fmt: skip
    assert json.loads(js.read_text())["n_images"] == 2


def test_cli_export_gaussians(workspace, tmp_path, capsys):
    out = tmp_path / "g.ply"
    rc = main(["export", "gaussians", "--ckpt", str(workspace / "gmae.pt"),
               "--image", str(workspace / "images/im0.jpg"), "--out", str(out)])  # fmt: skip
    assert rc == 0 and "pinhole camera" in capsys.readouterr().out
    g = read_ply(out)
    assert g.means.shape == (1, 16, 3)
    from gmae.zeroshot.common import load_model, load_photo

    model = load_model(workspace / "gmae.pt", "gmae")
    with torch.no_grad():
        ref = model.predict_gaussians(model_input([load_photo(workspace / "images/im0.jpg")], 32))
    torch.testing.assert_close(g.means, ref.means, atol=1e-5, rtol=1e-5)


def test_cli_export_gaussians_writes_the_3dgs_camera(workspace, tmp_path):
    """cameras.json in the INRIA 3DGS convention (camera_to_JSON: position = camera centre,
    rotation = camera-to-world, COLMAP axes, principal point at the centre): a viewer that
    projects the PLY's centres through it puts them where GMAE draws them on the photo."""
    from gmae.render import project
    from gmae.zeroshot.common import load_model, load_photo

    out, image = tmp_path / "g.ply", workspace / "images/im0.jpg"
    assert main(["export", "gaussians", "--ckpt", str(workspace / "gmae.pt"), "--image",
                 str(image), "--out", str(out)]) == 0  # fmt: skip
    cams = json.loads((tmp_path / "cameras.json").read_text())
    assert len(cams) == 1 and set(cams[0]) == {
        "id", "img_name", "width", "height", "position", "rotation", "fx", "fy"}  # fmt: skip
    cam = cams[0]
    photo = load_photo(image)
    h, w = photo.size
    assert (cam["width"], cam["height"], cam["img_name"]) == (w, h, "im0")

    # The viewer's projection: world -> camera with R_c2w^T (x - position), then the pinhole.
    data, _ = read_ply_arrays(out)
    xyz = np.stack([data["x"], data["y"], data["z"]], -1).astype(np.float64)
    rot, pos = np.asarray(cam["rotation"]), np.asarray(cam["position"])
    pc = (xyz - pos) @ rot  # rows: (R^T (x - pos))^T
    uv = np.stack(
        [cam["fx"] * pc[:, 0] / pc[:, 2] + w / 2, cam["fy"] * pc[:, 1] / pc[:, 2] + h / 2], -1
    )

    model = load_model(workspace / "gmae.pt", "gmae")
    with torch.no_grad():
        g = model.predict_gaussians(model_input([photo], model.img_size))
        ref = project(g.means, g.scales, g.quats, g.opacities, model.camera_at(h, w))
    np.testing.assert_allclose(uv, ref.means2d[0].numpy(), atol=1e-3)
    np.testing.assert_allclose(pc[:, 2], ref.depths[0].numpy(), rtol=1e-5)

    # --cameras names the file; the gmae frame has no pinhole camera, so none is written.
    other = tmp_path / "cams" / "view.json"
    assert main(["export", "gaussians", "--ckpt", str(workspace / "gmae.pt"), "--image",
                 str(image), "--out", str(out), "--cameras", str(other)]) == 0  # fmt: skip
    assert json.loads(other.read_text()) == cams
    (tmp_path / "cameras.json").unlink()
    assert main(["export", "gaussians", "--ckpt", str(workspace / "gmae.pt"), "--image",
                 str(image), "--out", str(out), "--frame", "gmae"]) == 0  # fmt: skip
    assert not (tmp_path / "cameras.json").exists()


def test_cli_reads_compact_safetensors_checkpoints(workspace, tmp_path):
    pytest.importorskip("gmae.export.checkpoints")
    st = tmp_path / "gmae.safetensors"
    assert (
        main(["export", "checkpoint", "--ckpt", str(workspace / "gmae.pt"), "--out", str(st)]) == 0
    )
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    for ck, out in ((workspace / "gmae.pt", a), (st, b)):
        assert main(["export", "gaussians", "--ckpt", str(ck), "--image",
                     str(workspace / "images/im1.jpg"), "--out", str(out)]) == 0  # fmt: skip
    assert a.read_bytes() == b.read_bytes()


def test_cli_errors(workspace, tmp_path, capsys):
    ck = str(workspace / "gmae.pt")
    cases = [
        (["zeroshot", "layers", "--ckpt", ck, "--image", str(tmp_path / "no.jpg"),
          "--out", str(tmp_path / "o")], "no.jpg not found"),
        (["zeroshot", "layers", "--ckpt", str(tmp_path / "no.pt"), "--image",
          str(workspace / "images/im0.jpg"), "--out", str(tmp_path / "o")], "no.pt not found"),
        (["zeroshot", "edges", "--ckpt", str(workspace / "mae.pt"), "--images",
          str(workspace / "images"), "--out", str(tmp_path / "o")], "needs a GMAE"),
        (["zeroshot", "edges", "--ckpt", ck, "--images", str(tmp_path), "--out",
          str(tmp_path / "o")], "no images"),
        (["zeroshot", "edges", "--ckpt", ck, "--images", str(workspace / "images"),
          "--out", str(tmp_path / "o"), "--layers", "64", "--no-progress"], "groups"),
        (["zeroshot", "figure-ground", "--ckpt", ck, "--images", str(workspace / "images"),
          "--masks", str(tmp_path), "--out", str(tmp_path / "o")], "no mask for image"),
        (["export", "gaussians", "--ckpt", ck, "--image", str(tmp_path / "x.png"),
          "--out", str(tmp_path / "x.ply")], "x.png not found"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("gmae: error:") and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


def test_list_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg"]
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(GmaeError, match="several images named a"):
        list_images(tmp_path)


# --- order ablation ---------------------------------------------------------------------------


def test_composite_in_order_reproduces_the_model_and_follows_the_key(model, gaussians):
    from gmae.zeroshot.order import composite_in_order

    s = model.img_size
    with torch.no_grad():
        proj = model.project_gaussians(gaussians, s, s)
        own = composite_in_order(model, proj, gaussians.colors, proj.depths)
        ref = model.render_gaussians(gaussians, s, s, return_depth=False).image
    assert torch.allclose(own, ref, atol=1e-5)
    # Two opaque discs at one place: red in front of blue by depth; the key decides who shows.
    red = grid_layer(1, 1, (-0.4, 0.4), (-0.4, 0.4), -1.0, [1.0] * 3, [1.0, 0, 0], 0.99)
    blue = grid_layer(1, 1, (-0.4, 0.4), (-0.4, 0.4), 1.0, [1.0] * 3, [0, 0, 1.0], 0.99)
    g = scene(red, blue)
    proj = model.project_gaussians(g, s, s)
    by_depth = composite_in_order(model, proj, g.colors, proj.depths)
    flipped = composite_in_order(model, proj, g.colors, -proj.depths)
    centre = (slice(None), s // 2, s // 2)
    assert by_depth[0][centre][0] > 0.9 and by_depth[0][centre][2] < 0.1  # red in front
    assert flipped[0][centre][2] > 0.9 and flipped[0][centre][0] < 0.1  # blue in front
    with pytest.raises(GmaeError, match="sort key"):
        composite_in_order(model, proj, g.colors, proj.depths[:, :1])


def test_pixel_mask_matches_the_models_mask_image(model):
    from gmae.zeroshot.order import pixel_mask

    x = torch.rand(2, 3, 32, 32)
    noise = torch.rand(2, model.encoder.num_patches, generator=torch.Generator().manual_seed(3))
    out = model(x, 0.75, noise)
    rec = model.reconstruct(x, mask_ratio=0.75, noise=noise)
    assert torch.equal(pixel_mask(out.mask, model.patch_size), rec["mask_image"][:, 0] > 0.5)
    with pytest.raises(GmaeError, match="square"):
        pixel_mask(torch.zeros(1, 8), 4)


def test_order_ablation_scores_each_order_against_the_model(model):
    from gmae.zeroshot.order import ORDERS, format_table, order_ablation

    torch.manual_seed(5)
    batches = [torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32)]
    r = order_ablation(model, batches, [0.5, 0.0], seed=1)
    assert r["orders"] == list(ORDERS) and r["n_images"] == 5
    masked, unmasked = r["results"]
    assert masked["model_order_vs_model_render_max_abs"] < 1e-5
    assert "masked_psnr" in masked and "masked_psnr" not in unmasked
    block = masked["masked_psnr"]
    worth = block["order_worth_db"]
    assert worth == pytest.approx(
        block["orders"]["model"]["mean"] - block["orders"]["random"]["mean"]
    )
    assert len(block["images"]["fixed"]) == 5
    rnd = block["orders"]["random"]
    assert rnd["model_minus_this"]["n"] == 5
    assert rnd["model_minus_this"]["mean_diff"] == pytest.approx(worth)
    if worth > 0:
        assert rnd["recovered"] == pytest.approx(0.0, abs=1e-12)
    # The floor: the background alone (white for this model), whole-image PSNR at mask 0.
    imgs = torch.cat(batches)
    floor = [float(-10 * torch.log10(((x - 1.0) ** 2).mean())) for x in imgs]
    assert unmasked["psnr"]["background_only"] == pytest.approx(np.mean(floor), abs=1e-4)
    added = unmasked["psnr"]["orders"]["model"]["mean"] - np.mean(floor)
    share = unmasked["psnr"]["order_share"]
    assert (
        share is None
        if added <= 0
        else share == pytest.approx(unmasked["psnr"]["order_worth_db"] / added, abs=1e-4)
    )
    # Same seed, same masks and random orders: the same numbers.
    again = order_ablation(model, batches, [0.5, 0.0], seed=1)
    assert again["results"][0]["masked_psnr"]["images"] == block["images"]
    assert "order is worth" in format_table(r) and "luminance_reversed" in format_table(r)
    with pytest.raises(GmaeError, match="mask ratio"):
        order_ablation(model, batches, [1.0])
    with pytest.raises(GmaeError, match="at least 2 images, got 0"):
        order_ablation(model, [], [0.5])
    with pytest.raises(GmaeError, match="at least 2 images, got 1"):  # before any prediction
        order_ablation(model, [torch.rand(1, 3, 32, 32)], [0.5])


def test_cli_order(workspace, tmp_path, capsys):
    js = tmp_path / "order.json"
    spec = f"imagefolder:{workspace / 'ds'}"
    rc = main(["zeroshot", "order", "--ckpt", str(workspace / "gmae.pt"), "--data", spec,
               "--num-images", "3", "--json", str(js), "--no-progress"])  # fmt: skip
    assert rc == 0
    r = json.loads(js.read_text())
    assert r["n_images"] == 3 and [x["mask_ratio"] for x in r["results"]] == [0.75, 0.0]
    assert r["health"]["verdict"] in ("healthy", "degraded", "degenerate")  # like every command
    assert "the order is worth" in capsys.readouterr().out
    rc = main(["zeroshot", "order", "--ckpt", str(workspace / "gmae.pt"), "--images",
               str(workspace / "images"), "--json", str(tmp_path)])  # fmt: skip
    assert rc != 0 and "is a directory" in capsys.readouterr().err
    # bad arguments fail in one line before the checkpoint is even read (it does not exist)
    missing = str(tmp_path / "no.pt")
    for extra, message in (
        (["--mask-ratios", "0.75", "1.0"], "mask ratio must be in [0, 1), got 1.0"),
        (["--num-images", "1"], "needs at least 2 images"),
    ):
        rc = main(["zeroshot", "order", "--ckpt", missing, "--data", spec, "--json",
                   str(tmp_path / "x.json"), *extra])  # fmt: skip
        err = capsys.readouterr().err
        assert rc != 0 and message in err and "no.pt" not in err
    with pytest.raises(SystemExit):
        main(["zeroshot", "order", "--ckpt", missing, "--data", spec, "--json",
              str(tmp_path / "x.json"), "--batch-size", "0"])  # fmt: skip
    assert "--batch-size: must be at least 1, got 0" in capsys.readouterr().err
    one = tmp_path / "one_photo"
    one.mkdir()
    first = sorted((workspace / "images").iterdir())[0]
    (one / first.name).write_bytes(first.read_bytes())
    rc = main(["zeroshot", "order", "--ckpt", str(workspace / "gmae.pt"), "--images", str(one),
               "--json", str(tmp_path / "x.json")])  # fmt: skip
    assert rc != 0 and "needs at least 2 photos" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_shown_recovered_only_where_the_order_is_worth_something():
    from gmae.zeroshot.order import shown_recovered

    def block(lo):
        rnd = {"model_minus_this": {"ci": [lo, lo + 0.1]}, "recovered": 0.0}
        return {"orders": {"random": rnd, "fixed": {"recovered": 0.9}}}

    assert shown_recovered(block(0.02), "fixed") == 0.9
    assert shown_recovered(block(-0.01), "fixed") is None


def test_evenly_spaced_images_spreads_over_classes_and_clamps(folder):
    """evenly_spaced_images: one batch squashed to the model's size, evenly spaced over the
    split (the first and last image of a sorted ImageFolder, so both classes), at most the
    split's size; an unknown data set is one GmaeError naming it."""
    from gmae.zeroshot.stats import evenly_spaced_images

    def expected(cls: str, i: int) -> torch.Tensor:
        pixels = np.asarray(Image.open(folder / "train" / cls / f"{i}.png").convert("RGB"))
        return model_input([Photo("x", pixels)], 16)[0]

    x = evenly_spaced_images(f"imagefolder:{folder}", "train", 16, 2)
    assert x.shape == (2, 3, 16, 16)
    assert torch.equal(x[0], expected("cat", 0)) and torch.equal(x[1], expected("dog", 5))
    assert evenly_spaced_images(f"imagefolder:{folder}", "val", 16, 99).shape[0] == 4
    with pytest.raises(GmaeError, match="nope"):
        evenly_spaced_images("nope", "val", 16, 2)
