"""Latent MIM: shapes, patch gaps, EMA target, InfoNCE, collapse check, CLI end to end + resume.

Tiny sizes throughout (the whole file runs in well under a minute on one CPU thread).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.models import LatentMIM, create_model
from gmae.models.latent_mim import (
    cosine_ramp,
    ema_momentum,
    gap_offsets,
    gapped_patches,
    mean_pairwise_similarity,
    patch_infonce,
)
from gmae.train.optim import build_optimizer
from gmae.train.outputs import read_metrics

IMG, PATCH = 32, 4  # 64 patches: 6 visible, 58 targets at mask ratio 0.9
N = (IMG // PATCH) ** 2
TINY = dict(
    img_size=IMG, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2, decoder_dim=32,
    decoder_depth=1, decoder_num_heads=2, proj_hidden_dim=64, patch_gap=1,
)  # fmt: skip


def tiny(**kw) -> LatentMIM:
    torch.manual_seed(0)
    return LatentMIM(**{**TINY, **kw})


def images(b: int = 2, size: int = IMG, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def noise(b: int = 2, n: int = N, seed: int = 2) -> torch.Tensor:
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- forward pass


@pytest.mark.parametrize("gap", [0, 1])
def test_forward_shapes_and_mask(gap):
    model = tiny(patch_gap=gap)
    out = model(images(3), noise=noise(3))
    n_vis = int(N * (1 - 0.9))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.mask.shape == (3, N) and (out.mask.sum(1) == N - n_vis).all()
    assert out.latent.shape == (3, 1 + n_vis, 32)
    assert out.pred.shape == (3, N - n_vis, 32)  # predicted target latents (encoder width)
    assert out.gaussians is None
    # at initialisation the predictions barely tell targets apart: loss near 2 tau log(M)
    assert out.loss.item() == pytest.approx(2 * 0.2 * math.log(N - n_vis), rel=0.15)
    assert model.forward_features(images(3)).shape == (3, 1 + N, 32)  # no gaps at evaluation


def test_factory_errors_and_no_reconstruction():
    model = create_model("latent_mim", encoder="tiny", depth=1, img_size=32, patch_size=8)
    assert isinstance(model, LatentMIM) and model.mask_ratio == 0.9
    with pytest.raises(GmaeError, match="unknown argument 'tau'"):
        create_model("latent_mim", tau=0.1)
    with pytest.raises(GmaeError, match="patch_gap"):
        tiny(patch_gap=-1)
    with pytest.raises(GmaeError, match="at least 1 visible and 2 masked"):
        tiny()(images(), mask_ratio=0.0, noise=noise())
    with pytest.raises(GmaeError, match="noise must have shape"):
        tiny()(images(), noise=noise(n=N - 1))
    with pytest.raises(GmaeError, match="not pixels"):
        tiny().reconstruct(images())


def test_same_noise_same_result_other_noise_other_result():
    model = tiny()
    a, b = model(images(), noise=noise()), model(images(), noise=noise())
    assert torch.equal(a.loss, b.loss) and torch.equal(a.pred, b.pred)
    c = model(images(), noise=noise(seed=3))
    assert not torch.equal(a.mask, c.mask) and a.loss != c.loss


def test_gapped_patches_are_jittered_crops_of_their_cells():
    b, grid, p, gap = 2, 3, 4, 3
    x = torch.randn(b, 3, grid * (p + gap), grid * (p + gap))
    u = noise(b, grid * grid)
    out = gapped_patches(x, grid, p, gap, u)
    dy, dx = gap_offsets(u, gap)
    assert out.shape == (b, 3, grid * p, grid * p)
    assert dy.min() >= 0 and dy.max() < gap and dx.min() >= 0 and dx.max() < gap
    for i in range(b):
        for n in range(grid * grid):
            r, c = divmod(n, grid)
            y0, x0 = r * (p + gap) + dy[i, n], c * (p + gap) + dx[i, n]
            crop = x[i, :, y0 : y0 + p, x0 : x0 + p]
            assert torch.equal(out[i, :, r * p : (r + 1) * p, c * p : (c + 1) * p], crop)
    # offsets come from the noise's low bits: roughly uniform and unrelated to the mask order
    dy, dx = gap_offsets(torch.rand(1, 40000, generator=torch.Generator().manual_seed(0)), 4)
    assert torch.bincount(dy.flatten(), minlength=4).min() > 9000
    assert torch.bincount(4 * dy.flatten() + dx.flatten(), minlength=16).min() > 2000


def test_patch_view_without_gap_is_the_normalised_image():
    model = tiny(patch_gap=0)
    imgs = images()
    assert torch.equal(model.patch_view(imgs, noise()), model.normalize(imgs))


def test_visual_cues_are_a_position_weighted_average_of_visible_tokens():
    model = tiny()
    b, d = 2, 32
    ids = torch.argsort(noise(b), dim=1)
    vis_ids, tgt_ids = ids[:, :6], ids[:, 6:]
    visible = torch.randn(b, 6, d)
    queries = model.decoder_queries(visible, vis_ids, tgt_ids)
    pos = model.decoder_pos_embed[0, 1:]
    for i in range(b):
        for j, t in enumerate(tgt_ids[i]):
            logits = torch.stack([pos[t] @ pos[v] / math.sqrt(d) for v in vis_ids[i]])
            cue = (logits.softmax(0)[:, None] * visible[i]).sum(0)
            expected = model.mask_token[0, 0] + pos[t] + cue
            torch.testing.assert_close(queries[i, 1 + j], expected)
    plain = tiny(visual_cues=False).decoder_queries(visible, vis_ids, tgt_ids)
    torch.testing.assert_close(plain[:, 1:], model.mask_token + pos[tgt_ids])


# ---------------------------------------------------------------- EMA target


def test_momentum_schedule():
    assert ema_momentum(0, 100) == pytest.approx(0.99, abs=1e-15)
    assert ema_momentum(100, 100) == 1.0 and ema_momentum(150, 100) == 1.0
    assert ema_momentum(50, 100) == pytest.approx(0.995)
    ms = [ema_momentum(s, 100) for s in range(101)]
    assert all(a <= b for a, b in zip(ms, ms[1:]))
    assert cosine_ramp(0.75, 0.25, 0.0) == 0.75 and cosine_ramp(0.75, 0.25, 1.0) == 0.25


def test_after_step_is_the_ema_update():
    model = tiny()
    for online, target in model.ema_pairs():  # starts as a copy
        assert torch.equal(online, target) and not target.requires_grad
    with torch.no_grad():  # move the online weights, as an optimizer step would
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [(o.clone(), t.clone()) for o, t in model.ema_pairs()]
    model.after_step(30, 100)
    m = 1 - 0.5 * (1 + math.cos(math.pi * 0.3)) * 0.01
    for (o, t0), (_, t1) in zip(before, model.ema_pairs()):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * o, rtol=0, atol=1e-6)
    assert float(model.train_progress) == 0.3
    moved = [t.clone() for _, t in model.ema_pairs()]
    model.after_step(100, 100)  # m = 1 at the end: the target stays
    assert all(torch.equal(a, t) for a, (_, t) in zip(moved, model.ema_pairs()))


def test_target_encoder_gets_no_gradient_and_no_optimizer_state():
    model = tiny(sim_coeff=0.1)
    model(images(), noise=noise()).loss.backward()
    frozen = [*model.target_encoder.parameters(), *model.target_projector.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(model.get_parameter(n).grad is not None for n in trained)
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95), model.no_weight_decay())
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in frozen}
    assert len(in_optimizer) == len(trained)


# ---------------------------------------------------------------- loss


def reference_infonce(pred, target, tau):
    """Brute force: per image, standardise predictions over tokens, then each prediction's
    softmax over its own image's targets; mean negative log-likelihood, times 2 tau."""
    losses = []
    for p, t in zip(pred.double(), target.double()):
        m = p.shape[0]
        mean = sum(p[k] for k in range(m)) / m
        std = (sum((p[k] - mean) ** 2 for k in range(m)) / (m - 1)).sqrt()
        p = (p - mean) / (std + 1e-4)
        for i in range(m):
            sims = [float(p[i] @ t[j] / (p[i].norm() * t[j].norm())) / tau for j in range(m)]
            losses.append(-(sims[i] - math.log(sum(math.exp(s) for s in sims))))
    return 2 * tau * sum(losses) / len(losses)


