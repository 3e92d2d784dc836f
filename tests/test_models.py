"""Tests for gmae.models: encoder, MAE, GMAE, factory. Tiny sizes; big ones on the meta device."""

from __future__ import annotations

import math

import pytest
import torch

from gmae.errors import GmaeError
from gmae.models import (
    ENCODER_PRESETS,
    GMAE,
    MAE,
    DecoderConfig,
    EncoderConfig,
    Gaussians,
    LatentMIM,
    PretrainOutput,
    ViTEncoder,
    create_encoder,
    create_model,
    patchify,
    random_masking,
    shoemake_quaternion,
    sincos_pos_embed_2d,
    unpatchify,
)

IMG, PATCH = 32, 8  # 16 patches
N = (IMG // PATCH) ** 2
TINY = dict(img_size=IMG, patch_size=PATCH, embed_dim=64, depth=2, num_heads=4, decoder_dim=32)
TINY_DEC = dict(decoder_depth=2, decoder_num_heads=4)


def tiny_mae(**kw) -> MAE:
    torch.manual_seed(0)
    return MAE(**{**TINY, **TINY_DEC, **kw})


def tiny_gmae(**kw) -> GMAE:
    torch.manual_seed(0)
    return GMAE(**{**TINY, **TINY_DEC, "num_gaussians": 8, **kw})


def images(b: int = 2, size: int = IMG, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def noise(b: int = 2, n: int = N, seed: int = 2) -> torch.Tensor:
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- encoder pieces


def test_sincos_table_matches_mae_layout():
    from transformers.models.vit_mae.modeling_vit_mae import get_2d_sincos_pos_embed

    ours = sincos_pos_embed_2d(64, 5)
    ref = torch.from_numpy(get_2d_sincos_pos_embed(64, 5, add_cls_token=True)).float()
    assert ours.shape == (1, 26, 64)
    assert torch.equal(ours[0, 0], torch.zeros(64))  # cls slot
    torch.testing.assert_close(ours[0], ref, atol=1e-6, rtol=0)


def test_patchify_roundtrip_and_order():
    x = images(2, 16)
    p = patchify(x, 4)
    assert p.shape == (2, 16, 48)
    # patch 1 is row 0, column 1; pixel (0, 0) of it, channels last
    torch.testing.assert_close(p[0, 1, :3], x[0, :, 0, 4])
    torch.testing.assert_close(unpatchify(p, 4, 16, 16), x)


def test_random_masking_counts_and_restore():
    x = torch.arange(2 * N, dtype=torch.float32).view(2, N, 1)
    kept, mask, ids_restore = random_masking(x, 0.75, noise())
    assert kept.shape == (2, N // 4, 1) and mask.shape == (2, N)
    assert mask.sum(1).tolist() == [3 * N / 4] * 2
    # kept tokens are exactly the unmasked ones; ids_restore inverts the shuffle
    for b in range(2):
        assert sorted(kept[b, :, 0].tolist()) == x[b, mask[b] == 0, 0].tolist()
    ids_shuffle = torch.argsort(noise(), dim=1)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(N).expand(2, N))
    kept0, mask0, _ = random_masking(x, 0.0, noise())
    assert kept0.shape == (2, N, 1) and mask0.sum() == 0
    # without noise, ratio 0 keeps patch order and draws no random numbers
    state = torch.get_rng_state()
    kept0, _, ids0 = random_masking(x, 0.0)
    assert torch.equal(kept0, x) and torch.equal(ids0, torch.arange(N).expand(2, N))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("preset", "timm_name"),
    [
        ("tiny", "vit_tiny_patch16_224"),
        ("small", "vit_small_patch16_224"),
        ("base", "vit_base_patch16_224"),
        ("large", "vit_large_patch16_224"),
    ],
)
def test_encoder_presets_match_timm_parameter_counts(preset, timm_name):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ref = timm.create_model(timm_name, pretrained=False, num_classes=0)
        ours = create_encoder(preset, img_size=224, patch_size=16)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.named_parameters()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.named_parameters()}
    # Same names and shapes except timm's learned pos_embed, which is our fixed buffer
    # [1, 197, D]; num_classes=0 drops timm's classifier head.
    pos = ref_shapes.pop("pos_embed")
    assert our_shapes == ref_shapes
    assert pos == tuple(ours.pos_embed.shape) == (1, 197, ENCODER_PRESETS[preset]["embed_dim"])
    n_ref = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in ours.parameters()) == n_ref - math.prod(pos)


