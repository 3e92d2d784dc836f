"""The front end MAE and GMAE share: [0, 1] images -> ImageNet normalisation -> masked ViT."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from gmae.errors import GmaeError
from gmae.models.config import EncoderConfig
from gmae.models.vit import IMAGENET_MEAN, IMAGENET_STD, Normalize, ViTEncoder, check_images

DEFAULT_ENCODER = EncoderConfig()  # ViT-B/16 at 224 (frozen, so a safe default)


class MaskedImageModel(nn.Module):
    """Owns the encoder, the pixel normalisation and the default mask ratio.

    Subclasses add a decoder and implement ``forward(imgs, mask_ratio=None, noise=None)``.
    Images are always [B, in_chans, img_size, img_size] with values in [0, 1].
    """

    # Whether ``reconstruct`` gives pictures (False for latent-space models such as Latent MIM);
    # training draws reconstruction pictures only when it does.
    pixel_output: bool = True

    def __init__(
        self,
        *,
        encoder: EncoderConfig = DEFAULT_ENCODER,
        mask_ratio: float = 0.75,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
    ):
        super().__init__()
        in_chans = encoder.in_chans
        if not 0.0 <= mask_ratio < 1.0:
            raise GmaeError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if pixel_mean is None and pixel_std is None:
            if in_chans != 3:
                raise GmaeError(f"give pixel_mean and pixel_std for in_chans={in_chans}")
            pixel_mean, pixel_std = IMAGENET_MEAN, IMAGENET_STD
        if pixel_mean is None or pixel_std is None or len(pixel_mean) != in_chans:
            raise GmaeError(f"pixel_mean and pixel_std need {in_chans} values each")
        self.mask_ratio = mask_ratio
        self.normalize = Normalize(pixel_mean, pixel_std)
        self.encoder = ViTEncoder.from_config(encoder)

    @property
    def img_size(self) -> int:
        return self.encoder.img_size

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def in_chans(self) -> int:
        return self.encoder.in_chans

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> MaskedImageModel:
        """This class's model from a ``save_pretrained`` directory, a checkpoint file or a Hub id
        (see ``gmae.hub.from_pretrained``); an error if the file holds another model class."""
        from gmae.hub import from_pretrained

        model = from_pretrained(name_or_path, **kwargs)
        if not isinstance(model, cls):
            raise GmaeError(f"{name_or_path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, config: Any = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (the Hugging Face Hub layout) into
        ``save_directory``; ``config`` defaults to the one ``create_model`` recorded."""
        from gmae.hub import save_pretrained

        return save_pretrained(self, save_directory, config)

    def after_step(self, step: int, total_steps: int) -> None:
        """Called by the training engine after every optimizer step (``step``: steps done, 1
        after the first, of ``total_steps``). Nothing to do here; models with a momentum target
        (Latent MIM's EMA encoder) update it."""

    def check_images(self, imgs: Tensor) -> None:
        check_images(imgs, self.in_chans, self.img_size)

    def encode(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """[0, 1] images -> (latent [B, 1 + N_vis, D], mask [B, N], ids_restore [B, N])."""
        self.check_images(imgs)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        return self.encoder(self.normalize(imgs), ratio, noise)

    def forward_features(self, imgs: Tensor) -> Tensor:
        """Unmasked encoder tokens [B, 1 + N, D] of [0, 1] images (for probes and fine-tuning)."""
        self.check_images(imgs)
        return self.encoder.forward_features(self.normalize(imgs))
