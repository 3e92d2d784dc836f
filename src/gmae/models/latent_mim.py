"""Latent MIM (Wei, Gupta, Morgado, ECCV 2024, arXiv 2407.15837): masked image modelling in
latent space.

The online encoder (MAE's ViT) sees ~10 % of the patches; an EMA copy of it, the target encoder,
sees the other ~90 % (the masked ones) and produces the targets; a small cross-attention decoder
predicts each target token from the visible ones, and a patch-discrimination InfoNCE inside each
image makes every prediction pick its own target out of the image's other targets. Both encoders
end in a projector MLP; the EMA covers encoder and projector. Only the online encoder is kept for
evaluation and export (``model.encoder``). Tags as in docs/models.md: [paper], [authors' code]
(github.com/yibingwei-1/LatentMIM), [choice].
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Attention
from torch import Tensor, nn

from gmae.errors import GmaeError
from gmae.models.base import MaskedImageModel
from gmae.models.config import DecoderConfig, EncoderConfig, model_configs
from gmae.models.outputs import PretrainOutput
from gmae.models.vit import ViTEncoder, init_vit_weights, norm_layer, sincos_pos_embed_2d
from gmae.precision import fp32_island
from gmae.schedules import cosine_ramp  # lived here; latent_mim.cosine_ramp still works

# The decoder's default: 3 cross-attention blocks, shallower than MAE's 8 self-attention ones.
LATENT_MIM_DECODER = DecoderConfig(dim=512, depth=3, num_heads=16)

# --- schedules (pure functions of the optimizer step, so a resumed run repeats exactly) -------


def ema_momentum(step: int, total_steps: int, base: float = 0.99) -> float:
    """Target-encoder momentum after ``step`` of ``total_steps`` optimizer steps: cosine from
    ``base`` at step 0 to 1.0 at the last step [paper]."""
    return cosine_ramp(base, 1.0, step / max(total_steps, 1))


# --- the loss and the optional regulariser --------------------------------------------------


def patch_infonce(pred: Tensor, target: Tensor, temperature: float = 0.2) -> Tensor:
    """Patch discrimination inside each image [paper]: pred, target [B, M, D], row m of both
    belongs to the same patch.

    Each prediction is scored against the M targets of its own image (cosine / temperature) and
    must pick its own: cross-entropy with label m, averaged over all B x M predictions. Before
    that the predictions are standardised per image and channel over the M tokens, and the loss
    is scaled by 2 x temperature [authors' code]. Batch-independent: every term is within an image.
    """
    with fp32_island():  # under autocast `@` would put the logits back in bf16
        pred, target = pred.float(), target.float()
        b, m, _ = pred.shape
        pred = (pred - pred.mean(dim=1, keepdim=True)) / (pred.std(dim=1, keepdim=True) + 1e-4)
        logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).transpose(1, 2)
        labels = torch.arange(m, device=pred.device).expand(b, m)
        loss = F.cross_entropy(logits.flatten(0, 1) / temperature, labels.flatten())
        return loss * 2 * temperature


def mean_pairwise_similarity(x: Tensor) -> Tensor:
    """Per image: the mean cosine similarity over all ordered token pairs (self-pairs included) of
    x [B, M, D] -> [B]."""
    with fp32_island():
        x = F.normalize(x.float(), dim=-1)
        return (x @ x.transpose(1, 2)).mean(dim=(1, 2))


# --- patches with gaps ----------------------------------------------------------------------


def gap_offsets(noise: Tensor, gap: int) -> tuple[Tensor, Tensor]:
    """Per-patch (row, column) offsets in [0, gap) derived from the mask noise [B, N].

    Uniform float32 noise carries 24 random bits, k = noise x 2^24; the masking only uses the
    order of k (its high bits, in effect), the offsets use k mod gap and (k // gap) mod gap (its
    low bits), so offsets are (for a power-of-two gap exactly, otherwise up to 1e-7) uniform and
    independent of the mask, and the whole sample is a function of the noise [choice].
    """
    k = (noise.double() * 2**24).long()
    return (k // gap) % gap, k % gap


def gapped_patches(x: Tensor, grid: int, patch_size: int, gap: int, noise: Tensor) -> Tensor:
    """Jittered patches with gaps, tiled into an ordinary image [B, C, grid p, grid p].

    ``x`` [B, C, grid (p + gap), grid (p + gap)] is cut into grid x grid cells of p + gap pixels;
    from cell n (row-major) the p x p patch at offset ``gap_offsets(noise, gap)[:, n]`` is taken
    [authors' code], so neighbouring patches are 1 .. 2 gap - 1 pixels apart. Tiling
    them makes the patch embedding of the result the embedding of the jittered patches.
    """
    b, c = x.shape[:2]
    p, cell = patch_size, patch_size + gap
    dy, dx = gap_offsets(noise, gap)
    r = torch.arange(p, device=x.device)
    cells = x.reshape(b, c, grid, cell, grid, cell).permute(0, 2, 4, 1, 3, 5)  # [B, gy, gx, C, ..]
    rows = (dy.view(b, grid, grid, 1) + r).view(b, grid, grid, 1, p, 1)
    cells = cells.gather(4, rows.expand(-1, -1, -1, c, -1, cell))  # [B, gy, gx, C, p, cell]
    cols = (dx.view(b, grid, grid, 1) + r).view(b, grid, grid, 1, 1, p)
    patches = cells.gather(5, cols.expand(-1, -1, -1, c, p, -1))  # [B, gy, gx, C, p, p]
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * p, grid * p)


# --- projector and decoder pieces -----------------------------------------------------------


class Projector(nn.Sequential):
    """``depth`` bias-free Linear layers dim -> hidden -> ... -> dim, each followed by LayerNorm,
    GELU between them [authors' code]; depth 0 is the identity."""

    def __init__(self, dim: int, hidden_dim: int, depth: int):
        layers: list[nn.Module] = []
        for i in range(depth):
            out = dim if i == depth - 1 else hidden_dim
            layers += [nn.Linear(dim if i == 0 else hidden_dim, out, bias=False), norm_layer(out)]
            if i < depth - 1:
                layers.append(nn.GELU())
        super().__init__(*layers)


class CrossAttention(nn.Module):
    """Multi-head attention of queries x [B, L, D] over a context [B, S, D] (timm layout)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossBlock(nn.Module):
    """Decoder block [authors' code]: self-attention among the queries, then cross-attention from
    the queries to the visible tokens (which stay fixed through the decoder), then an MLP; pre-norm
    residuals, separate LayerNorms for queries and context."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.self_attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = norm_layer(dim)
        self.norm_context = norm_layer(dim)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=True)
        self.norm3 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), self.norm_context(context))
        return x + self.mlp(self.norm3(x))


def encode_patches(encoder: ViTEncoder, x: Tensor, ids: Tensor) -> Tensor:
    """``encoder`` on the patches ``ids`` [B, M] of a normalised image: [B, 1 + M, D], cls first."""
    tokens = encoder._embed(x)  # patch embedding + position, as in ViTEncoder.forward
    tokens = torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return encoder._encode(tokens)


# --- the model ------------------------------------------------------------------------------


class LatentMIM(MaskedImageModel):
    """Latent MIM; images in [0, 1], normalised inside; no pixel decoder.

    Knobs: patch_gap (pixels between patch cells, 0: plain ViT patches), proj_hidden_dim /
    proj_depth (projector MLP), temperature (InfoNCE), momentum (EMA start, ramps to 1),
    visual_cues (mask queries start from a position-weighted average of the visible tokens),
    sim_coeff / sim_target_start / sim_target_end (similarity regulariser, off at 0).
    ``after_step(step, total_steps)`` must run after every optimizer step (the engine calls it).
    The encoder and decoder come as flat arguments or as ``encoder=EncoderConfig(...)`` /
    ``decoder=DecoderConfig(...)`` (default ``LATENT_MIM_DECODER``).
    """

    pixel_output = False

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        decoder_dim: int = 512,
        decoder_depth: int = 3,
        decoder_num_heads: int = 16,
        mask_ratio: float = 0.9,
        patch_gap: int = 0,
        proj_hidden_dim: int = 4096,
        proj_depth: int = 3,
        temperature: float = 0.2,
        momentum: float = 0.99,
        visual_cues: bool = True,
        sim_coeff: float = 0.0,
        sim_target_start: float = 0.75,
        sim_target_end: float = 0.25,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        *,
        encoder: EncoderConfig | None = None,
        decoder: DecoderConfig | None = None,
    ):
        encoder, decoder = model_configs(encoder, decoder, locals(), LATENT_MIM_DECODER)
        super().__init__(
            encoder=encoder, mask_ratio=mask_ratio, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if not isinstance(patch_gap, int) or patch_gap < 0:
            raise GmaeError(f"patch_gap must be a non-negative integer, got {patch_gap!r}")
        if not isinstance(proj_depth, int) or proj_depth < 0:
            raise GmaeError(f"proj_depth must be a non-negative integer, got {proj_depth!r}")
        if not temperature > 0:
            raise GmaeError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise GmaeError(f"momentum must be in [0, 1], got {momentum}")
        if sim_coeff < 0:
            raise GmaeError(f"sim_coeff must be non-negative, got {sim_coeff}")
        self.patch_gap = patch_gap
        self.temperature = temperature
        self.momentum = momentum
        self.visual_cues = visual_cues
        self.sim_coeff = sim_coeff
        self.sim_target_start, self.sim_target_end = sim_target_start, sim_target_end

        self.decoder_config = decoder
        dim = encoder.embed_dim
        self.projector = Projector(dim=dim, hidden_dim=proj_hidden_dim, depth=proj_depth)

        self.decoder_embed = nn.Linear(dim, decoder.dim)
        self.register_buffer(
            "decoder_pos_embed",
            sincos_pos_embed_2d(decoder.dim, self.encoder.grid_size),
            persistent=False,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder.dim))  # zero init [authors' code]
        self.decoder_cls_token = nn.Parameter(torch.zeros(1, 1, decoder.dim))
        self.decoder_blocks = nn.ModuleList(
            [
                CrossBlock(
                    dim=decoder.dim, num_heads=decoder.num_heads, mlp_ratio=encoder.mlp_ratio
                )
                for _ in range(decoder.depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder.dim)
        self.decoder_pred = nn.Linear(decoder.dim, dim)

        nn.init.normal_(self.decoder_cls_token, std=0.02)
        for module in (
            self.projector,
            self.decoder_embed,
            self.decoder_blocks,
            self.decoder_norm,
            self.decoder_pred,
        ):
            module.apply(init_vit_weights)

        # The EMA target: a frozen copy of encoder + projector, moved by after_step only.
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        # step / total_steps of the last after_step (drives the similarity target); saved in
        # checkpoints so that a resumed run continues the schedule.
        self.register_buffer("train_progress", torch.zeros((), dtype=torch.float64))

    def no_weight_decay(self) -> set[str]:
        """Token and position-embedding names (the pos-embeds are fixed buffers)."""
        return {
            "encoder.cls_token",
            "encoder.pos_embed",
            "mask_token",
            "decoder_cls_token",
            "decoder_pos_embed",
        }

    # -- the EMA target

    def ema_pairs(self) -> list[tuple[Tensor, Tensor]]:
        """(online, target) parameter pairs of encoder and projector."""
        online = [*self.encoder.parameters(), *self.projector.parameters()]
        target = [*self.target_encoder.parameters(), *self.target_projector.parameters()]
        return list(zip(online, target, strict=True))

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """After optimizer step ``step`` (1 after the first) of ``total_steps``: target <- m target
        + (1 - m) online with m = ``ema_momentum(step, total_steps, self.momentum)``."""
        m = ema_momentum(step, total_steps, self.momentum)
        for online, target in self.ema_pairs():
            target.mul_(m).add_(online.detach(), alpha=1.0 - m)
        self.train_progress.fill_(min(step / max(total_steps, 1), 1.0))

    # -- pieces of the forward pass

    def num_visible(self, n: int, mask_ratio: float) -> int:
        """Number of visible patches; at least one visible and two target patches."""
        n_keep = int(n * (1 - mask_ratio))
        if not 1 <= n_keep <= n - 2:
            raise GmaeError(
                f"mask_ratio {mask_ratio} keeps {n_keep} of {n} patches visible; Latent MIM needs "
                "at least 1 visible and 2 masked patches"
            )
        return n_keep

    def patch_view(self, imgs: Tensor, noise: Tensor) -> Tensor:
        """Normalised image whose p x p patches are the ones both encoders see.

        With ``patch_gap`` g the image is resized (bicubic) to grid (p + g) pixels and each patch
        is a jittered p x p crop of its (p + g) cell (``gapped_patches``) [paper; the resize is
        our choice, the authors crop the training image at grid (p + g) directly]."""
        x = self.normalize(imgs)
        if self.patch_gap == 0:
            return x
        grid, p = self.encoder.grid_size, self.patch_size
        size = grid * (p + self.patch_gap)
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        return gapped_patches(x, grid, p, self.patch_gap, noise)

    @torch.no_grad()
    def forward_target(self, x: Tensor, target_ids: Tensor) -> Tensor:
        """Targets [B, M, D]: EMA encoder + projector on the masked patches only, cls dropped."""
        return self.target_projector(encode_patches(self.target_encoder, x, target_ids)[:, 1:])

    def decoder_queries(self, visible: Tensor, visible_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Queries [B, 1 + M, dec_dim]: decoder cls, then one per target patch.

        Target query = mask_token + its patch's position embedding + (``visual_cues``) the
        average of the visible decoder tokens ``visible`` [B, N_vis, dec_dim] weighted by
        softmax_j(<pos(target), pos(visible j)> / sqrt(dec_dim)), with pos the fixed sin-cos
        table: a broad kernel, peaked at the target's own position and mostly decaying with the
        offset [authors' code].
        """
        b, m = target_ids.shape
        pos = self.decoder_pos_embed[0, 1:]  # [N, dec_dim]
        queries = self.mask_token.expand(b, m, -1) + pos[target_ids]
        if self.visual_cues:
            scores = pos[target_ids] @ pos[visible_ids].transpose(1, 2) / visible.shape[-1] ** 0.5
            queries = queries + scores.softmax(dim=-1) @ visible
        cls = self.decoder_cls_token.expand(b, -1, -1) + self.decoder_pos_embed[:, :1]
        return torch.cat([cls, queries], dim=1)

    def forward_decoder(self, projected: Tensor, visible_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Projected online tokens [B, 1 + N_vis, D] -> predicted targets [B, M, D]."""
        x = self.decoder_embed(projected)
        queries = self.decoder_queries(x[:, 1:], visible_ids, target_ids)
        rows = F.pad(visible_ids + 1, (1, 0))  # table rows: 0 (all zero) for cls, 1 + patch id
        context = x + self.decoder_pos_embed[0][rows]
        for block in self.decoder_blocks:
            queries = block(queries, context)
        return self.decoder_pred(self.decoder_norm(queries))[:, 1:]

    def similarity_target(self) -> Tensor:
        """s* now, as a 0-dim tensor on the model's device (no host sync in the forward pass)."""
        # gmae.schedules.cosine_ramp, computed on the device
        progress = self.train_progress.clamp(0.0, 1.0)
        start, end = self.sim_target_start, self.sim_target_end
        return (end + (start - end) * 0.5 * (1.0 + torch.cos(math.pi * progress))).float()

    def forward_loss(self, pred: Tensor, target: Tensor, projected: Tensor) -> Tensor:
        """InfoNCE of ``pred`` vs ``target`` [B, M, D], plus, if ``sim_coeff`` > 0, the similarity
        regulariser: sim_coeff x mean over images of (s(pred) - s*)^2 + (s(visible) - s*)^2, with
        s the mean pairwise cosine similarity of an image's tokens (predictions; projected visible
        online tokens without cls) and s* cosine-annealed from sim_target_start to sim_target_end
        over training [authors' code, per image: our choice]."""
        loss = patch_infonce(pred, target, self.temperature)
        if self.sim_coeff > 0:
            s = self.similarity_target()
            dev = (mean_pairwise_similarity(pred) - s).pow(2)
            dev = dev + (mean_pairwise_similarity(projected[:, 1:]) - s).pow(2)
            loss = loss + self.sim_coeff * dev.mean()
        return loss

    # -- the model

    def forward(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> PretrainOutput:
        """Latent MIM loss of [0, 1] images; ``noise`` [B, N] fixes the mask and the gaps.

        PretrainOutput: mask [B, N] (1 = target patch); pred the predicted targets [B, M, D] in
        the order of ``argsort(noise)[:, N_vis:]``; latent the online encoder's tokens
        [B, 1 + N_vis, D] (cls first).
        """
        self.check_images(imgs)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        b, n = imgs.shape[0], self.encoder.num_patches
        n_keep = self.num_visible(n, ratio)
        if noise is None:
            noise = torch.rand(b, n, device=imgs.device)
        elif tuple(noise.shape) != (b, n):
            raise GmaeError(f"noise must have shape [{b}, {n}], got {list(noise.shape)}")
        x = self.patch_view(imgs, noise.to(imgs.device))

        latent, mask, ids_restore = self.encoder(x, ratio, noise)
        ids_shuffle = torch.argsort(ids_restore, dim=1)  # patch ids by increasing noise
        visible_ids, target_ids = ids_shuffle[:, :n_keep], ids_shuffle[:, n_keep:]
        target = self.forward_target(x, target_ids)
        projected = self.projector(latent)
        pred = self.forward_decoder(projected, visible_ids, target_ids)
        loss = self.forward_loss(pred, target, projected)
        return PretrainOutput(loss=loss, mask=mask, pred=pred, latent=latent)

    def reconstruct(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Not applicable: Latent MIM predicts latent features, not pixels."""
        raise GmaeError(
            "Latent MIM predicts latent features, not pixels: it has no reconstructions "
            "(evaluate it with linprobe / knn / finetune)"
        )
