"""Masked Autoencoder (He et al. 2021): ViT encoder on visible patches, light ViT decoder that
fills mask tokens back in and regresses the pixels of every patch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gmae.models.base import MaskedImageModel
from gmae.models.config import DecoderConfig, EncoderConfig, model_configs
from gmae.models.outputs import PretrainOutput, normalize_patches, patch_mse
from gmae.models.vit import (
    decoder_blocks,
    init_vit_weights,
    norm_layer,
    patchify,
    sincos_pos_embed_2d,
    unpatchify,
)
from gmae.precision import fp32_island


class MAE(MaskedImageModel):
    """MAE with a standard decoder; images in [0, 1], normalised inside.

    The target is the patchified ImageNet-normalised image (optionally per-patch normalised,
    ``norm_pix_loss``); the loss is the per-patch MSE averaged over masked patches. The encoder
    and decoder come as flat arguments or as ``encoder=EncoderConfig(...)`` /
    ``decoder=DecoderConfig(...)`` (see ``gmae.models.config``).
    """

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
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        *,
        encoder: EncoderConfig | None = None,
        decoder: DecoderConfig | None = None,
    ):
        encoder, decoder = model_configs(encoder, decoder, locals())
        super().__init__(
            encoder=encoder, mask_ratio=mask_ratio, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        self.decoder_config = decoder
        self.norm_pix_loss = norm_pix_loss

        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder.dim))
        self.register_buffer(
            "decoder_pos_embed",
            sincos_pos_embed_2d(decoder.dim, self.encoder.grid_size),
            persistent=False,
        )
        self.decoder_blocks = decoder_blocks(decoder, mlp_ratio=encoder.mlp_ratio)
        self.decoder_norm = norm_layer(decoder.dim)
        self.decoder_pred = nn.Linear(decoder.dim, encoder.patch_size**2 * encoder.in_chans)

        nn.init.normal_(self.mask_token, std=0.02)
        for module in (
            self.decoder_embed,
            self.decoder_blocks,
            self.decoder_norm,
            self.decoder_pred,
        ):
            module.apply(init_vit_weights)

    def no_weight_decay(self) -> set[str]:
        """Token and position-embedding names (the pos-embeds are fixed buffers)."""
        return {"encoder.cls_token", "encoder.pos_embed", "mask_token", "decoder_pos_embed"}

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Latent [B, 1 + N_vis, D] -> patch predictions [B, N, p*p*C] in patch order."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        # Append one mask token per masked patch, then unshuffle back to patch order.
        patches = torch.cat([x[:, 1:], self.mask_token.expand(b, n + 1 - x.shape[1], -1)], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def target(self, imgs: Tensor) -> Tensor:
        """Regression target for [0, 1] images: [B, N, p*p*C]."""
        target = patchify(self.normalize(imgs), self.patch_size)
        return normalize_patches(target) if self.norm_pix_loss else target

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Per-patch MSE between ``pred`` and ``target(imgs)``, averaged over masked patches (fp32
        under any autocast)."""
        with fp32_island():
            return patch_mse(pred.float(), self.target(imgs.float()), mask)

    def forward(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> PretrainOutput:
        latent, mask, ids_restore = self.encode(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return PretrainOutput(loss=loss, mask=mask, pred=pred, latent=latent)

    @torch.no_grad()
    def prediction_image(self, imgs: Tensor, pred: Tensor) -> Tensor:
        """Patch predictions [B, N, p*p*C] (``forward(imgs).pred``) as a [0, 1] image of every
        patch, masked and visible alike.

        With ``norm_pix_loss`` the model predicts normalised patches: each borrows its true mean
        / std from ``imgs`` (as MAE's demo does), an optimistic picture.
        """
        p, size = self.patch_size, self.img_size
        pred = pred.float()
        if self.norm_pix_loss:
            target = patchify(self.normalize(imgs), p)
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
            pred = pred * std + mean
        return self.normalize.inverse(unpatchify(pred, p, size, size)).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> dict[str, Tensor]:
        """MAE's visualisation, all [B, C, H, W] in [0, 1].

        input; masked (masked patches shown as the mean colour); recon (visible patches pasted
        from the input, masked ones predicted); mask_image (1 = masked).
        """
        out = self.forward(imgs, mask_ratio, noise)
        p, size = self.patch_size, self.img_size
        pred_img = self.prediction_image(imgs, out.pred)
        mask_image = unpatchify(
            out.mask.unsqueeze(-1).expand(-1, -1, p * p * self.in_chans), p, size, size
        )
        fill = self.normalize.mean.expand_as(imgs)  # normalised 0
        return {
            "input": imgs,
            "masked": imgs * (1 - mask_image) + fill * mask_image,
            "recon": imgs * (1 - mask_image) + pred_img * mask_image,
            "mask_image": mask_image,
        }
