"""Gaussian health statistics, the saturation guard, the head init and ``gmae inspect``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gmae.errors import GmaeError
from gmae.models import create_model
from gmae.models.gmae import saturation_penalty
from gmae.models.health import (
    CHECKS,
    centre_pixels,
    detail_at_centres,
    flat_scalars,
    gaussian_health,
    gaussian_luminance,
    luminance_depth_correlation,
    verdict,
)

TINY = dict(
    encoder="tiny", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_dim=32, decoder_depth=1, decoder_num_heads=2, num_gaussians=16,
)  # fmt: skip


def tiny_gmae(**kw):
    torch.manual_seed(0)
    return create_model("gmae", **{**TINY, **kw}).eval()


def collapse(model) -> None:
    """Every query token identical, raw scale +10 and raw z -10: the saturation collapse."""
    with torch.no_grad():
        model.decoder_norm.weight.zero_()
        model.decoder_norm.bias.fill_(1.0)
        w = model.head.proj.weight
        w.zero_()
        d = w.shape[1]
        w[3:6] = 10.0 / d  # scales at the cap
        w[2] = -10.0 / d  # z at the near bound
        w[13] = 3.0 / d  # opaque


def test_saturation_penalty_is_zero_inside_the_bound_and_pulls_back_outside():
    raw = torch.zeros(2, 5, 14)
    raw[..., 2] = 3.9  # z inside the bound
    raw[..., 0] = 50.0  # centre x: not guarded
    assert saturation_penalty(raw, 4.0) == 0
    raw = raw.clone().requires_grad_(True)
    with torch.no_grad():
        raw[0, 0, 4] = 6.0  # one scale 2 past the bound
        raw[1, 1, 2] = -7.0  # one z 3 past the bound, on the negative side
    loss = saturation_penalty(raw, 4.0)
    assert loss.item() == pytest.approx((2.0**2 + 3.0**2) / (2 * 5 * 4))
    loss.backward()
    assert raw.grad[0, 0, 4] > 0 and raw.grad[1, 1, 2] < 0  # gradient descent moves them inwards
    assert raw.grad[..., 0].abs().sum() == 0


def test_guard_enters_the_loss_only_when_on():
    imgs = torch.rand(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    off, on = tiny_gmae(), tiny_gmae(raw_penalty=1.0, raw_bound=0.5)
    a, b = off(imgs, noise=noise), on(imgs, noise=noise)
    assert torch.equal(a.raw, b.raw)
    extra = saturation_penalty(b.raw, 0.5)
    assert extra > 0 and b.loss.item() == pytest.approx(a.loss.item() + extra.item(), rel=1e-5)


def test_head_init_torch_starts_further_from_the_tails():
    x = torch.randn(4096, 128)
    raw = {}
    for init in ("xavier", "torch"):
        m = create_model("gmae", **{**TINY, "decoder_dim": 128, "decoder_num_heads": 4,
                                    "head_init": init})  # fmt: skip
        raw[init] = m.head.proj(x).std().item()
    # xavier std sqrt(2 / (128 + 14)) vs kaiming-uniform(a=sqrt 5) 1 / sqrt(3 * 128)
    assert raw["xavier"] == pytest.approx(math.sqrt(128 * 2 / 142), rel=0.1)
    assert raw["torch"] == pytest.approx(math.sqrt(128 / (3 * 128)), rel=0.1)


def test_query_init_sets_the_strength_of_each_querys_identity():
    uniform, normal = tiny_gmae(), tiny_gmae(query_init="normal")
    assert uniform.query_embed.min() >= 0 and uniform.query_embed.mean().item() == pytest.approx(
        0.5, abs=0.05
    )
    assert normal.query_embed.std().item() == pytest.approx(0.02, rel=0.15)
    assert normal.query_embed.mean().abs().item() < 0.005


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(head_init="zeros"), "head_init"),
        (dict(raw_bound=0.0), "raw_bound"),
        (dict(raw_penalty=-1.0), "raw_penalty"),
        (dict(query_init="zeros"), "query_init"),
    ],
)
def test_guard_options_are_checked(kw, match):
    with pytest.raises(GmaeError, match=match):
        tiny_gmae(**kw)


def test_health_of_a_collapsed_model_is_degenerate():
    m = tiny_gmae()
    collapse(m)
    h = gaussian_health(m, torch.rand(6, 3, 32, 32))
    assert h["saturation"]["scale"] == 1.0 and h["saturation"]["z"] == 1.0
    assert h["saturation"]["colour"] == 0.0
    assert h["pinned_size"] == 1.0 and h["pinned_z"] == 1.0
    assert h["z_std_within"] < 1e-6
    assert h["screen_std_px"]["median"] == pytest.approx(h["screen_std_px"]["cap"], rel=0.02)
    assert h["layout"]["centre_px"]["across_images"] < 1e-4  # the same layout in every image
    assert h["verdict"] == "degenerate"
    assert any(f.startswith("sizes pinned") for f in h["failed"])
    scalars = flat_scalars(h)
    assert scalars["health/pinned_size"] == 1.0 and scalars["health/healthy"] == 0.0


def test_health_of_a_fresh_model_and_its_statistics():
    m = tiny_gmae(head_init="torch")
    imgs = torch.rand(8, 3, 32, 32)
    h = gaussian_health(m, imgs)
    assert h["n_images"] == 8 and h["n_gaussians"] == 16
    assert h["mask_ratio"] == pytest.approx(0.75)
    assert h["pinned_size"] == 0.0 and h["pinned_z"] == 0.0
    assert 0 < h["alpha_coverage"]["mean"] < 1
    m_c = h["masked_centres"]
    assert 0 <= m_c["fraction"] <= 1 and m_c["stderr"] > 0
    assert h["verdict"] != "degenerate"
    # At mask ratio 0 no patch is masked: the masked-fraction check cannot apply.
    h0 = gaussian_health(m, imgs, mask_ratio=0.0)
    assert h0["masked_centres"]["chance"] == 0.0
    assert not any("mask" in f for f in h0["failed"])


def test_detail_at_centres_tells_a_layout_that_follows_the_image_from_a_fixed_one():
    import numpy as np

    grads = [np.zeros((16, 16)), np.zeros((16, 16))]
    grads[0][:, 8] = 1.0  # image 0: an edge down column 8
    grads[1][8, :] = 1.0  # image 1: an edge along row 8
    column = np.stack([np.full(8, 8.5), np.arange(8) + 4.5], -1)  # (u, v) on column 8
    row = column[:, ::-1].copy()  # on row 8
    assert centre_pixels(np.array([[8.5, 3.2], [-0.1, 2.0], [3.0, 16.0]]), 16, 16) == ([3], [8])
    # Each image's centres on its own edge: 16x the mean there, once-crossing on the other.
    own, other = detail_at_centres(grads, [centre_pixels(column, 16, 16),
                                           centre_pixels(row, 16, 16)])  # fmt: skip
    assert own == pytest.approx([16.0, 16.0]) and other == pytest.approx([2.0, 2.0])
    # One fixed layout on two images: own and other swap, the mean gain is zero.
    own, other = detail_at_centres(grads, [centre_pixels(column, 16, 16)] * 2)
    assert (own - other).mean() == pytest.approx(0.0)
    # One image has no other; no centre inside gives nan, not an error.
    own, other = detail_at_centres(grads[:1], [centre_pixels(column, 16, 16)])
    assert own[0] == pytest.approx(16.0) and math.isnan(other[0])
    empty = centre_pixels(np.array([[-5.0, -5.0]]), 16, 16)
    assert all(math.isnan(x[0]) for x in detail_at_centres(grads, [empty, empty]))


def test_health_reports_detail_at_centres():
    m = tiny_gmae(head_init="torch")
    h = gaussian_health(m, torch.rand(6, 3, 32, 32))
    d = h["layout"]["detail_at_centres"]
    assert d["own"] > 0 and d["other_image"] > 0
    assert flat_scalars(h)["health/detail_gain"] == pytest.approx(d["own"] - d["other_image"])


def test_luminance_depth_correlation_tells_a_brightness_code():
    import numpy as np
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    depth = rng.random((4, 32))
    # Brightest nearest in every image: rho = -1; unrelated: about 0 (each equals scipy's).
    assert luminance_depth_correlation(1.0 - depth, depth) == pytest.approx(-1.0)
    lum = rng.random((4, 32))
    expected = np.mean([spearmanr(a, b).statistic for a, b in zip(lum, depth)])
    assert luminance_depth_correlation(lum, depth) == pytest.approx(expected)
    assert abs(expected) < 0.3
    # A constant image is skipped; all constant gives nan.
    lum[0] = 0.5
    rest = np.mean([spearmanr(a, b).statistic for a, b in zip(lum[1:], depth[1:])])
    assert luminance_depth_correlation(lum, depth) == pytest.approx(rest)
    assert math.isnan(luminance_depth_correlation(np.ones((2, 5)), depth[:2, :5]))
    grey = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert gaussian_luminance(grey)[0].tolist() == pytest.approx([1.0, 0.0, 0.7154])
    with pytest.raises(GmaeError, match="RGB"):
        gaussian_luminance(torch.rand(1, 3, 2))


def test_health_reports_luminance_depth_rho():
    m = tiny_gmae(head_init="torch")
    h = gaussian_health(m, torch.rand(4, 3, 32, 32))
    assert -1.0 <= h["luminance_depth_rho"] <= 1.0
    assert flat_scalars(h)["health/luminance_depth_rho"] == pytest.approx(h["luminance_depth_rho"])


def test_verdict_thresholds():
    good = {
        "pinned_size": 0.0, "pinned_z": 0.01, "screen_p90_p10": 2.0, "z_std_within": 0.2,
        "layout": {"centre_ratio": 0.5},
        "masked_centres": {"fraction": 0.6, "chance": 0.75, "z": -8.0},
    }  # fmt: skip
    assert verdict(good) == ("healthy", [])
    for check in CHECKS:  # each acceptance check fails on its own
        bad = json.loads(json.dumps(good))
        target = bad
        *path, last = check.key.split(".")
        for p in path:
            target = target[p]
        target[last] = check.bound + (0.01 if check.op == "<" else -0.01)
        state, failed = verdict(bad)
        assert state in ("degraded", "degenerate") and failed, check.name
    chance = {**good, "masked_centres": {"fraction": 0.74, "chance": 0.75, "z": -1.0}}
    assert verdict(chance)[0] == "degraded"
    one_image = {**good, "layout": {"centre_ratio": float("nan")}}  # not measured: no verdict
    assert verdict(one_image)[0] == "healthy"


def test_zero_shot_commands_warn_about_a_degenerate_checkpoint(tmp_path, capsys):
    import numpy as np

    from gmae.zeroshot.common import Photo, check_health

    m = tiny_gmae()
    collapse(m)
    rng = np.random.default_rng(0)
    photos = [Photo(str(i), rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)) for i in range(4)]
    assert check_health(m, photos)["verdict"] == "degenerate"
    err = capsys.readouterr().err
    assert "WARNING: this checkpoint is degenerate" in err and "sizes pinned" in err


def test_grid_anchors_are_cell_centres_inside_the_image():
    from gmae.models.gmae import grid_anchors

    a = grid_anchors(256)
    assert a.shape == (256, 2) and a.abs().max() < 1
    assert torch.unique(a, dim=0).shape[0] == 256
    torch.testing.assert_close(a[:16, 0], (torch.arange(16) + 0.5) / 16 * 2 - 1)  # first row
    assert torch.all(a[:16, 1] == a[0, 1]) and a[16, 1] > a[0, 1]  # row-major, y down
    b = grid_anchors(6)  # not a square: 3 columns, 2 rows
    assert sorted(set(b[:, 0].tolist())) == pytest.approx([-2 / 3, 0.0, 2 / 3])
    assert sorted(set(b[:, 1].tolist())) == [-0.5, 0.5]


def test_anchored_centres_stay_within_range_of_their_grid_point():
    free, anchored = tiny_gmae(), tiny_gmae(query_anchor="grid", anchor_range=0.2)
    raw = torch.randn(2, 16, 14) * 20  # saturating
    g, h = free.head.activate(raw), anchored.head.activate(raw)
    offset = h.means[..., :2] - anchored.head.anchors
    assert offset.abs().max() <= 0.2 + 1e-6 and offset.abs().max() > 0.19
    torch.testing.assert_close(h.means[..., 2], g.means[..., 2])  # depth: the paper's map
    for name in ("scales", "quats", "colors", "opacities"):
        assert torch.equal(getattr(h, name), getattr(g, name))
    zero = anchored.head.activate(torch.zeros(1, 16, 14))
    torch.testing.assert_close(zero.means[0, :, :2], anchored.head.anchors)
    raw.requires_grad_(True)
    anchored.head.activate(raw).means.sum().backward()
    assert raw.grad[..., :3].abs().sum() > 0


def test_anchored_query_carries_the_embedding_of_the_patch_it_sits_on():
    # 16 queries on a 32 px image of 4 x 4 patches: each grid point is a patch centre, so its
    # sin-cos embedding is that patch's row of the decoder's position table.
    m = tiny_gmae(query_anchor="grid")
    torch.testing.assert_close(m.query_pos_embed, m.decoder_pos_embed[:, 1:])
    latent, _, ids_restore = m.encode(torch.rand(2, 3, 32, 32))
    queries = m.decoder_tokens(latent, ids_restore)[:, -16:]
    torch.testing.assert_close(queries[0], (m.query_token + m.query_embed + m.query_pos_embed)[0])
    assert tiny_gmae().query_pos_embed is None  # the paper's queries: no spatial prior


def test_anchored_model_round_trips_a_compact_checkpoint(tmp_path):
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.train.config import config_from_dict

    m = tiny_gmae(query_anchor="grid", anchor_range=0.3)
    assert set(m.state_dict()) == set(tiny_gmae().state_dict())  # the anchors are not stored
    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.query_anchor == "grid" and loaded.head.anchor_range == 0.3
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    torch.testing.assert_close(loaded(imgs, noise=noise).pred, m(imgs, noise=noise).pred)


@pytest.mark.parametrize(
    "kw, match", [(dict(query_anchor="patch"), "query_anchor"), (dict(anchor_range=0), "anchor")]
)
def test_anchor_options_are_checked(kw, match):
    with pytest.raises(GmaeError, match=match):
        tiny_gmae(**kw)


def test_attending_query_lands_on_the_visible_patch_it_points_to():
    """query_anchor="attend": with the head's centre output at zero, each centre is the
    attention-weighted mean of the visible patches' centres; attention that picks one patch puts
    the Gaussian on that patch's centre, and moving the content moves the Gaussian."""
    from gmae.models.gmae import grid_anchors

    m = tiny_gmae(query_anchor="attend", query_init="normal")
    assert m.pointer is not None and m.query_pos_embed is None and m.head.anchors is None
    torch.testing.assert_close(m.patch_xy, grid_anchors(16))  # 4 x 4 patch centres
    with torch.no_grad():
        m.head.proj.weight[0:2].zero_()  # no offset: the centre is the pointed point
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, _, ids_restore = m.encode(imgs, noise=noise)
    features = m.decoder_features(latent, ids_restore)
    k, vis = 16, features[:, 1:-16]
    weights = m.pointer.weights(features[:, -k:], vis)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, k))
    ids_keep = torch.argsort(ids_restore, dim=1)[:, : vis.shape[1]]
    expected = weights @ m.patch_xy[ids_keep]
    means = m.forward_decoder(latent, ids_restore).means
    torch.testing.assert_close(means[..., :2], expected, atol=1e-5, rtol=1e-5)
    assert (means[..., :2] - means[..., :2].mean(1, keepdim=True)).abs().max() > 0  # not all one

    # Sharp attention on one visible patch: the query sits on that patch's centre.
    torch.testing.assert_close(
        m.pointer(features[:, -k:], vis * 0, m.patch_xy[ids_keep]).sigmoid() * 2 - 1,
        m.patch_xy[ids_keep].mean(1, keepdim=True).expand(-1, k, -1),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip
    with torch.no_grad():
        m.pointer.q.weight.copy_(torch.eye(32) * 50)
        m.pointer.k.weight.copy_(torch.eye(32))
    onehot = torch.zeros_like(vis)
    onehot[:, 2] = 1.0  # visible token 2 is the only one a query can align with
    queries = torch.ones(2, k, 32)
    pointed = m.pointer(queries, onehot, m.patch_xy[ids_keep]).sigmoid() * 2 - 1
    torch.testing.assert_close(pointed, m.patch_xy[ids_keep][:, 2:3].expand(-1, k, -1),
                               atol=1e-4, rtol=0)  # fmt: skip

    m = tiny_gmae(query_anchor="attend").train()  # trains end to end: the loss reaches it
    m(imgs, noise=noise).loss.backward()
    assert m.pointer.q.weight.grad.abs().sum() > 0 and m.pointer.k.weight.grad.abs().sum() > 0


def test_attending_model_round_trips_a_compact_checkpoint(tmp_path):
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.train.config import config_from_dict

    m = tiny_gmae(query_anchor="attend")
    added = set(m.state_dict()) - set(tiny_gmae().state_dict())
    assert added == {"pointer.q.weight", "pointer.k.weight"}  # the patch centres are not stored
    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.query_anchor == "attend"
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    torch.testing.assert_close(loaded(imgs, noise=noise).pred, m(imgs, noise=noise).pred)


def test_attend_all_can_point_at_a_masked_patch_by_its_place(tmp_path):
    """query_anchor="attend_all": the pointer's keys are the visible patches' features and, for
    each masked patch, one learned token plus its decoder position embedding; a query that
    matches that embedding lands on the masked patch's centre. At mask 0 it is ``attend``."""
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.train.config import config_from_dict

    m = tiny_gmae(query_anchor="attend_all", query_init="normal")
    added = set(m.state_dict()) - set(tiny_gmae().state_dict())
    assert added == {"pointer.q.weight", "pointer.k.weight", "pointer.mask_key"}
    assert "pointer.mask_key" in m.no_weight_decay()
    assert m.pointer.mask_key.abs().max() > 0  # drawn, not left at zero
    with torch.no_grad():
        m.head.proj.weight[0:2].zero_()  # no offset: the centre is the pointed point
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, mask, ids_restore = m.encode(imgs, noise=noise)
    features = m.decoder_features(latent, ids_restore)
    k, vis = 16, features[:, 1:-16]
    order = torch.argsort(ids_restore, dim=1)  # visible patches first, then the masked ones
    masked = order[:, vis.shape[1] :]
    assert bool((mask.gather(1, masked) == 1).all())
    place = m.decoder_pos_embed[0, 1:][masked]
    keys = torch.cat([vis, m.pointer.mask_key + place], dim=1)
    expected = m.pointer.weights(features[:, -k:], keys) @ m.patch_xy[order]
    means = m.forward_decoder(latent, ids_restore).means
    torch.testing.assert_close(means[..., :2], expected, atol=1e-5, rtol=1e-5)
    # The masked patches take part of every query's attention from the start.
    assert m.pointer.weights(features[:, -k:], keys)[..., vis.shape[1] :].sum(-1).min() > 0

    # A query that carries a masked patch's embedding, sharply, lands on that masked patch.
    with torch.no_grad():
        m.pointer.k.weight.copy_(torch.eye(32))
        m.pointer.mask_key.zero_()
        m.pointer.q.weight.copy_(torch.eye(32) * 400)
    target = masked[:, :1]  # [B, 1]: the first masked patch of each image
    queries = m.decoder_pos_embed[0, 1:][target].expand(-1, k, -1)
    features = torch.cat([features[:, :1], features[:, 1:-k] * 0, queries], dim=1)
    pointed = m.pointed_centres(features, ids_restore).sigmoid() * 2 - 1
    torch.testing.assert_close(pointed, m.patch_xy[target].expand(-1, k, -1), atol=1e-3, rtol=0)

    # At mask 0 there is nothing masked to point at: the same as attend's pointer.
    attend = tiny_gmae(query_anchor="attend", query_init="normal")
    attend.load_state_dict({n: v for n, v in m.state_dict().items() if n != "pointer.mask_key"})
    latent0, _, ids0 = m.encode(imgs, noise=noise, mask_ratio=0.0)
    torch.testing.assert_close(
        m.forward_decoder(latent0, ids0).means, attend.forward_decoder(latent0, ids0).means
    )

    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.query_anchor == "attend_all"
    torch.testing.assert_close(loaded(imgs, noise=noise).pred, m(imgs, noise=noise).pred)
    fresh = tiny_gmae(query_anchor="attend_all").train()
    fresh(imgs, noise=noise).loss.backward()
    assert fresh.pointer.mask_key.grad.abs().sum() > 0  # the loss reaches the masked keys


def test_attend_grid_queries_carry_the_grid_embedding_but_no_bound():
    """query_anchor="attend_grid": the grid model's query tokens, attend's unbounded centres."""
    grid = tiny_gmae(query_anchor="grid", query_init="normal")
    m = tiny_gmae(query_anchor="attend_grid", query_init="normal")
    torch.testing.assert_close(m.query_pos_embed, grid.query_pos_embed)
    assert m.head.anchors is None and m.pointer is not None and m.pointer.mask_key is None
    with torch.no_grad():
        m.head.proj.weight[0:2].zero_()  # no offset: the centre is the pointed point
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, _, ids_restore = m.encode(imgs, noise=noise)
    tokens = m.decoder_tokens(latent, ids_restore)
    torch.testing.assert_close(tokens[:, -16:], (m.query_token + m.query_embed + m.query_pos_embed)
                               .expand(2, -1, -1))  # fmt: skip
    features = m.decoder_features(latent, ids_restore)
    vis = features[:, 1:-16]
    ids_keep = torch.argsort(ids_restore, dim=1)[:, : vis.shape[1]]
    expected = m.pointer.weights(features[:, -16:], vis) @ m.patch_xy[ids_keep]
    raw = m.forward_decoder_raw(latent, ids_restore)
    torch.testing.assert_close(m.head.activate(raw).means[..., :2], expected, atol=1e-5, rtol=1e-5)
    # No bound: a large raw x offset carries every centre to the right edge, past any anchor's
    # anchor_range (the grid model's x stays within its anchor +- 0.25).
    far = raw.clone()
    far[..., 0] += 20.0
    assert bool((m.head.activate(far).means[..., 0] > 0.99).all())
    assert bool((grid.head.activate(far).means[..., 0] < 0.99).any())


@pytest.mark.parametrize("detach", [False, True])
def test_pointer_detach_stops_the_pointers_gradient_at_the_decoder_features(detach):
    """pointer_detach: the centres still follow the pointer, but what it asks of the decoder's
    features does not reach the decoder; only pointer.q / pointer.k learn from it."""
    m = tiny_gmae(query_anchor="attend", pointer_detach=detach)
    with torch.no_grad():
        m.head.proj.weight[0:2].zero_()  # x, y come from the pointer alone
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, _, ids_restore = m.encode(imgs, noise=noise)
    xy = m.forward_decoder_raw(latent, ids_restore)[..., :2]
    same = tiny_gmae(query_anchor="attend")
    with torch.no_grad():
        same.head.proj.weight[0:2].zero_()
    torch.testing.assert_close(xy, same.forward_decoder_raw(latent, ids_restore)[..., :2])
    (xy * torch.randn_like(xy)).sum().backward()
    decoder = sum(p.grad.abs().sum() for p in m.decoder_blocks.parameters() if p.grad is not None)
    assert m.pointer.q.weight.grad.abs().sum() > 0
    assert (decoder == 0) if detach else (decoder > 0)


def test_pointer_detach_needs_an_attending_anchor():
    with pytest.raises(GmaeError, match="pointer_detach needs an attending query_anchor"):
        tiny_gmae(pointer_detach=True)


def test_refinement_starts_as_the_single_pass_and_sees_only_visible_pixels():
    """refine_steps: an untrained refinement returns the first pass unchanged; once it acts,
    its output depends on the visible patches' pixels, never on the masked ones."""
    single, refined = tiny_gmae(), tiny_gmae(refine_steps=2)
    missing = refined.load_state_dict(single.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["refine_embed.bias", "refine_embed.weight",
                               "refine_head.bias", "refine_head.weight"]  # fmt: skip
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    torch.testing.assert_close(refined(imgs, noise=noise).raw, single(imgs, noise=noise).raw)

    with torch.no_grad():
        refined.refine_head.weight.normal_(std=0.5)
    out = refined(imgs, noise=noise)
    assert (out.raw - single(imgs, noise=noise).raw).abs().max() > 1e-3  # the correction acts
    masked = out.mask[0].bool().reshape(4, 4)  # 32 px, 8 px patches; 1 = masked
    changed = imgs.clone()
    pix = masked.repeat_interleave(8, 0).repeat_interleave(8, 1)
    changed[0][:, pix] = 1 - changed[0][:, pix]  # new pixels in the masked patches only
    torch.testing.assert_close(refined(changed, noise=noise).raw, out.raw)
    changed[0][:, ~pix] = 1 - changed[0][:, ~pix]  # and now the visible ones
    assert (refined(changed, noise=noise).raw[0] - out.raw[0]).abs().max() > 1e-3

    latent, _, ids_restore = refined.encode(imgs, noise=noise)
    with pytest.raises(GmaeError, match="needs the input images"):
        refined.forward_decoder_raw(latent, ids_restore)
    with pytest.raises(GmaeError, match="refine_steps"):
        tiny_gmae(refine_steps=-1)

    refined.train()  # trains end to end: the loss reaches both new layers
    refined(imgs, noise=noise).loss.backward()
    assert refined.refine_head.weight.grad.abs().sum() > 0
    assert refined.refine_embed.weight.grad.abs().sum() > 0


def test_refinement_with_anchored_queries_and_under_autocast():
    """refine_steps composes with anchored queries (the correction stays inside the anchor's
    range) and, under bf16 autocast, keeps the raw outputs fp32 like the head."""
    m = tiny_gmae(refine_steps=1, query_anchor="grid", anchor_range=0.25)
    with torch.no_grad():
        m.refine_head.weight.normal_(std=2.0)  # a correction large enough to hit the bound
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    out = m(imgs, noise=noise)
    offset = out.gaussians.means[..., :2] - m.head.anchors.to(out.gaussians.means)
    assert offset.abs().max() <= 0.25 + 1e-6 and offset.abs().max() > 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(imgs, noise=noise)
    assert low.raw.dtype == torch.float32 and torch.isfinite(low.raw).all()
    assert (low.raw - out.raw).abs().max() < 0.5  # the same model, in lower precision


def test_refinement_control_sees_no_render_and_starts_from_the_same_weights():
    """refine_feedback="none" (the control of refinement): the same extra pass and correction
    head, never shown a render; built from the same random draws as the model with error."""
    seen = tiny_gmae(refine_steps=1)
    after_seen = torch.rand(3)  # what training would draw next
    blind = tiny_gmae(refine_steps=1, refine_feedback="none")
    torch.testing.assert_close(torch.rand(3), after_seen)
    assert blind.refine_embed is None
    weights = seen.state_dict()
    assert set(weights) - set(blind.state_dict()) == {"refine_embed.weight", "refine_embed.bias"}
    for key, value in blind.state_dict().items():
        torch.testing.assert_close(value, weights[key])

    with torch.no_grad():
        blind.refine_head.weight.normal_(std=0.5)
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, _, ids_restore = blind.encode(imgs, noise=noise)
    single = blind.head.raw(blind.decoder_norm(  # the first pass alone
        torch.nn.Sequential(*blind.decoder_blocks)(blind.decoder_tokens(latent, ids_restore))
    )[:, -blind.num_gaussians:])  # fmt: skip

    def no_render(*args, **kwargs):
        raise AssertionError("the control must not render")

    blind.render_gaussians = no_render
    raw = blind.forward_decoder_raw(latent, ids_restore)  # no images needed
    assert (raw - single).abs().max() > 1e-3  # the second pass acts
    # stopped after 0 refinement passes: exactly the first pass; 1 = all of this model's
    torch.testing.assert_close(blind.forward_decoder_raw(latent, ids_restore, refine_steps=0),
                               single)  # fmt: skip
    torch.testing.assert_close(blind.forward_decoder_raw(latent, ids_restore, refine_steps=1), raw)
    for bad in (-1, 2):
        with pytest.raises(GmaeError, match=r"refine_steps must be in \[0, 1\]"):
            blind.forward_decoder_raw(latent, ids_restore, refine_steps=bad)
    blind.train()
    del blind.render_gaussians
    blind(imgs, noise=noise).loss.backward()
    assert blind.refine_head.weight.grad.abs().sum() > 0
    with pytest.raises(GmaeError, match="refine_feedback"):
        tiny_gmae(refine_steps=1, refine_feedback="loss")


def test_flat_depth_control_puts_every_gaussian_at_z0_and_keeps_the_rest():
    """flat_depth (a control): z = 0 everywhere, whatever the raw z channel says; centres x, y,
    sizes and colours are the same model's; no gradient reaches the raw z; health reports no
    depth order (every image's Gaussians share one depth)."""
    free, flat = tiny_gmae(), tiny_gmae(flat_depth=True)
    flat.load_state_dict(free.state_dict())  # same weights: the flag adds none
    imgs, noise = torch.rand(4, 3, 32, 32), torch.rand(4, 16)
    a, b = free(imgs, noise=noise), flat(imgs, noise=noise)
    torch.testing.assert_close(a.raw, b.raw)
    assert a.gaussians.means[..., 2].abs().min() > 0  # the learned model's z is not 0
    assert b.gaussians.means[..., 2].abs().max() == 0
    torch.testing.assert_close(b.gaussians.means[..., :2], a.gaussians.means[..., :2])
    torch.testing.assert_close(b.gaussians.scales, a.gaussians.scales)
    flat.train()
    flat(imgs, noise=noise).loss.backward()
    grad = flat.head.proj.weight.grad
    assert grad[2].abs().max() == 0 and grad[0].abs().max() > 0  # z dead, x alive
    summary = gaussian_health(flat.eval(), imgs)
    assert summary["layout"]["depth"]["within_image"] == 0
    assert math.isnan(summary["layout"]["depth_order_agreement"])


def test_refined_model_round_trips_a_compact_checkpoint(tmp_path):
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.train.config import check_model, config_from_dict

    m = tiny_gmae(refine_steps=1)
    with torch.no_grad():
        m.refine_head.weight.normal_(std=0.1)
    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.refine_steps == 1
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    torch.testing.assert_close(loaded(imgs, noise=noise).pred, m(imgs, noise=noise).pred)
    with pytest.raises(GmaeError, match="refine_steps"):
        check_model({"name": "gmae", "refine_steps": 100}, 32)


def test_mixed_anchors_the_first_queries_on_their_grid_and_points_the_rest(tmp_path):
    """query_anchor="mixed": the first grid_queries queries are grid-anchored (their own grid,
    their grid point's embedding, a bound), the rest attend (no embedding, the pointer's centre)."""
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.models.gmae import grid_anchors
    from gmae.train.config import config_from_dict

    m = tiny_gmae(query_anchor="mixed", grid_queries=4, anchor_range=0.2)
    assert m.attending_queries == 12 and m.pointer is not None and m.pointer.mask_key is None
    torch.testing.assert_close(m.head.anchors, grid_anchors(4))  # a 2 x 2 grid for 4
    # 2 x 2 grid points on 4 x 4 patches: at patch units 0.5 and 2.5 (between patches)
    grid4 = tiny_gmae(query_anchor="mixed", grid_queries=4).query_pos_embed
    assert grid4[0, :4].abs().sum() > 0 and torch.equal(grid4[0, 4:], torch.zeros(12, 32))
    with torch.no_grad():
        m.head.proj.weight[0:2].zero_()  # no offset: anchors and pointed points
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, _, ids_restore = m.encode(imgs, noise=noise)
    features = m.decoder_features(latent, ids_restore)
    vis = features[:, 1:-16]
    ids_keep = torch.argsort(ids_restore, dim=1)[:, : vis.shape[1]]
    queries, keys, xy = m.pointer_inputs(features, ids_restore)
    assert queries.shape == (2, 12, 32)
    torch.testing.assert_close(queries, features[:, -12:])
    expected = m.pointer.weights(features[:, -12:], vis) @ m.patch_xy[ids_keep]
    raw = m.forward_decoder_raw(latent, ids_restore)
    means = m.head.activate(raw).means
    torch.testing.assert_close(means[:, :4, :2], grid_anchors(4).expand(2, -1, -1))
    torch.testing.assert_close(means[:, 4:, :2], expected, atol=1e-5, rtol=1e-5)
    # The bound holds for the grid's queries only: a large x offset moves the others to the edge.
    far = raw.clone()
    far[..., 0] += 20.0
    x = m.head.activate(far).means[..., 0]
    torch.testing.assert_close(x[:, :4], (grid_anchors(4)[:, 0] + 0.2).expand(2, -1))
    assert bool((x[:, 4:] > 0.99).all())

    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.query_anchor == "mixed" and loaded.grid_queries == 4
    torch.testing.assert_close(loaded(imgs, noise=noise).pred, m(imgs, noise=noise).pred)
    fresh = tiny_gmae(query_anchor="mixed", grid_queries=8).train()
    fresh(imgs, noise=noise).loss.backward()
    assert fresh.pointer.q.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(query_anchor="mixed"), "needs grid_queries between 1 and num_gaussians - 1"),
        (dict(query_anchor="mixed", grid_queries=16), "grid_queries between 1"),
        (dict(query_anchor="grid", grid_queries=4), "grid_queries is for query_anchor 'mixed'"),
    ],
)
def test_mixed_anchor_options_are_checked(kw, match):
    with pytest.raises(GmaeError, match=match):
        tiny_gmae(**kw)