def test_encoder_equals_timm_vit_with_same_weights():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    ours = ViTEncoder(img_size=IMG, patch_size=PATCH, embed_dim=64, depth=2, num_heads=4).eval()
    ref = VisionTransformer(
        img_size=IMG, patch_size=PATCH, embed_dim=64, depth=2, num_heads=4, num_classes=0
    ).eval()
    ref.load_state_dict({**ours.state_dict(), "pos_embed": ours.pos_embed})
    x = images()
    torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x))
    # Masking at ratio 0 with identity noise is the full forward.
    latent, mask, _ = ours(x, 0.0, torch.arange(N).float().expand(2, N))
    torch.testing.assert_close(latent, ref.forward_features(x))


# ---------------------------------------------------------------- MAE


def _hf_state_dict(ours: MAE) -> dict[str, torch.Tensor]:
    """Map our MAE weights to ViTMAEForPreTraining names (fused qkv split into q, k, v)."""
    sd: dict[str, torch.Tensor] = {}

    def linear(dst, mod):
        sd[f"{dst}.weight"] = mod.weight
        sd[f"{dst}.bias"] = mod.bias

    def layer(dst, blk):
        for name, w, b in zip(
            ("query", "key", "value"), blk.attn.qkv.weight.chunk(3), blk.attn.qkv.bias.chunk(3)
        ):
            sd[f"{dst}.attention.attention.{name}.weight"] = w
            sd[f"{dst}.attention.attention.{name}.bias"] = b
        linear(f"{dst}.attention.output.dense", blk.attn.proj)
        linear(f"{dst}.layernorm_before", blk.norm1)
        linear(f"{dst}.layernorm_after", blk.norm2)
        linear(f"{dst}.intermediate.dense", blk.mlp.fc1)
        linear(f"{dst}.output.dense", blk.mlp.fc2)

    enc = ours.encoder
    sd["vit.embeddings.cls_token"] = enc.cls_token
    linear("vit.embeddings.patch_embeddings.projection", enc.patch_embed.proj)
    for i, blk in enumerate(enc.blocks):
        layer(f"vit.encoder.layer.{i}", blk)
    linear("vit.layernorm", enc.norm)
    linear("decoder.decoder_embed", ours.decoder_embed)
    sd["decoder.mask_token"] = ours.mask_token
    for i, blk in enumerate(ours.decoder_blocks):
        layer(f"decoder.decoder_layers.{i}", blk)
    linear("decoder.decoder_norm", ours.decoder_norm)
    linear("decoder.decoder_pred", ours.decoder_pred)
    return {k: v.detach().clone() for k, v in sd.items()}


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_matches_huggingface_vitmae(norm_pix):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTMAEConfig(
        image_size=IMG,
        patch_size=PATCH,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        mask_ratio=0.75,
        norm_pix_loss=norm_pix,
    )
    torch.manual_seed(123)
    hf = transformers.ViTMAEForPreTraining(config).eval()
    # HF's random init zeroes the decoder's sin-cos table (checkpoints carry it): build it with
    # HF's own function so that the comparison below stays independent.
    hf.decoder.initialize_weights(N)
    ours = tiny_mae(norm_pix_loss=norm_pix).eval()
    missing, unexpected = hf.load_state_dict(_hf_state_dict(ours), strict=False)
    # HF stores the fixed sin-cos tables as frozen parameters: compare instead of copying.
    assert set(missing) == {"vit.embeddings.position_embeddings", "decoder.decoder_pos_embed"}
    assert not unexpected
    torch.testing.assert_close(hf.vit.embeddings.position_embeddings, ours.encoder.pos_embed)
    torch.testing.assert_close(hf.decoder.decoder_pos_embed, ours.decoder_pos_embed)

    x, nz = images(), noise()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = hf(pixel_values=(x - mean) / std, noise=nz)
        out = ours(x, noise=nz)
    assert torch.equal(out.mask, ref.mask)
    torch.testing.assert_close(out.pred, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_mae_shapes_and_gradients():
    model = tiny_mae()
    out = model(images(), noise=noise())
    assert isinstance(out, PretrainOutput) and out.gaussians is None
    assert out.pred.shape == (2, N, PATCH * PATCH * 3)
    assert out.latent.shape == (2, 1 + N // 4, 64)
    assert out.mask.shape == (2, N) and out.loss.ndim == 0
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mae_loss_ignores_visible_patches():
    model = tiny_mae()
    x = images()
    out = model(x, noise=noise())
    visible = (out.mask == 0).unsqueeze(-1)
    base = model.forward_loss(x, out.pred, out.mask)
    torch.testing.assert_close(base, out.loss)
    # change predictions / target pixels on visible patches: loss unchanged
    assert torch.equal(model.forward_loss(x, out.pred + 5.0 * visible, out.mask), base)
    mask_img = unpatchify(visible.float().expand(-1, -1, PATCH * PATCH * 3), PATCH, IMG, IMG)
    assert torch.equal(model.forward_loss(x + 0.3 * mask_img, out.pred, out.mask), base)
    # on masked patches: changed
    assert model.forward_loss(x, out.pred + 5.0 * ~visible, out.mask) != base


def test_mae_deterministic_and_mask_ratio_zero():
    model = tiny_mae()
    x = images()
    a, b = model(x, noise=noise()), model(x, noise=noise())
    assert torch.equal(a.loss, b.loss) and torch.equal(a.pred, b.pred)
    assert not torch.equal(model(x, noise=noise(seed=9)).mask, a.mask)
    out0 = model(x, mask_ratio=0.0)
    assert out0.mask.sum() == 0 and out0.latent.shape == (2, 1 + N, 64)
    assert torch.isfinite(out0.loss)  # no masked patch: every patch counts
    assert model.mask_ratio == 0.75 and model(x).mask.sum() == 2 * 12


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_reconstruct(norm_pix):
    model = tiny_mae(norm_pix_loss=norm_pix)
    x = images()
    r = model.reconstruct(x, noise=noise())
    assert set(r) == {"input", "masked", "recon", "mask_image"}
    for v in r.values():
        assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1
    visible = r["mask_image"] == 0
    assert torch.equal(r["recon"][visible], x[visible])  # visible patches pasted back
    assert r["mask_image"].sum() == 2 * 3 * 12 * PATCH * PATCH


def test_mae_prediction_image_is_the_recon_of_masked_patches():
    for norm_pix in (False, True):
        model = tiny_mae(norm_pix_loss=norm_pix)
        x = images()
        r = model.reconstruct(x, noise=noise())
        full = model.prediction_image(x, model(x, noise=noise()).pred)
        masked = r["mask_image"] > 0.5
        assert full.shape == x.shape and full.min() >= 0 and full.max() <= 1
        torch.testing.assert_close(full[masked], r["recon"][masked])


# ---------------------------------------------------------------- EncoderConfig / DecoderConfig

ENC = EncoderConfig(img_size=IMG, patch_size=PATCH, embed_dim=64, depth=2, num_heads=4)


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(MAE, {}), (GMAE, {"num_gaussians": 8}), (LatentMIM, {"proj_hidden_dim": 64})],
)
def test_config_objects_build_the_model_the_flat_arguments_build(cls, extra):
    dec = DecoderConfig(dim=32, depth=2, num_heads=4)
    torch.manual_seed(0)
    flat = cls(**ENC.flat(), **dec.flat(), **extra)
    torch.manual_seed(0)
    configured = cls(encoder=ENC, decoder=dec, **extra)
    assert configured.encoder.config == flat.encoder.config == ENC
    assert configured.decoder_config == flat.decoder_config == dec
    a, b = flat.state_dict(), configured.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # one of the two only: a flat encoder / decoder argument next to the object is an error
    with pytest.raises(GmaeError, match="not both.*depth"):
        cls(encoder=ENC, depth=3, **extra)
    with pytest.raises(GmaeError, match="not both.*decoder_dim"):
        cls(encoder=ENC, decoder=dec, decoder_dim=64, **extra)
    with pytest.raises(GmaeError, match="must be a DecoderConfig"):
        cls(encoder=ENC, decoder={"dim": 32}, **extra)