def test_infonce_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 7, 5, generator=g), torch.randn(3, 7, 5, generator=g)
    for tau in (0.2, 1.0):
        assert patch_infonce(pred, target, tau).item() == pytest.approx(
            reference_infonce(pred, target, tau), rel=1e-5
        )
    # a perfect, well-separated prediction scores far below chance, a shuffled one above it
    orth = torch.eye(7).expand(3, 7, 7)
    assert (
        patch_infonce(orth, orth) < 0.05 < 2 * 0.2 * math.log(7) < patch_infonce(orth, orth.flip(1))
    )


def test_pairwise_similarity():
    x = torch.randn(2, 5, 8)
    sim = mean_pairwise_similarity(x)
    xn = F.normalize(x, dim=-1)
    assert sim[1].item() == pytest.approx((xn[1] @ xn[1].T).mean().item(), rel=1e-5)
    assert mean_pairwise_similarity(torch.ones(1, 4, 8)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("sim_coeff", [0.0, 0.5])
def test_loss_is_within_image(sim_coeff):
    """A batch's loss is the mean of its images' losses (same noise): no cross-image terms."""
    model = tiny(sim_coeff=sim_coeff)
    model.after_step(3, 10)  # a non-trivial similarity target
    imgs, u = images(4), noise(4)
    batch = model(imgs, noise=u).loss
    singles = torch.stack([model(imgs[i : i + 1], noise=u[i : i + 1]).loss for i in range(4)])
    torch.testing.assert_close(batch, singles.mean(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- a short real run


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of the centred rows of x [n, d]:
    1 for features on a line, 0 for constant features, d for isotropic ones."""
    s = torch.linalg.svdvals((x - x.mean(0)).double())
    if s.sum() < 1e-9:
        return 0.0
    q = s / s.sum()
    return float(torch.exp(-(q * q.clamp_min(1e-30).log()).sum()))


def feature_stats(feats: torch.Tensor) -> tuple[float, float]:
    """(mean over channels of the std over all patch tokens, effective rank of the tokens)."""
    tokens = feats[:, 1:].reshape(-1, feats.shape[-1])
    return tokens.std(0).mean().item(), effective_rank(tokens)


def test_short_real_run_does_not_collapse():
    """40 steps on 64 CIFAR-10 images: the loss drops below chance and the online encoder's
    patch features stay spread out.

    Collapse means every patch gets (nearly) the same feature: per-channel std ~0 and effective
    rank <= 1 (the constant reference below scores 0 and 0). The final LayerNorm gives each
    token unit variance over its 32 channels, so healthy features have a per-channel std of order
    1; at initialisation this model measures 0.81 and 20 of 32, after the run 0.72 and 17.6 (120
    steps: 0.79 and 18.4). The floors (std 0.3, effective rank 4) sit far above collapse and leave
    room for learning to narrow a few directions: they fail only when the features collapse.
    """
    from torchvision.transforms.functional import to_tensor

    from gmae.data import build_dataset

    cifar = build_dataset("cifar10", "train")
    data = torch.stack([to_tensor(cifar[i][0]) for i in range(64)])
    model = tiny()
    collapsed = feature_stats(torch.ones(64, 1 + N, 32))
    assert collapsed == (0.0, 0.0)

    steps, batch = 40, 16
    optimizer = build_optimizer(model, 2e-3, 0.05, (0.9, 0.95), model.no_weight_decay())
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        idx = torch.randperm(64, generator=g)[:batch]
        loss = model(data[idx], noise=torch.rand(batch, N, generator=g)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_step(step + 1, steps)
        losses.append(loss.item())
    chance = 2 * 0.2 * math.log(N - 6)
    assert np.mean(losses[-5:]) < chance - 0.05 < losses[0]

    model.eval()
    with torch.no_grad():
        std, rank = feature_stats(model.forward_features(data))
    assert std > 0.3 and rank > 4.0, (std, rank)


# ---------------------------------------------------------------- CLI end to end


TINY_SETS = [
    "data.img_size=16", "data.num_workers=0", "data.scale=[0.5, 1.0]",
    "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
    "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
    "model.proj_hidden_dim=32", "model.sim_coeff=0.1",
    "optim.epochs=2", "optim.batch_size=4", "optim.warmup_epochs=1",
    "run.log_every=1", "run.ckpt_every=1",
]  # fmt: skip


def test_pretrain_cli_resumes_exactly_and_exports_the_online_encoder(tmp_path, folder):
    from safetensors.torch import load_file

    from gmae.export import load_model

    sets = ["--set", f"data.spec=imagefolder:{folder}", *TINY_SETS]
    args = ["--config", "lmim_tiny_imagenette64", *sets]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["pretrain", *args, "--out", str(full)]) == 0  # 3 steps/epoch x 2 epochs
    assert main(["pretrain", *args, "--out", str(part), "--max-steps", "2"]) == 0
    assert torch.load(part / "last.pt", weights_only=True)["step"] == 2
    assert main(["pretrain", "--out", str(part), "--resume"]) == 0

    rows, resumed = read_metrics(full / "metrics.jsonl"), read_metrics(part / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
    keys = ("step", "loss", "lr", "grad_norm")
    assert [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys} for r in resumed]
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["train_progress"]) == 1.0
    assert not (full / "vis").exists()  # vis_images 0: no pictures

    # evaluation and export rebuild the model from the checkpoint and use the online encoder
    model, cfg = load_model(full / "last.pt")
    assert isinstance(model, LatentMIM) and cfg.model["name"] == "latent_mim"
    name = "blocks.0.attn.qkv.weight"
    assert not torch.equal(a[f"encoder.{name}"], a[f"target_encoder.{name}"])
    out = tmp_path / "vit.safetensors"
    assert main(["export", "timm", "--ckpt", str(full / "last.pt"), "--out", str(out)]) == 0
    exported = load_file(str(out))
    assert torch.equal(exported[name], a[f"encoder.{name}"])
    assert not any(k.startswith(("target", "projector", "decoder")) for k in exported)
