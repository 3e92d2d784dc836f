"""ViT encoder with fixed 2-D sin-cos position embeddings and MAE-style random masking.

Shared pieces used by MAE and GMAE: pixel normalisation, patchify / unpatchify, the sin-cos
table, per-sample random masking and the encoder itself. Built from timm's ``PatchEmbed`` and
``Block`` so that the encoder is exactly a timm ViT (minus the head, with a fixed pos-embed).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from gmae.errors import GmaeError
from gmae.models.config import DecoderConfig, EncoderConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# MAE / GMAE use LayerNorm eps 1e-6 everywhere (timm's default is 1e-5).
norm_layer = partial(nn.LayerNorm, eps=1e-6)


def sincos_embed_2d_at(embed_dim: int, xy: Tensor) -> Tensor:
    """Sin-cos embeddings [N, embed_dim] (float32) of points ``xy`` [N, 2] = (column, row) in
    patch units (patch (r, c)'s centre is (c, r)): the same channels as ``sincos_pos_embed_2d``,
    at any real position, so that a point and the patch it lies on share one frame."""
    if embed_dim % 4 != 0:
        raise GmaeError(
            f"embedding width must be divisible by 4 for sin-cos embeddings, got {embed_dim}"
        )
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    x = xy[:, :1].double() * omega  # [N, D/4]
    y = xy[:, 1:2].double() * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


def sincos_pos_embed_2d(embed_dim: int, grid_size: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos position table [1 (+1 for cls), grid_size**2, embed_dim] (float32).

    MAE's layout: patches row-major; channels [sin(x w), cos(x w), sin(y w), cos(y w)] with x the
    column and y the row of a patch, w_i = 10000^(-i / (D/4)); a leading all-zero row for cls.
    """
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64),
        torch.arange(grid_size, dtype=torch.float64),
        indexing="ij",
    )
    table = sincos_embed_2d_at(embed_dim, torch.stack([cols.reshape(-1), rows.reshape(-1)], 1))
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim), table], dim=0)
    return table.unsqueeze(0)


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """[B, C, H, W] -> [B, N, p*p*C], patches row-major, pixels inside a patch ordered (p, q, c)."""
    b, c, h, w = imgs.shape
    p = patch_size
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    # permute, not einsum: CUDA autocast would run einsum (a matmul op) in bf16 and round pixels
    x = x.permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """Inverse of ``patchify``: [B, N, p*p*C] -> [B, C, H, W]."""
    b, n, d = x.shape
    p = patch_size
    gh, gw = height // p, width // p
    c = d // (p * p)
    if gh * gw != n or c * p * p != d:
        raise GmaeError(f"cannot unpatchify [B, {n}, {d}] to {height}x{width} with patch {p}")
    x = x.reshape(b, gh, gw, p, p, c)
    x = x.permute(0, 5, 1, 3, 2, 4)  # bhwpqc -> bchpwq (not einsum: see patchify)
    return x.reshape(b, c, height, width)