def test_create_model_records_config_objects_as_flat_arguments():
    dec = DecoderConfig(dim=32, depth=1, num_heads=2)
    model = create_model("gmae", encoder=ENC, decoder=dec, num_gaussians=8)
    assert model.encoder.config == ENC and model.decoder_config == dec
    recorded = model.gmae_config
    assert recorded["data"] == {"img_size": IMG}
    encoder = {k: v for k, v in ENC.flat().items() if k != "img_size"}
    assert recorded["model"] == {"name": "gmae", **encoder, **dec.flat(), "num_gaussians": 8}
    assert "encoder" not in recorded["model"] and "decoder" not in recorded["model"]
    assert ViTEncoder.from_config(ENC).config == ENC


def test_gmae_norm_pix_is_the_deprecated_name_of_norm_pix_loss():
    with pytest.warns(DeprecationWarning, match="norm_pix_loss"):
        model = tiny_gmae(norm_pix=True)
    assert model.norm_pix_loss is True and model.norm_pix is True
    model.norm_pix = False  # the old attribute name still works
    assert model.norm_pix_loss is False
    with pytest.warns(DeprecationWarning), pytest.raises(GmaeError, match="disagree"):
        tiny_gmae(norm_pix=False, norm_pix_loss=True)


def test_no_weight_decay_names_exist():
    for model in (tiny_mae(), tiny_gmae()):
        names = dict(model.named_parameters()) | dict(model.named_buffers())
        assert model.no_weight_decay() <= set(names)