def test_attend_local_points_near_its_grid_point_unless_the_content_says_otherwise(tmp_path):
    """query_anchor="attend_local": grid query tokens; keys for every patch (masked ones by
    place, as attend_all); attention logits minus |home - patch|^2 / (2 sigma^2)."""
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.models.gmae import grid_anchors
    from gmae.train.config import config_from_dict

    m = tiny_gmae(query_anchor="attend_local", query_init="normal", pointer_sigma=0.5)
    added = set(m.state_dict()) - set(tiny_gmae().state_dict())
    assert added == {"pointer.q.weight", "pointer.k.weight", "pointer.mask_key"}
    assert m.head.anchors is None and m.pointer.sigma == pytest.approx(0.5 * 2 / 4)
    torch.testing.assert_close(m.pointer.query_xy, grid_anchors(16))
    torch.testing.assert_close(m.query_pos_embed, tiny_gmae(query_anchor="grid").query_pos_embed)
    with torch.no_grad():
        m.head.proj.weight[0:2].zero_()  # no offset: the centre is the pointed point
        m.pointer.q.weight.zero_()  # no content: the prior alone
    imgs, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    latent, _, ids_restore = m.encode(imgs, noise=noise)
    # Every patch is a key, so the prior alone gives the same point under any mask: the
    # locality-weighted mean of the 4 x 4 patch centres around the query's grid point.
    patches = grid_anchors(16)
    prior = torch.softmax(-torch.cdist(grid_anchors(16), patches).square() / (2 * 0.25**2), -1)
    expected = (prior @ patches).expand(2, -1, -1)
    means = m.forward_decoder(latent, ids_restore).means[..., :2]
    torch.testing.assert_close(means, expected, atol=1e-5, rtol=1e-5)
    latent0, _, ids0 = m.encode(imgs, noise=noise, mask_ratio=0.0)
    torch.testing.assert_close(m.forward_decoder(latent0, ids0).means[..., :2], expected,
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    inner = torch.tensor([5, 6, 9, 10])  # neighbours on every side: nearly on their homes
    torch.testing.assert_close(expected[0, inner], patches[inner], atol=1e-3, rtol=0)
    assert (expected[0, 0] - patches[0]).norm() > 0.03  # a corner is pulled inwards
    # A narrow prior: each query on its own patch's centre.
    narrow = tiny_gmae(query_anchor="attend_local", pointer_sigma=0.05)
    with torch.no_grad():
        narrow.head.proj.weight[0:2].zero_()
    torch.testing.assert_close(narrow.forward_decoder(latent, ids_restore).means[..., :2],
                               patches.expand(2, -1, -1), atol=1e-4, rtol=0)  # fmt: skip

    # Content can outvote the prior: a query aligned with one visible patch's feature, sharply,
    # lands on that patch, far from its home.
    features = m.decoder_features(latent, ids_restore)
    queries, keys, xy = m.pointer_inputs(features, ids_restore)
    assert keys.shape[1] == 16 and queries.shape[1] == 16
    with pytest.raises(GmaeError, match="locality prior: weights needs patch_xy"):
        m.pointer.weights(queries, keys)
    with torch.no_grad():
        m.pointer.q.weight.copy_(torch.eye(32) * 400)
        m.pointer.k.weight.copy_(torch.eye(32))
    onehot = torch.zeros_like(keys)
    onehot[:, 0, 0] = 1.0  # the first visible patch is the only one a query can align with
    pointed = m.pointer(torch.ones(2, 16, 32), onehot, xy).sigmoid() * 2 - 1
    torch.testing.assert_close(pointed, xy[:, :1].expand(-1, 16, -1), atol=1e-3, rtol=0)

    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.query_anchor == "attend_local" and loaded.pointer_sigma == 0.5
    torch.testing.assert_close(loaded(imgs, noise=noise).pred, m(imgs, noise=noise).pred)
    fresh = tiny_gmae(query_anchor="attend_local").train()
    fresh(imgs, noise=noise).loss.backward()
    assert fresh.pointer.q.weight.grad.abs().sum() > 0
    with pytest.raises(GmaeError, match="pointer_sigma must be positive"):
        tiny_gmae(query_anchor="attend_local", pointer_sigma=0.0)


def test_visible_mean_background_fill(tmp_path):
    """background_fill="visible_mean": the training render composites each image over the mean
    colour of its visible patches (not the fixed background), which is also the render a
    reconstruction shows; zero-shot renders keep the fixed one."""
    from gmae.export.checkpoints import save_compact
    from gmae.loading import load_any
    from gmae.train.config import config_from_dict

    m = tiny_gmae(background=0.45, background_fill="visible_mean")
    fixed = tiny_gmae(background=0.45)
    imgs = torch.zeros(2, 3, 32, 32)
    imgs[0, 0] = 1.0  # image 0: red everywhere
    imgs[1, :, :16] = 1.0  # image 1: white top half (patch rows 0-1), black bottom half
    mask = torch.zeros(2, 16)
    mask[1, 8:] = 1.0  # image 1: only the white half visible
    fill = m.fill_background(imgs, mask)
    torch.testing.assert_close(fill, torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    mask[1] = torch.tensor([0.0] * 4 + [1.0] * 8 + [0.0] * 4)  # one white, one black row seen
    torch.testing.assert_close(m.fill_background(imgs, mask)[1], torch.full((3,), 0.5))
    assert fixed.fill_background(imgs, mask) is None

    photos, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    out = m(photos, noise=noise)
    same = fixed(photos, noise=noise)  # same weights (same seed), fixed background
    fill = m.fill_background(photos, out.mask)
    again = m.render_gaussians(out.gaussians, 32, 32, background=fill)
    torch.testing.assert_close(out.pred, again.image)
    # Where the Gaussians leave a pixel uncovered, the two differ by T (fill - fixed).
    behind = (1 - again.alpha) * (fill[:, :, None, None] - 0.45)
    torch.testing.assert_close(out.pred - same.pred, behind, atol=1e-5, rtol=0)
    assert behind.abs().max() > 1e-3
    torch.testing.assert_close(m.reconstruct(photos, noise=noise)["recon"], out.pred)
    assert m.background == 0.45  # what zero-shot renders composite over

    path = save_compact(m, config_from_dict(m.gmae_config), tmp_path / "m.safetensors")
    loaded = load_any(str(path)).model.eval()
    assert loaded.background_fill == "visible_mean"
    torch.testing.assert_close(loaded(photos, noise=noise).pred, out.pred)
    with pytest.raises(GmaeError, match="unknown background_fill 'mean'"):
        tiny_gmae(background_fill="mean")
    with pytest.raises(GmaeError, match="does not combine with refine_steps"):
        tiny_gmae(background_fill="visible_mean", refine_steps=1)
