"""Gaussian Masked Autoencoder (Rajasegaran et al. 2025, arXiv 2501.03229).

MAE's encoder; the decoder reads [cls, visible latents, k learnable queries] with full
self-attention, and a linear head turns each query into one 3-D Gaussian. The Gaussians are
splatted through a fixed camera and the loss compares the render with the input on the masked
patches. Tags: [paper], [authors' code], [choice] as in docs/models.md.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmae.errors import GmaeError
from gmae.models.base import MaskedImageModel
from gmae.models.config import DecoderConfig, EncoderConfig, model_configs
from gmae.models.outputs import Gaussians, PretrainOutput, normalize_patches, patch_mse
from gmae.models.vit import (
    decoder_blocks,
    init_vit_weights,
    norm_layer,
    patchify,
    sincos_embed_2d_at,
    sincos_pos_embed_2d,
    unpatchify,
    visible_ids,
)
from gmae.precision import fp32_island
from gmae.render import Camera, RenderSettings, project, render, resolve_backend

if TYPE_CHECKING:
    from gmae.render import Projection, RenderOutput

ROTATIONS = ("shoemake", "normalize")
LOSS_ON = ("masked", "all")
HEAD_INITS = ("xavier", "torch")
QUERY_INITS = ("uniform", "normal")
BACKGROUND_FILLS = ("fixed", "visible_mean")
QUERY_ANCHORS = ("none", "grid", "attend", "attend_all", "attend_grid", "mixed", "attend_local")
# Centres read by a PatchPointer (with ``mixed``, only those of the queries after the grid's).
ATTENDING_ANCHORS = ("attend", "attend_all", "attend_grid", "mixed", "attend_local")
REFINE_FEEDBACK = ("error", "none")
# Raw channels the saturation guard watches: z (depth) and the three scales.
GUARDED_CHANNELS = (2, 3, 4, 5)


def shoemake_quaternion(a: Tensor) -> Tensor:
    """Shoemake's uniform map from [0, 1]^3 to unit quaternions (wxyz) [authors' code].

    q = (sqrt(1-a0) sin 2 pi a1, sqrt(1-a0) cos 2 pi a1, sqrt(a0) sin 2 pi a2, sqrt(a0) cos 2 pi a2)
    """
    a0, a1, a2 = a.unbind(-1)
    # Clamp so that a saturated sigmoid (exactly 0 or 1 in fp32) gives no inf gradient.
    r1 = (1 - a0).clamp_min(1e-12).sqrt()
    r2 = a0.clamp_min(1e-12).sqrt()
    t1, t2 = 2 * math.pi * a1, 2 * math.pi * a2
    return torch.stack([r1 * t1.sin(), r1 * t1.cos(), r2 * t2.sin(), r2 * t2.cos()], dim=-1)


def grid_anchors(num: int) -> Tensor:
    """``num`` points [num, 2] = (x, y) in (-1, 1), row-major cell centres of a g x ceil(num / g)
    grid with g = ceil(sqrt(num)) (the last row partly filled when ``num`` is not a square): the
    image positions of anchored queries, in the camera's frame (x = -1 the left edge)."""
    cols = math.ceil(math.sqrt(num))
    rows = math.ceil(num / cols)
    index = torch.arange(num, dtype=torch.float64)
    x = ((index % cols) + 0.5) / cols * 2 - 1
    y = ((index // cols) + 0.5) / rows * 2 - 1
    return torch.stack([x, y], dim=1).float()


class GaussianHead(nn.Module):
    """Linear(dim -> 11 + C, no bias) and the activations turning a token into a Gaussian.

    Raw channels: [0:3] center, [3:6] scale, [6:10] rotation, [10:10+C] colour, [10+C] opacity.
    center = 2 (sigmoid - 0.5) in (-1, 1); scale = scale_cap * sigmoid; rotation ``shoemake``
    (3 sigmoids, 4th channel unused) or ``normalize`` (L2-normalised 4-vector); colour and
    opacity sigmoid [authors' code; ``normalize`` is a choice].

    ``anchors`` [n, 2] (x, y): a patch-anchored layout [choice, not the paper's]: query j's centre
    is ``anchors[j] + anchor_range * tanh(u)`` in x and y (z as above), so the head predicts an
    offset from a fixed place instead of a place anywhere on the image. With n < k only the
    first n queries are anchored (``query_anchor="mixed"``); the others keep the sigmoid centre.

    ``flat_depth`` [a control, not a recipe]: z = 0 for every Gaussian (the raw z channel is
    ignored), so compositing order is the query order and depth carries nothing per image.
    """

    def __init__(
        self,
        dim: int,
        color_channels: int = 3,
        scale_cap: float = 1.0,
        rotation: str = "shoemake",
        init: str = "xavier",
        anchors: Tensor | None = None,
        anchor_range: float = 0.25,
        flat_depth: bool = False,
    ):
        super().__init__()
        if rotation not in ROTATIONS:
            raise GmaeError(f"unknown rotation {rotation!r}; choose from {', '.join(ROTATIONS)}")
        if not scale_cap > 0:
            raise GmaeError(f"scale_cap must be positive, got {scale_cap}")
        if init not in HEAD_INITS:
            raise GmaeError(f"unknown head_init {init!r}; choose from {', '.join(HEAD_INITS)}")
        self.color_channels = color_channels
        self.scale_cap = scale_cap
        self.rotation = rotation
        self.init = init
        self.anchor_range = float(anchor_range)
        self.flat_depth = bool(flat_depth)
        # Rebuilt from the config, never stored: checkpoints keep the same keys either way.
        self.register_buffer("anchors", anchors, persistent=False)
        # ``torch``: nn.Linear's own init (kaiming-uniform, a = sqrt 5), as in the authors' code;
        # its raw outputs start about 2.3x smaller than xavier's, further from the sigmoid tails.
        self.proj = nn.Linear(dim, 11 + color_channels, bias=False)

    def init_weights(self) -> None:
        if self.init == "xavier":
            nn.init.xavier_uniform_(self.proj.weight)
        else:
            self.proj.reset_parameters()

    def activate(self, raw: Tensor) -> Gaussians:
        """Raw head output [B, K, 11 + C] -> activated Gaussians (computed in fp32)."""
        raw = raw.float()
        c = self.color_channels
        if self.rotation == "shoemake":
            quats = shoemake_quaternion(torch.sigmoid(raw[..., 6:9]))
        else:
            quats = F.normalize(raw[..., 6:10], dim=-1)
        means = 2 * (torch.sigmoid(raw[..., 0:3]) - 0.5)
        if self.anchors is not None:
            n = self.anchors.shape[0]
            xy = self.anchors.to(raw.dtype) + self.anchor_range * torch.tanh(raw[..., :n, 0:2])
            xy = torch.cat([xy, means[..., n:, 0:2]], dim=-2)  # queries after the n: unanchored
            means = torch.cat([xy, means[..., 2:]], dim=-1)
        if self.flat_depth:  # a control: every Gaussian at z = 0, so depth cannot carry the image
            means = torch.cat([means[..., :2], torch.zeros_like(means[..., 2:])], dim=-1)
        return Gaussians(
            means=means,
            scales=self.scale_cap * torch.sigmoid(raw[..., 3:6]),
            quats=quats,
            colors=torch.sigmoid(raw[..., 10 : 10 + c]),
            opacities=torch.sigmoid(raw[..., 10 + c]),
        )

    def raw(self, tokens: Tensor) -> Tensor:
        """Raw outputs [..., 11 + C] in fp32 even under autocast: a bf16 centre would be off by
        up to a quarter pixel at 224."""
        with fp32_island():
            return self.proj(tokens.float())

    def forward(self, tokens: Tensor) -> Gaussians:
        return self.activate(self.raw(tokens))


class PatchPointer(nn.Module):
    """Where a query points: an attention-weighted mean of the visible patches' centres.

    One attention head from each query's final decoder feature to the visible patches' final
    features; the result is query j's centre prior in (-1, 1)^2 (the camera's frame), returned as
    the logit the head's centre sigmoid inverts, so that adding it to the raw centre output puts
    an untrained offset's Gaussian on the point [choice, not the paper's]. A query that learns to
    attend to a kind of content (an edge, a bright patch) then lands on it in every image: the
    place is read from the image, not stored in the query.

    With ``masked_keys`` (``query_anchor="attend_all"``) the masked patches can be pointed at
    too: each is keyed by one learned token plus the decoder's position embedding of its patch
    (the decoder has no mask tokens, so a masked patch has a place but no content). A query can
    then aim at a place the loss is scored on, not only at what it sees [choice].

    With ``query_xy`` [k, 2] and ``sigma`` (``query_anchor="attend_local"``) each query has a
    home, and its attention logits get a Gaussian locality prior, ``-|home - patch|^2 / (2
    sigma^2)`` (image units): an untrained query points at its home (every place, masked ones
    included, gets its share of Gaussians, as the grid's), and what it sees moves it among its
    neighbours, like a deformable-attention reference point [choice].
    """

    def __init__(
        self,
        dim: int,
        masked_keys: bool = False,
        query_xy: Tensor | None = None,
        sigma: float = 0.0,
    ):
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.mask_key = nn.Parameter(torch.zeros(1, 1, dim)) if masked_keys else None
        self.sigma = float(sigma)
        self.register_buffer("query_xy", query_xy, persistent=False)  # rebuilt, not stored

    def weights(self, queries: Tensor, patches: Tensor, patch_xy: Tensor | None = None) -> Tensor:
        """Attention [B, k, N] of each query over the patches it may point at (rows sum to 1);
        ``patch_xy`` [B, N, 2], the keys' centres, is needed with a locality prior."""
        logits = self.q(queries) @ self.k(patches).transpose(1, 2) / math.sqrt(queries.shape[-1])
        if self.query_xy is not None:
            if patch_xy is None:
                raise GmaeError("this pointer has a locality prior: weights needs patch_xy")
            far = torch.cdist(self.query_xy.to(logits.dtype), patch_xy.to(logits.dtype)).square()
            logits = logits - far / (2 * self.sigma**2)
        return torch.softmax(logits, dim=-1)

    def forward(self, queries: Tensor, patches: Tensor, patch_xy: Tensor) -> Tensor:
        """Queries [B, k, D], patch keys' inputs [B, N, D] and the patches' centres [B, N, 2]
        -> the logit of (point + 1) / 2, [B, k, 2], in fp32."""
        with fp32_island():
            xy = patch_xy.float()
            point = self.weights(queries.float(), patches.float(), xy) @ xy
            return torch.logit((point + 1) / 2)


def saturation_penalty(raw: Tensor, bound: float) -> Tensor:
    """Mean of relu(|u| - bound)^2 over the guarded raw channels (z and scale).

    A restoring force, not a clamp: past ``bound`` the sigmoid's own gradient is nearly gone, and
    Adam's constant-size steps would otherwise carry u to |u| ~ 9 where nothing brings it back
    (the saturation collapse, docs/models.md). Zero inside the bound, so it leaves a healthy
    model's loss untouched.
    """
    u = raw[..., list(GUARDED_CHANNELS)].float()
    return F.relu(u.abs() - bound).square().mean()


class GMAE(MaskedImageModel):
    """GMAE: images in [0, 1] -> masked ViT -> k Gaussians -> render -> masked-patch MSE.

    Knobs: num_gaussians (k), scale_cap, rotation, camera (the camera model, stored as
    ``camera_model``: gmae | pinhole | ortho), background (white 1.0, or one value per channel),
    background_fill (``fixed``: every render composites over ``background`` [paper];
    ``visible_mean``: the training and reconstruction renders composite each image over the mean
    colour of its visible patches, a [choice]; see ``fill_background``), loss_on (masked | all),
    norm_pix_loss (loss on per-patch-normalised render and target: the paper's failing ablation;
    ``norm_pix`` is its deprecated old name), render_backend (passed to ``gmae.render.render``),
    head_init (``xavier``: MAE's init, our old default; ``torch``: nn.Linear's default, as the
    authors' code), raw_penalty / raw_bound (the saturation guard: ``raw_penalty * mean relu(|u| -
    raw_bound)^2`` over the raw z and scale outputs is added to the loss; 0 = off), query_init
    (``uniform`` [0, 1): the authors' code; ``normal``: N(0, 0.02), like the shared query token),
    query_anchor (``none``: queries carry no spatial prior [authors' code]; ``grid``: query j also
    carries the decoder's sin-cos embedding of a fixed grid point and its centre is that point plus
    ``anchor_range * tanh(u)`` in x and y, a [choice] that departs from the paper; see
    ``GaussianHead``; ``attend``: query j's centre is the point it attends to among the visible
    patches, moved by the head's centre output in logit space, also a [choice]; see
    ``PatchPointer``; ``attend_all``: the same, but the masked patches can be pointed at too, by
    their place; ``attend_grid``: ``attend`` with each query also carrying its grid point's
    embedding, as ``grid``, but no bound; ``mixed``: the first ``grid_queries`` queries as ``grid``
    on their own grid, the others as ``attend``, a [choice]; ``attend_local``: ``attend_grid`` whose
    pointer may point at the masked patches too, as ``attend_all``, with a locality prior around the
    query's grid point, a [choice]; see ``PatchPointer``), grid_queries (``mixed`` only: how many
    are anchored, 1 to k - 1), pointer_sigma (``attend_local`` only: the prior's width in patches),
    pointer_detach (with an attending anchor: the pointer's gradient stops at the decoder's
    features), refine_steps (0: one decoder pass [paper]; R > 0: R more passes that each see the
    render's error on the visible patches and correct every Gaussian, a [departure]; see
    ``forward_decoder_raw``), refine_feedback (``error``: what each pass is shown; ``none``: the
    control, passes that see no render), flat_depth (a control: every Gaussian at z = 0, see
    ``GaussianHead``). The encoder and decoder come as flat arguments or as
    ``encoder=EncoderConfig(...)`` / ``decoder=DecoderConfig(...)``.

    The model owns how its Gaussians are drawn: ``camera_at(h, w)`` is its camera at any size,
    ``render_settings`` its :class:`gmae.render.RenderSettings`, and ``render_gaussians`` /
    ``project_gaussians`` are the one way the rest of the package renders / projects them.
    """

    # Set by ``wrap_render`` only; None: ``render`` is called directly (no cost).
    _render_wrapper: Callable[..., RenderOutput] | None = None

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
        num_gaussians: int = 256,
        scale_cap: float = 1.0,
        rotation: str = "shoemake",
        camera: str = "gmae",
        background: float | Sequence[float] = 1.0,
        background_fill: str = "fixed",
        loss_on: str = "masked",
        norm_pix_loss: bool = False,
        render_backend: str = "auto",
        head_init: str = "xavier",
        query_init: str = "uniform",
        query_anchor: str = "none",
        anchor_range: float = 0.25,
        grid_queries: int = 0,
        pointer_sigma: float = 1.0,
        pointer_detach: bool = False,
        refine_steps: int = 0,
        refine_feedback: str = "error",
        flat_depth: bool = False,
        raw_bound: float = 4.0,
        raw_penalty: float = 0.0,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        *,
        encoder: EncoderConfig | None = None,
        decoder: DecoderConfig | None = None,
        norm_pix: bool | None = None,
    ):
        encoder, decoder = model_configs(encoder, decoder, locals())
        if norm_pix is not None:  # the old name, still in configs and checkpoints of old runs
            warnings.warn(
                "GMAE(norm_pix=...) is deprecated: use norm_pix_loss", DeprecationWarning, 2
            )
            if norm_pix_loss and not norm_pix:
                raise GmaeError("norm_pix (deprecated) and norm_pix_loss disagree: give one")
            norm_pix_loss = norm_pix
        super().__init__(
            encoder=encoder, mask_ratio=mask_ratio, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if loss_on not in LOSS_ON:
            raise GmaeError(f"unknown loss_on {loss_on!r}; choose from {', '.join(LOSS_ON)}")
        if not isinstance(num_gaussians, int) or num_gaussians < 1:
            raise GmaeError(f"num_gaussians must be a positive integer, got {num_gaussians!r}")
        if not isinstance(background, int | float) and len(background) != encoder.in_chans:
            raise GmaeError(
                f"background needs one value or {encoder.in_chans}, got {list(background)}"
            )
        if query_init not in QUERY_INITS:
            raise GmaeError(
                f"unknown query_init {query_init!r}; choose from {', '.join(QUERY_INITS)}"
            )
        if query_anchor not in QUERY_ANCHORS:
            raise GmaeError(
                f"unknown query_anchor {query_anchor!r}; choose from {', '.join(QUERY_ANCHORS)}"
            )
        if not anchor_range > 0:
            raise GmaeError(f"anchor_range must be positive, got {anchor_range}")
        if query_anchor == "mixed":
            if not isinstance(grid_queries, int) or not 0 < grid_queries < num_gaussians:
                raise GmaeError(
                    "query_anchor 'mixed' needs grid_queries between 1 and num_gaussians - 1 "
                    f"({num_gaussians - 1}), got {grid_queries!r}"
                )
        elif grid_queries:
            raise GmaeError(f"grid_queries is for query_anchor 'mixed', got {query_anchor!r}")
        if not pointer_sigma > 0:
            raise GmaeError(f"pointer_sigma must be positive, got {pointer_sigma}")
        if not isinstance(refine_steps, int) or isinstance(refine_steps, bool) or refine_steps < 0:
            raise GmaeError(f"refine_steps must be an integer >= 0, got {refine_steps!r}")
        if refine_feedback not in REFINE_FEEDBACK:
            raise GmaeError(f"unknown refine_feedback {refine_feedback!r}; choose from "
                            f"{', '.join(REFINE_FEEDBACK)}")  # fmt: skip
        if not raw_bound > 0:
            raise GmaeError(f"raw_bound must be positive, got {raw_bound}")
        if not raw_penalty >= 0:
            raise GmaeError(f"raw_penalty must be >= 0, got {raw_penalty}")
        Camera(mode=camera, height=encoder.img_size, width=encoder.img_size)  # validates it
        self.num_gaussians = num_gaussians
        # The constructor (and so configs and checkpoints) keeps the key ``camera``; the string
        # is the camera *model* (gsplat's name), the Camera object comes from ``camera_at``.
        self.camera_model = camera
        self.render_settings = RenderSettings()
        self.background = (
            float(background) if isinstance(background, int | float) else tuple(background)
        )
        if background_fill not in BACKGROUND_FILLS:
            raise GmaeError(f"unknown background_fill {background_fill!r}; choose from "
                            f"{', '.join(BACKGROUND_FILLS)}")  # fmt: skip
        if background_fill != "fixed" and refine_steps:
            raise GmaeError("background_fill='visible_mean' does not combine with refine_steps "
                            "(the refinement passes render over the fixed background)")  # fmt: skip
        self.background_fill = background_fill
        self.loss_on = loss_on
        self.norm_pix_loss = norm_pix_loss
        self.render_backend = render_backend
        self.last_render_backend = ""  # the backend the last forward pass rendered with
        self.raw_bound = float(raw_bound)
        self.raw_penalty = float(raw_penalty)

        self.decoder_config = decoder
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder.dim)
        self.register_buffer(
            "decoder_pos_embed",
            sincos_pos_embed_2d(decoder.dim, self.encoder.grid_size),
            persistent=False,
        )
        # Query j = shared token + its own embedding; no spatial prior [authors' code].
        self.query_token = nn.Parameter(torch.zeros(1, 1, decoder.dim))
        self.query_embed = nn.Parameter(torch.zeros(1, num_gaussians, decoder.dim))
        self.query_anchor = query_anchor
        self.grid_queries = int(grid_queries)
        on_grid = {"grid": num_gaussians, "attend_grid": num_gaussians,
                   "attend_local": num_gaussians, "mixed": grid_queries}  # fmt: skip
        n_grid = on_grid.get(query_anchor, 0)
        grid_points = grid_anchors(n_grid) if n_grid else None
        # An anchored query carries the sin-cos embedding of its grid point in the patches' frame
        # (patch c's centre is at x = (c + 0.5) / G * 2 - 1), so it can find the patches it sits on.
        # With ``mixed`` the attending queries after the grid's carry none (zero rows).
        query_pos = None
        if grid_points is not None:
            patch_units = (grid_points + 1) / 2 * self.encoder.grid_size - 0.5
            query_pos = sincos_embed_2d_at(decoder.dim, patch_units)
            query_pos = F.pad(query_pos, (0, 0, 0, num_gaussians - n_grid)).unsqueeze(0)
        self.register_buffer("query_pos_embed", query_pos, persistent=False)
        # ``attend`` [choice]: query j's centre prior is where it attends among the visible
        # patches (PatchPointer); the patches' centres in the camera's frame, row-major.
        # ``attend_all`` also lets it point at the masked patches, by place (PatchPointer);
        # ``attend_grid`` gives attending queries the grid point's embedding, not its bound.
        attends = query_anchor in ATTENDING_ANCHORS
        # How many queries (the last ones) the pointer places: all of them, or mixed's remainder.
        self.attending_queries = (num_gaussians - n_grid if query_anchor == "mixed"
                                  else num_gaussians if attends else 0)  # fmt: skip
        masked_keys = query_anchor in ("attend_all", "attend_local")
        local = query_anchor == "attend_local"
        self.pointer_sigma = float(pointer_sigma)
        self.pointer = None
        if attends:  # attend_local: sigma in image units (a patch is 2 / G wide)
            self.pointer = PatchPointer(
                decoder.dim,
                masked_keys,
                query_xy=grid_points if local else None,
                sigma=pointer_sigma * 2 / self.encoder.grid_size if local else 0.0,
            )
        if pointer_detach and not attends:
            raise GmaeError("pointer_detach needs an attending query_anchor "
                            f"({', '.join(ATTENDING_ANCHORS)}), got {query_anchor!r}")  # fmt: skip
        # [choice, a control] the pointer reads the decoder's features without sending its
        # gradient back into them: only pointer.q / pointer.k learn where to point.
        self.pointer_detach = pointer_detach
        patch_xy = grid_anchors(self.encoder.grid_size**2) if self.pointer is not None else None
        self.register_buffer("patch_xy", patch_xy, persistent=False)
        self.decoder_blocks = decoder_blocks(decoder, mlp_ratio=encoder.mlp_ratio)
        self.decoder_norm = norm_layer(decoder.dim)
        self.head = GaussianHead(
            dim=decoder.dim,
            color_channels=encoder.in_chans,
            scale_cap=scale_cap,
            rotation=rotation,
            init=head_init,
            anchors=grid_points if query_anchor in ("grid", "mixed") else None,
            anchor_range=anchor_range,
            flat_depth=flat_depth,
        )
        # Refinement [departure]: the render's error on each visible patch, through one linear
        # layer, is added to that patch's decoder input token; the same decoder blocks run again
        # over [cls, visible tokens + error, the queries' last features] and a second head adds
        # a correction to the raw outputs. It starts at zero, so an untrained
        # refinement returns the first pass unchanged.
        self.refine_steps = refine_steps
        self.refine_feedback = refine_feedback
        self.refine_embed = self.refine_head = None
        if refine_steps:
            p = encoder.patch_size
            self.refine_embed = nn.Linear(p * p * encoder.in_chans, decoder.dim)
            self.refine_head = nn.Linear(decoder.dim, self.head.proj.out_features)

        nn.init.normal_(self.query_token, std=0.02)
        if query_init == "uniform":  # [authors' code]: a strong, fixed identity per query
            nn.init.uniform_(self.query_embed, 0.0, 1.0)
        else:  # [choice] as small as the shared token: the image, not the index, must place it
            nn.init.normal_(self.query_embed, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.pointer):
            if module is not None:
                module.apply(init_vit_weights)
        if self.pointer is not None and self.pointer.mask_key is not None:
            nn.init.normal_(self.pointer.mask_key, std=0.02)  # as the shared query token
        self.head.init_weights()
        if self.refine_head is not None:
            self.refine_embed.apply(init_vit_weights)
            nn.init.zeros_(self.refine_head.weight)
            nn.init.zeros_(self.refine_head.bias)
            if refine_feedback == "none":
                # The control: more passes that are not shown the error. Built and dropped, so
                # every other weight and what training draws next match the model with error.
                self.refine_embed = None

    @property
    def norm_pix(self) -> bool:
        """Deprecated name of ``norm_pix_loss``."""
        return self.norm_pix_loss

    @norm_pix.setter
    def norm_pix(self, value: bool) -> None:
        self.norm_pix_loss = value

    def no_weight_decay(self) -> set[str]:
        """Token, query and position-embedding names (the pos-embeds are fixed buffers)."""
        names = {
            "encoder.cls_token",
            "encoder.pos_embed",
            "decoder_pos_embed",
            "query_token",
            "query_embed",
        }
        if self.pointer is not None and self.pointer.mask_key is not None:
            names.add("pointer.mask_key")
        return names

    def decoder_tokens(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Decoder input [B, 1 + N_vis + k, dec_dim]: cls, visible latents, queries.

        Visible token i carries the decoder pos-embed of its own patch ids_keep[i], which is row
        1 + ids_keep[i] of the table (row 0 is the zero row of cls). No mask tokens.
        """
        x = self.decoder_embed(latent)
        b, n_tokens, d = x.shape
        ids_keep = visible_ids(ids_restore, n_tokens - 1)
        patch_pos = self.decoder_pos_embed[:, 1:].expand(b, -1, -1)
        visible = x[:, 1:] + torch.gather(patch_pos, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        cls = x[:, :1] + self.decoder_pos_embed[:, :1]
        queries = self.query_token + self.query_embed
        if self.query_pos_embed is not None:
            queries = queries + self.query_pos_embed
        queries = queries.expand(b, -1, -1)
        return torch.cat([cls, visible, queries], dim=1)

    def forward_decoder_raw(
        self,
        latent: Tensor,
        ids_restore: Tensor,
        imgs: Tensor | None = None,
        refine_steps: int | None = None,
    ) -> Tensor:
        """Latent [B, 1 + N_vis, D] -> raw head outputs [B, k, 11 + C] (before activation).

        With ``refine_steps`` R > 0 the [0, 1] input ``imgs`` [B, C, S, S] is needed: after the
        first pass, each of R passes renders the current Gaussians, reads the error (input -
        render) on the visible patches only (the masked ones stay unseen) and adds a
        correction to every raw output. Gradients flow through the renders. With
        ``refine_feedback="none"`` the passes see no render (the control; ``imgs`` unused).
        The argument ``refine_steps`` (0 to the model's own R, default R) stops after that many
        refinement passes, to measure what each pass contributes.
        """
        if refine_steps is None:
            refine_steps = self.refine_steps
        elif not 0 <= refine_steps <= self.refine_steps:
            raise GmaeError(f"refine_steps must be in [0, {self.refine_steps}] (the model's "
                            f"own), got {refine_steps}")  # fmt: skip
        tokens = self.decoder_tokens(latent, ids_restore)
        x = tokens
        for block in self.decoder_blocks:
            x = block(x)
        k = self.num_gaussians
        features = self.decoder_norm(x)
        raw = self.head.raw(features[:, -k:])
        if self.pointer is not None:
            read = features.detach() if self.pointer_detach else features
            pad = (0, raw.shape[-1] - 2, k - self.attending_queries, 0)  # the pointed queries last
            raw = raw + F.pad(self.pointed_centres(read, ids_restore), pad)
        if not refine_steps:
            return raw
        feedback = self.refine_feedback == "error"
        if feedback and imgs is None:
            raise GmaeError(f"this GMAE refines its Gaussians ({self.refine_steps} steps): "
                            "forward_decoder_raw needs the input images")  # fmt: skip
        cls, visible = tokens[:, :1], tokens[:, 1:-k]  # decoder inputs, positions included
        ids_keep = visible_ids(ids_restore, visible.shape[1])
        size = self.img_size
        for _ in range(refine_steps):
            shown = visible  # refine_feedback="none": the same pass, never shown the render
            if feedback:
                rendered = self.render_gaussians(
                    self.head.activate(raw), size, size, return_depth=False
                ).image
                error = patchify(imgs.float() - rendered.float(), self.patch_size)
                idx = ids_keep.unsqueeze(-1).expand(-1, -1, error.shape[-1])
                shown = visible + self.refine_embed(torch.gather(error, 1, idx))
            x = torch.cat([cls, shown, x[:, -k:]], dim=1)
            for block in self.decoder_blocks:
                x = block(x)
            with fp32_island():  # as the head: raw outputs stay fp32 under autocast
                raw = raw + self.refine_head(self.decoder_norm(x)[:, -k:].float())
        return raw

    def decoder_features(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """The decoder's final (normed) features [B, 1 + N_vis + k, D] of one pass: what the
        head and the pointer read."""
        x = self.decoder_tokens(latent, ids_restore)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_norm(x)

    def pointed_centres(self, features: Tensor, ids_restore: Tensor) -> Tensor:
        """Final decoder features [B, 1 + N_vis + k, D] -> each attending query's centre prior as
        a raw logit [B, k_a, 2] (the ``attend*`` and ``mixed`` query anchors, whose last k_a =
        ``attending_queries`` queries attend; see ``PatchPointer``)."""
        return self.pointer(*self.pointer_inputs(features, ids_restore))

    def pointer_inputs(self, features: Tensor, ids_restore: Tensor) -> tuple[Tensor, ...]:
        """What the pointer reads: the attending queries' features [B, k_a, D], the keys' inputs
        [B, N, D] (the visible patches' features, then with ``attend_all`` / ``attend_local``
        one per masked patch: ``mask_key`` plus its place) and those patches' centres [B, N, 2]."""
        k = self.num_gaussians
        patches = features[:, 1:-k]
        n_visible = patches.shape[1]
        ids = visible_ids(ids_restore, ids_restore.shape[1])  # visible first, then masked
        if self.pointer.mask_key is None:
            ids = ids[:, :n_visible]
        elif ids.shape[1] > n_visible:
            masked = ids[:, n_visible:]
            d = patches.shape[-1]
            patch_pos = self.decoder_pos_embed[:, 1:].expand(patches.shape[0], -1, -1)
            place = torch.gather(patch_pos, 1, masked.unsqueeze(-1).expand(-1, -1, d))
            patches = torch.cat([patches, (self.pointer.mask_key + place).to(patches.dtype)], 1)
        return features[:, -self.attending_queries :], patches, self.patch_xy[ids]

    def forward_decoder(
        self, latent: Tensor, ids_restore: Tensor, imgs: Tensor | None = None
    ) -> Gaussians:
        """Latent [B, 1 + N_vis, D] -> k activated Gaussians per image (``imgs``: the input,
        needed when the model refines its Gaussians)."""
        return self.head.activate(self.forward_decoder_raw(latent, ids_restore, imgs))

    @property
    def camera(self) -> str:
        """The camera model (``gmae``, ``pinhole`` or ``ortho``): the old name of
        ``camera_model``, kept read-only (the constructor argument is still ``camera``)."""
        return self.camera_model

    def camera_at(self, height: int, width: int) -> Camera:
        """This model's fixed camera for an image of ``height x width`` (intrinsics scale)."""
        return Camera(mode=self.camera_model, height=height, width=width)

    def render_backend_for(self, device, batch_size: int | None = None) -> str:
        """The backend this model's renders of ``batch_size`` images at its own size would run
        on ``device`` (``gmae.render.resolve_backend`` with its settings; None: assume the
        dense reference fits), e.g. to log before training."""
        pairs = None if not batch_size else batch_size * self.img_size**2 * self.num_gaussians
        return resolve_backend(
            self.render_backend, device, pairs=pairs, settings=self.render_settings
        )

    def project_gaussians(
        self, gaussians: Gaussians, height: int, width: int, keep: Tensor | None = None
    ) -> Projection:
        """Project Gaussians through this model's camera at ``height x width`` with its render
        settings (the per-Gaussian 2-D centres, conics, depths and radii, without compositing).
        Inputs are used as given (no cast), as ``gmae.render.project`` does."""
        return project(
            gaussians.means,
            gaussians.scales,
            gaussians.quats,
            gaussians.opacities,
            self.camera_at(height, width),
            settings=self.render_settings,
            keep=keep,
        )

    def render_gaussians(
        self,
        gaussians: Gaussians,
        height: int,
        width: int,
        keep: Tensor | None = None,
        background: float | Sequence[float] | Tensor | None = None,
        return_depth: bool = True,
    ) -> RenderOutput:
        """Splat Gaussians through this model's camera at any resolution (intrinsics scale),
        with its render settings and backend. ``keep`` [B, K] bool: render only these Gaussians;
        ``background`` None: the model's own; ``return_depth``: also the expected depth map."""
        if background is None:
            background = self.background
        if isinstance(background, tuple | list):
            background = torch.tensor(background, device=gaussians.means.device)
        g = gaussians
        args = (g.means, g.scales, g.quats, g.colors, g.opacities)
        kwargs = {
            "camera": self.camera_at(height, width),
            "background": background,
            "keep": keep,
            "settings": self.render_settings,
            "backend": self.render_backend,
            "return_depth": return_depth,
        }
        if self._render_wrapper is not None:
            return self._render_wrapper(render, *args, **kwargs)
        return render(*args, **kwargs)

    @contextlib.contextmanager
    def wrap_render(self, wrapper: Callable[..., RenderOutput]) -> Iterator[GMAE]:
        """Within the block, every render of this model (the training forward, ``reconstruct``,
        ``render_gaussians``) runs as ``wrapper(render, *args, **kwargs)`` instead of
        ``render(*args, **kwargs)`` (``gmae.render.render``), e.g. to time it as ``gmae bench
        train`` does. Nests; the previous wrapper is back on exit."""
        previous = self._render_wrapper
        self._render_wrapper = wrapper
        try:
            yield self
        finally:
            self._render_wrapper = previous

    def fill_background(self, imgs: Tensor, mask: Tensor) -> Tensor | None:
        """What the training forward composites behind the Gaussians: None (``background``) or,
        with ``background_fill="visible_mean"``, each image's mean colour over its visible
        patches [B, C] (the whole image at mask ratio 0) [choice]. A Gaussian-free pixel then
        shows the image's own mean, the best flat guess from what the model sees, instead of a
        colour fixed for every image; a plain-pixel MAE's decoder can output that mean too, so
        the render learns nothing the MAE is denied."""
        if self.background_fill == "fixed":
            return None
        patches = patchify(imgs.float(), self.patch_size)  # [B, N, p * p * C]
        visible = (1 - mask.float()).unsqueeze(-1)  # [B, N, 1]
        per_patch = patches.unflatten(-1, (-1, imgs.shape[1])).mean(2)  # [B, N, C]
        return (per_patch * visible).sum(1) / visible.sum(1).clamp_min(1)

    def forward_loss(self, imgs: Tensor, rendered: Tensor, mask: Tensor) -> Tensor:
        """MSE between render and [0, 1] input, per patch, over masked (or all) patches (fp32
        under any autocast)."""
        with fp32_island():
            pred = patchify(rendered.float(), self.patch_size)
            target = patchify(imgs.float(), self.patch_size)
            if self.norm_pix_loss:
                pred, target = normalize_patches(pred), normalize_patches(target)
            weight = mask if self.loss_on == "masked" else torch.ones_like(mask)
            return patch_mse(pred, target, weight)

    def forward(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> PretrainOutput:
        latent, mask, ids_restore = self.encode(imgs, mask_ratio, noise)
        raw = self.forward_decoder_raw(latent, ids_restore, imgs)
        gaussians = self.head.activate(raw)
        # Training needs the image only: no depth channel to composite.
        rendered = self.render_gaussians(
            gaussians,
            self.img_size,
            self.img_size,
            background=self.fill_background(imgs, mask),
            return_depth=False,
        )
        self.last_render_backend = rendered.backend  # what ran (logged by training)
        image = rendered.image
        loss = self.forward_loss(imgs, image, mask)
        if self.raw_penalty > 0:
            loss = loss + self.raw_penalty * saturation_penalty(raw, self.raw_bound)
        return PretrainOutput(
            loss=loss, mask=mask, pred=image, latent=latent, gaussians=gaussians, raw=raw
        )

    def predict_gaussians(
        self, imgs: Tensor, mask_ratio: float = 0.0, noise: Tensor | None = None
    ) -> Gaussians:
        """Gaussians for [0, 1] images; mask ratio 0 (all patches) for zero-shot use.

        Runs with autograd as the caller set it: wrap in ``torch.no_grad()`` for inference.
        """
        latent, _, ids_restore = self.encode(imgs, mask_ratio, noise)
        return self.forward_decoder(latent, ids_restore, imgs)

    @torch.no_grad()
    def reconstruct(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ) -> dict[str, Tensor]:
        """input; masked (masked patches as the mean colour); recon (the full render);
        mask_image (1 = masked). All [B, C, H, W] in [0, 1]."""
        out = self.forward(imgs, mask_ratio, noise)
        p, size = self.patch_size, self.img_size
        mask_image = unpatchify(
            out.mask.unsqueeze(-1).expand(-1, -1, p * p * self.in_chans), p, size, size
        )
        fill = self.normalize.mean.expand_as(imgs)
        return {
            "input": imgs,
            "masked": imgs * (1 - mask_image) + fill * mask_image,
            "recon": out.pred,
            "mask_image": mask_image,
        }