# ---------------------------------------------------------------- GMAE


def test_gmae_vit_base_has_306_decoder_tokens():
    with torch.device("meta"):  # ViT-B shapes without the CPU cost
        model = create_model("gmae", encoder="base", img_size=224, patch_size=16)
        latent, _, ids_restore = model.encode(torch.zeros(1, 3, 224, 224))
        tokens = model.decoder_tokens(latent, ids_restore)
        gaussians = model.head(tokens[:, -model.num_gaussians :])
    assert latent.shape == (1, 50, 768)
    assert tokens.shape == (1, 1 + 49 + 256, 512)
    assert model.head.proj.weight.shape == (14, 512) and model.head.proj.bias is None
    assert gaussians.means.shape == (1, 256, 3) and gaussians.opacities.shape == (1, 256)


def test_gmae_decoder_tokens_use_pos_embed_of_own_patch():
    model = tiny_gmae()
    nz = noise()
    latent, mask, ids_restore = model.encode(images(), noise=nz)
    tokens = model.decoder_tokens(latent, ids_restore)
    projected = model.decoder_embed(latent)
    keep = torch.argsort(nz, dim=1)[:, : N // 4]  # patches kept, in encoder order
    for b in range(2):
        assert mask[b, keep[b]].sum() == 0
        want = projected[b, 1:] + model.decoder_pos_embed[0, 1 + keep[b]]  # row 0 is cls
        torch.testing.assert_close(tokens[b, 1 : 1 + N // 4], want)
    torch.testing.assert_close(tokens[:, 0], projected[:, 0])
    torch.testing.assert_close(tokens[0, -8:], (model.query_token + model.query_embed)[0])


def test_gmae_query_init():
    model = create_model("gmae", encoder="tiny", img_size=IMG, patch_size=PATCH, decoder_dim=64)
    q = model.query_embed
    assert q.shape == (1, 256, 64) and q.min() >= 0 and q.max() < 1 and abs(q.mean() - 0.5) < 0.02
    assert abs(model.query_token.std() - 0.02) < 0.01


@pytest.mark.parametrize("rotation", ["shoemake", "normalize"])
def test_gaussian_head_activations(rotation):
    from gmae.models import GaussianHead

    head = GaussianHead(16, scale_cap=0.5, rotation=rotation)
    raw = torch.randn(2, 5, 14) * 30  # saturating
    g = head.activate(raw)
    assert g.means.abs().max() <= 1 and g.scales.min() >= 0 and g.scales.max() <= 0.5
    assert g.colors.shape == (2, 5, 3) and g.opacities.shape == (2, 5)
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(2, 5), atol=1e-5, rtol=0)
    if rotation == "shoemake":  # the 4th rotation channel is unused
        raw2 = raw.clone()
        raw2[..., 9] += 1
        assert torch.equal(head.activate(raw2).quats, g.quats)
    raw.requires_grad_(True)
    g = head.activate(raw)
    sum(t.sum() for t in (g.means, g.scales, g.quats, g.colors, g.opacities)).backward()
    assert torch.isfinite(raw.grad).all()


def test_shoemake_quaternion_values():
    a = torch.tensor([[0.0, 0.25, 0.0], [1.0, 0.0, 0.0]])
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(shoemake_quaternion(a), expected, atol=1e-6, rtol=0)


def test_gmae_forward_shapes_and_gradients_through_renderer():
    model = tiny_gmae()
    x = images()
    out = model(x, noise=noise())
    assert out.pred.shape == x.shape and out.mask.shape == (2, N)
    assert out.latent.shape == (2, 1 + N // 4, 64)
    g = out.gaussians
    assert isinstance(g, Gaussians) and g.num_gaussians == 8
    assert g.quats.shape == (2, 8, 4) and g.colors.shape == (2, 8, 3)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gmae_loss_masked_patches_only():
    model = tiny_gmae()
    x = images()
    out = model(x, noise=noise())
    torch.testing.assert_close(model.forward_loss(x, out.pred, out.mask), out.loss)
    visible = unpatchify(
        (out.mask == 0).float().unsqueeze(-1).expand(-1, -1, PATCH * PATCH * 3), PATCH, IMG, IMG
    )
    base = out.loss.detach()
    for render_delta, target_delta in [(visible, 0), (0, visible)]:
        loss = model.forward_loss(x + 0.3 * target_delta, out.pred + 0.3 * render_delta, out.mask)
        torch.testing.assert_close(loss, base)
    assert model.forward_loss(x, out.pred + 0.3 * (1 - visible), out.mask) != base
    # the target is the [0, 1] image itself: a render equal to it gives zero loss
    assert model.forward_loss(x, x, out.mask) == 0
    model.loss_on = "all"
    assert model.forward_loss(x, out.pred + 0.3 * visible, out.mask) != base


def test_gmae_norm_pix_ablation():
    model = tiny_gmae(norm_pix_loss=True)
    x = images()
    # per-patch normalisation removes each patch's brightness and contrast
    assert model.forward_loss(x, 2 * x + 0.1, torch.ones(2, N)) < 1e-6
    assert torch.isfinite(model(x, noise=noise()).loss)


def test_gmae_deterministic_mask_ratio_zero_and_inference_api():
    model = tiny_gmae()
    x = images()
    a, b = model(x, noise=noise()), model(x, noise=noise())
    assert torch.equal(a.loss, b.loss) and torch.equal(a.pred, b.pred)
    out0 = model(x, mask_ratio=0.0)
    assert out0.mask.sum() == 0 and torch.isfinite(out0.loss)
    with torch.no_grad():
        g = model.predict_gaussians(x)
        assert torch.equal(g.means, out0.gaussians.means)
        big = model.render_gaussians(g, 48, 64, background=0.0)
        torch.testing.assert_close(model.render_gaussians(g, IMG, IMG).image, out0.pred)
    assert big.image.shape == (2, 3, 48, 64) and big.alpha.shape == (2, 1, 48, 64)
    keep = torch.zeros(2, 8, dtype=torch.bool)
    empty = model.render_gaussians(g, IMG, IMG, keep=keep, background=(0.2, 0.4, 0.6))
    torch.testing.assert_close(empty.image[:, :, 0, 0], torch.tensor([[0.2, 0.4, 0.6]] * 2))
    r = model.reconstruct(x, noise=noise())
    assert set(r) == {"input", "masked", "recon", "mask_image"}
    assert all(v.shape == x.shape for v in r.values())
    torch.testing.assert_close(r["recon"], a.pred)


def test_gmae_wrap_render_sees_every_render_and_changes_nothing():
    """The supported render hook (what `gmae bench train` times with): the wrapper gets the
    renderer and its arguments for every render of the model, nests, and is gone on exit."""
    model, x = tiny_gmae(), images()
    plain = model(x, noise=noise())
    calls, outer = [], []

    def wrapper(render, *args, **kwargs):
        calls.append((args, kwargs))
        return render(*args, **kwargs)

    with model.wrap_render(lambda render, *a, **k: outer.append(1) or render(*a, **k)):
        with model.wrap_render(wrapper) as same:
            assert same is model
            wrapped = model(x, noise=noise())
            model.reconstruct(x, noise=noise())
        model.render_gaussians(wrapped.gaussians, IMG, IMG)
    assert len(calls) == 2 and len(outer) == 1  # the inner wrapper only, inside its block
    assert torch.equal(calls[0][0][0], wrapped.gaussians.means) and "camera" in calls[0][1]
    assert torch.equal(wrapped.pred, plain.pred) and torch.equal(wrapped.loss, plain.loss)
    model(x, noise=noise())
    assert len(calls) == 2 and len(outer) == 1 and model._render_wrapper is None


def test_gmae_render_backend_for_is_the_backend_its_renders_run():
    model, x = tiny_gmae(), images()
    chosen = model.render_backend_for(torch.device("cpu"), batch_size=x.shape[0])
    model(x, noise=noise())
    assert chosen == model.last_render_backend == "fast"  # auto on a CPU
    model.render_backend = "reference"
    assert model.render_backend_for(torch.device("cpu")) == "reference"


@pytest.mark.parametrize("make", [tiny_mae, tiny_gmae])
def test_after_step_is_a_no_op_for_pixel_models(make):
    """MaskedImageModel's hooks the engine calls unconditionally: MAE and GMAE keep defaults."""
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.after_step(3, 10)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.pixel_output is True


def test_gaussians_index_and_detach():
    g = Gaussians(*(torch.randn(2, 4, d) for d in (3, 3, 4, 3)), opacities=torch.rand(2, 4))
    idx = torch.tensor([[3, 0], [1, 1]])
    sub = g.index(idx)
    assert sub.means.shape == (2, 2, 3) and sub.opacities.shape == (2, 2)
    assert torch.equal(sub.quats[0, 0], g.quats[0, 3])
    assert torch.equal(sub.colors[1, 1], g.colors[1, 1])
    assert g.detach().means.requires_grad is False


# ---------------------------------------------------------------- factory and errors


def test_factory_presets_and_overrides():
    model = create_model("mae", encoder="tiny", depth=1, img_size=IMG, patch_size=PATCH, **TINY_DEC)
    assert model.encoder.embed_dim == 192 and len(model.encoder.blocks) == 1
    assert model.encoder.num_patches == N and model.encoder.patch_size == PATCH
    assert model.encoder.img_size == IMG
    g = create_model("gmae", encoder="tiny", depth=1, img_size=IMG, patch_size=PATCH,
                     num_gaussians=4, camera="ortho", rotation="normalize", loss_on="all",
                     background=0.0, scale_cap=2.0, render_backend="auto", **TINY_DEC)  # fmt: skip
    assert g.num_gaussians == 4 and g.camera == "ortho" and g.head.scale_cap == 2.0
    assert g.camera_model == "ortho" and g.camera_at(8, 8).mode == "ortho"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: create_model("vae"), "unknown model"),
        (lambda: create_model("mae", encoder="huge"), "unknown encoder preset"),
        (lambda: create_model("mae", drop_path=0.1), "drop_path"),
        (lambda: create_model("latent_mim", norm_pix_loss=True), "norm_pix_loss"),
        (lambda: create_encoder("tiny", decoder_dim=3), "decoder_dim"),
        (lambda: ViTEncoder(img_size=30, patch_size=8), "not divisible"),
        (lambda: ViTEncoder(embed_dim=66, num_heads=6), "divisible by 4"),
        (lambda: tiny_mae(mask_ratio=1.0), "mask_ratio"),
        (lambda: tiny_mae(in_chans=1), "pixel_mean"),
        (lambda: tiny_gmae(rotation="euler"), "rotation"),
        (lambda: tiny_gmae(loss_on="visible"), "loss_on"),
        (lambda: tiny_gmae(num_gaussians=0), "num_gaussians"),
        (lambda: tiny_gmae(camera="fisheye"), "camera mode"),  # validated by the renderer
        (lambda: tiny_gmae(background=(1.0, 1.0)), "background"),
        (lambda: tiny_mae()(images(size=64)), "expected images of shape"),
        (lambda: tiny_mae()(torch.rand(2, 1, IMG, IMG)), "expected images of shape"),
        (lambda: tiny_gmae()(torch.rand(3, IMG, IMG)), "expected images of shape"),
        (lambda: tiny_mae()(images(), noise=noise(n=N + 1)), "noise must have shape"),
        (lambda: tiny_mae()(images(), mask_ratio=-0.1), "mask_ratio"),
    ],
)
def test_user_errors(call, match):
    with pytest.raises(GmaeError, match=match):
        call()


@pytest.mark.parametrize("make", [tiny_mae, tiny_gmae])
def test_bf16_autocast_gives_fp32_loss(make):
    model = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), noise=noise())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()


def test_checkpoint_holds_no_fixed_tables():
    model = tiny_gmae()
    assert not {k for k in model.state_dict() if "pos_embed" in k or "normalize" in k}
    torch.manual_seed(5)
    clone = GMAE(**{**TINY, **TINY_DEC, "num_gaussians": 8})
    x, nz = images(), noise()
    assert clone(x, noise=nz).loss != model(x, noise=nz).loss
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(x, noise=nz).loss, model(x, noise=nz).loss)