def random_masking(
    x: Tensor, mask_ratio: float, noise: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random subset of tokens per sample, as MAE does.

    Sorting uniform noise gives a random permutation; the smallest ``N * (1 - mask_ratio)`` noise
    values are kept. Returns (kept tokens [B, N_vis, D], mask [B, N] with 1 = masked,
    ids_restore [B, N] that undoes the shuffle).
    """
    b, n, d = x.shape
    if not 0.0 <= mask_ratio < 1.0:
        raise GmaeError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    n_keep = int(n * (1 - mask_ratio))
    if noise is None and n_keep == n:
        # Nothing to mask: keep patch order, so mask ratio 0 is deterministic and RNG-free.
        noise = torch.arange(n, device=x.device, dtype=torch.float32).expand(b, n)
    elif noise is None:
        noise = torch.rand(b, n, device=x.device)
    elif tuple(noise.shape) != (b, n):
        raise GmaeError(f"noise must have shape [{b}, {n}], got {list(noise.shape)}")
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :n_keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    # Mask in shuffled order (first n_keep visible), then unshuffle to patch order.
    mask = torch.ones(b, n, device=x.device)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def visible_ids(ids_restore: Tensor, num_visible: int) -> Tensor:
    """Patch indices of the visible tokens, in the order the encoder returns them [B, N_vis]."""
    # ids_restore is the inverse permutation of ids_shuffle, so argsort gives ids_shuffle back.
    return torch.argsort(ids_restore, dim=1)[:, :num_visible]


def vit_blocks(*, dim: int, depth: int, num_heads: int, mlp_ratio: float) -> nn.ModuleList:
    """``depth`` pre-norm timm Blocks (qkv bias, LayerNorm eps 1e-6): MAE's encoder / decoder."""
    return nn.ModuleList(
        [
            Block(
                dim=dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                norm_layer=norm_layer,
            )
            for _ in range(depth)
        ]
    )


def decoder_blocks(decoder: DecoderConfig, mlp_ratio: float) -> nn.ModuleList:
    """The self-attention decoder of MAE and GMAE; ``mlp_ratio`` is the encoder's [MAE]."""
    return vit_blocks(
        dim=decoder.dim, depth=decoder.depth, num_heads=decoder.num_heads, mlp_ratio=mlp_ratio
    )


def init_vit_weights(module: nn.Module) -> None:
    """MAE's init (timm convention): xavier-uniform Linear with zero bias, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class InputRangeWarning(UserWarning):
    """Images outside [0, 1] reached a model that normalises its input itself."""


# Slack for interpolation overshoot; ImageNet-normalised images reach about -2.1 and 2.6.
INPUT_RANGE_TOLERANCE = 0.05
_input_range_warned = False  # the warning is given once per process


class Normalize(nn.Module):
    """Per-channel (x - mean) / std for images in [0, 1]; ``inverse`` maps back.

    Warns once per process (``InputRangeWarning``) when an input lies outside [0, 1], as
    ImageNet-normalised input (the timm / torchvision convention) would be normalised twice. Only
    the first batch in training mode and the first in eval mode are checked (one host sync each),
    so training steps stay free of syncs.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if len(mean) != len(std):
            raise GmaeError(f"pixel mean and std differ in length: {len(mean)} vs {len(std)}")
        # Not saved in checkpoints: a fixed function of the constructor arguments.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._range_checked: set[bool] = set()  # the modes (self.training) already checked

    def forward(self, x: Tensor) -> Tensor:
        if not _input_range_warned and self.training not in self._range_checked:
            self._check_range(x)
        return (x - self.mean) / self.std

    def _check_range(self, x: Tensor) -> None:
        global _input_range_warned
        if x.numel() == 0 or x.is_meta or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        self._range_checked.add(self.training)
        try:
            lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        except RuntimeError:  # no values to read (e.g. under vmap or a fake-tensor mode)
            return
        if lo < -INPUT_RANGE_TOLERANCE or hi > 1 + INPUT_RANGE_TOLERANCE:
            _input_range_warned = True
            mean = ", ".join(f"{v:.3g}" for v in self.mean.flatten().tolist())
            std = ", ".join(f"{v:.3g}" for v in self.std.flatten().tolist())
            warnings.warn(
                f"model input spans [{lo:.2f}, {hi:.2f}], outside [0, 1]: gmae models take "
                f"unnormalised images in [0, 1] and normalise them inside (mean {mean}, std "
                f"{std}), so ImageNet-normalised input is normalised twice",
                InputRangeWarning,
                stacklevel=2,
            )

    def inverse(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


class ViTEncoder(nn.Module):
    """ViT encoder (cls token, fixed sin-cos pos-embed, pre-norm Blocks, final LayerNorm).

    Input is an already normalised image [B, in_chans, img_size, img_size]. ``forward`` runs on a
    random subset of patches (MAE masking); ``forward_features`` runs on all of them. Built from
    flat keyword arguments or ``ViTEncoder.from_config(EncoderConfig(...))``; ``config`` gives
    the ``EncoderConfig`` back.
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
    ):
        super().__init__()
        check_image_geometry(img_size, patch_size)
        if embed_dim % num_heads != 0:
            raise GmaeError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed, so a buffer (not a frozen parameter) and not saved: it is recomputed from the
        # geometry, which also lets a checkpoint load at another image size.
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(embed_dim, self.grid_size), persistent=False
        )
        self.blocks = vit_blocks(
            dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio
        )
        self.norm = norm_layer(embed_dim)
        self.init_weights()

    @classmethod
    def from_config(cls, config: EncoderConfig) -> ViTEncoder:
        return cls(**config.flat())

    @property
    def config(self) -> EncoderConfig:
        return EncoderConfig(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=self.in_chans,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
        )

    def init_weights(self) -> None:
        # Patch embedding initialised as the Linear it is (MAE), tokens N(0, 0.02).
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.blocks.modules():
            init_vit_weights(m)
        init_vit_weights(self.norm)

    def _embed(self, x: Tensor) -> Tensor:
        check_images(x, self.in_chans, self.img_size)
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def _encode(self, tokens: Tensor) -> Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(
        self, x: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches of a normalised image.

        Returns latent [B, 1 + N_vis, D] (cls first), mask [B, N] (1 = masked) and
        ids_restore [B, N].
        """
        tokens, mask, ids_restore = random_masking(self._embed(x), mask_ratio, noise)
        return self._encode(tokens), mask, ids_restore

    def forward_features(self, x: Tensor) -> Tensor:
        """Encode all patches of a normalised image (evaluation): [B, 1 + N, D]."""
        return self._encode(self._embed(x))


def check_image_geometry(img_size: int, patch_size: int) -> None:
    if not isinstance(img_size, int) or not isinstance(patch_size, int):
        raise GmaeError(
            f"img_size and patch_size must be integers (square images), got {img_size!r}, "
            f"{patch_size!r}"
        )
    if patch_size <= 0 or img_size <= 0 or img_size % patch_size != 0:
        raise GmaeError(f"img_size {img_size} is not divisible by patch_size {patch_size}")


def check_images(x: Tensor, in_chans: int, img_size: int) -> None:
    """Raise GmaeError unless x is [B, in_chans, img_size, img_size]."""
    if x.ndim != 4 or x.shape[1] != in_chans or x.shape[2] != img_size or x.shape[3] != img_size:
        raise GmaeError(
            f"expected images of shape [B, {in_chans}, {img_size}, {img_size}], got {list(x.shape)}"
        )
