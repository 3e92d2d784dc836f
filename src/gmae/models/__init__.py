"""ViT encoder, MAE, GMAE and Latent MIM. Models take images in [0, 1] and normalise them inside.

Example: ``create_model("gmae", encoder="base", img_size=224, patch_size=16)(imgs)`` returns a
``PretrainOutput(loss, mask, pred, latent, gaussians)``. See docs/models.md.
"""

from gmae.models.base import MaskedImageModel
from gmae.models.config import DecoderConfig, EncoderConfig
from gmae.models.factory import ENCODER_PRESETS, MODELS, create_encoder, create_model
from gmae.models.gmae import GMAE, GaussianHead, shoemake_quaternion
from gmae.models.latent_mim import LatentMIM
from gmae.models.mae import MAE
from gmae.models.outputs import Gaussians, PretrainOutput, normalize_patches, patch_mse
from gmae.models.vit import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputRangeWarning,
    Normalize,
    ViTEncoder,
    patchify,
    random_masking,
    sincos_pos_embed_2d,
    unpatchify,
)

__all__ = [
    "ENCODER_PRESETS",
    "DecoderConfig",
    "EncoderConfig",
    "GMAE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputRangeWarning",
    "MAE",
    "MODELS",
    "Gaussians",
    "GaussianHead",
    "LatentMIM",
    "MaskedImageModel",
    "Normalize",
    "PretrainOutput",
    "ViTEncoder",
    "create_encoder",
    "create_model",
    "normalize_patches",
    "patch_mse",
    "patchify",
    "random_masking",
    "shoemake_quaternion",
    "sincos_pos_embed_2d",
    "unpatchify",
]
