"""``render()``: the public entry point. Validates, casts, projects, composites, finishes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from gmae.errors import GmaeError
from gmae.precision import fp32_island
from gmae.render.camera import Camera
from gmae.render.projection import Projection, project
from gmae.render.settings import (
    GSPLAT_ALPHA_THRESHOLD,
    GSPLAT_TRANSMITTANCE_THRESHOLD,
    RENDER_MODES,
    RenderSettings,
    settings_with_loose_keywords,
)

BACKENDS: tuple[str, ...] = ("auto", "reference", "fast", "gsplat")

# `auto` on CUDA without gsplat runs the dense reference (a few dozen large kernels; the fast
# path issues ~15 small kernels per depth slot and host syncs, built for CPU) while its
# autograd graph, ~63 bytes per float32 pixel x Gaussian pair (docs/renderer.md), fits in this
# share of the GPU's memory; above that, the fast path (O(pixels + tile pairs) memory).
REFERENCE_BYTES_PER_PAIR = 64
REFERENCE_MEMORY_SHARE = 0.25


@dataclass
class RenderOutput:
    """What ``render`` returns. Images are channels-first; per-Gaussian meta is ``[B, K, ...]``.

    ``depth`` is the expected camera depth sum(w z) / sum(w) (0 where ``alpha`` is 0), or None
    when rendered with ``return_depth=False``. ``radii`` are int32 box half-sizes in pixels,
    0 for Gaussians that were culled (behind the near plane, off screen, too transparent, or
    dropped by ``keep``). ``conics`` and ``opacities`` are the projected inverse covariances
    (a, b, c) and the opacities actually composited (after antialiasing compensation).
    """

    image: Tensor  # [B, C, H, W]
    alpha: Tensor  # [B, 1, H, W]
    depth: Tensor | None  # [B, 1, H, W]
    means2d: Tensor  # [B, K, 2]
    depths: Tensor  # [B, K]
    radii: Tensor  # [B, K, 2] int32
    conics: Tensor  # [B, K, 3]
    opacities: Tensor  # [B, K]
    backend: str = ""  # which backend actually ran


def render(
    means: Tensor,
    scales: Tensor,
    quats: Tensor,
    colors: Tensor,
    opacities: Tensor,
    camera: Camera,
    background: float | Tensor = 1.0,
    keep: Tensor | None = None,
    *,
    settings: RenderSettings | None = None,
    backend: str = "auto",
    return_depth: bool = True,
    eps2d: float | None = None,
    max_alpha: float | None = None,
    alpha_threshold: float | None = None,
    transmittance_threshold: float | None = None,
    near: float | None = None,
    far: float | None = None,
    mode: str | None = None,
) -> RenderOutput:
    """Render B images of K Gaussians each with gsplat's compositing semantics.

    Args:
        means: ``[B, K, 3]`` centres (world space; x, y in (-1, 1) fill the image with the default
            gmae camera).
        scales: ``[B, K, 3]`` standard deviations along the Gaussian's axes (already activated).
        quats: ``[B, K, 4]`` rotations, **wxyz**, normalised here.
        colors: ``[B, K, C]`` any number of channels C >= 1.
        opacities: ``[B, K]`` in [0, 1].
        camera: a :class:`Camera`, shared or with per-image parameters.
        background: float, ``[C]`` or ``[B, C]``; composited behind the Gaussians (default white,
            as in GMAE).
        keep: optional ``[B, K]`` bool mask; only these Gaussians are rendered (layering).
        settings: a :class:`RenderSettings` (eps2d, near / far plane, rasterize mode, alpha
            clamp and thresholds); None: the defaults, gsplat's.
        backend: ``"auto"``, ``"reference"``, ``"fast"`` or ``"gsplat"`` (CUDA only).
        return_depth: also composite the expected depth map.
        eps2d, max_alpha, alpha_threshold, transmittance_threshold, near, far, mode: deprecated
            loose spellings of the ``settings`` fields (``near`` -> ``near_plane``, ``far`` ->
            ``far_plane``, ``mode`` -> ``rasterize_mode``); given ones override ``settings``
            and warn (DeprecationWarning).

    Inputs are cast to float32 (float64 stays float64 on the PyTorch backends) with autocast
    disabled, so this is safe to call inside mixed-precision training. A Gaussian with any
    non-finite (NaN or inf) parameter is dropped as if ``keep`` excluded it: it adds nothing to
    the image, alpha or depth, its radii are 0 and its gradients are 0.
    """
    settings = settings_with_loose_keywords(
        settings,
        "gmae.render.render",
        eps2d=eps2d,
        max_alpha=max_alpha,
        alpha_threshold=alpha_threshold,
        transmittance_threshold=transmittance_threshold,
        near=near,
        far=far,
        mode=mode,
    )
    B, K, C, dtype, device = _validate(means, scales, quats, colors, opacities, camera, keep)
    if backend not in BACKENDS:
        known = ", ".join(BACKENDS)
        raise GmaeError(f"unknown render backend {backend!r}; expected one of {known}")
    bg = _background(background, B, C, device, dtype)

    with fp32_island():  # no autocast, no TF32: the renderer is exact fp32
        means, scales, quats, colors, opacities = _drop_nonfinite(
            *(t.to(dtype) for t in (means, scales, quats, colors, opacities))
        )
        H, W = camera.height, camera.width
        chosen = _choose_backend(backend, device, dtype, settings, pairs=B * H * W * K)
        if chosen == "fast":
            from gmae.render.fast import render_fast

            image, alpha, depth, proj = render_fast(
                means,
                scales,
                quats,
                colors,
                opacities,
                bg,
                camera.intrinsics(B, device, dtype),
                camera.viewmats(B, device, dtype),
                camera_model=camera.mode,
                height=H,
                width=W,
                settings=settings,
                return_depth=return_depth,
                keep=keep,
            )
        else:
            proj = project(means, scales, quats, opacities, camera, settings=settings, keep=keep)
            # Depth is one more channel to composite: sum(w z).
            feats = torch.cat([colors, proj.depths[..., None]], -1) if return_depth else colors
            if chosen == "reference":
                from gmae.render.reference import composite_reference

                accum, t_final = composite_reference(proj, feats, H, W, settings=settings)
            else:
                from gmae.render.gsplat_backend import composite_gsplat

                accum, t_final = composite_gsplat(proj, feats, H, W, settings=settings)
            image, alpha, depth = finish(accum, t_final, bg, C, return_depth)
    return RenderOutput(
        image=image,
        alpha=alpha,
        depth=depth,
        means2d=proj.means2d,
        depths=proj.depths,
        radii=proj.radii,
        conics=proj.conics,
        opacities=proj.opacities,
        backend=chosen,
    )


def finish(
    accum: Tensor, t_final: Tensor, bg: Tensor, C: int, return_depth: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(sum w f, T) -> image over the background, alpha = 1 - T, expected depth."""
    image = accum[:, :C] + t_final * bg[:, :, None, None]
    alpha = 1.0 - t_final
    depth = None
    if return_depth:
        # Every contributing Gaussian has alpha >= alpha_threshold, so alpha is either 0 or
        # well away from it; the clamp only guards the 0 / 0 case (and its gradient).
        num = accum[:, C:]
        depth = torch.where(alpha > 0, num / alpha.clamp(min=1e-12), torch.zeros_like(num))
    return image, alpha, depth


def gsplat_available() -> bool:
    """True when gsplat imports and its compiled CUDA kernels load (this may build them once,
    which takes minutes; see ``gmae doctor``)."""
    from gmae.render.gsplat_backend import gsplat_kernel_problem

    return gsplat_kernel_problem() is None


def resolve_backend(
    backend: str = "auto",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_alpha: float = 0.999,
    alpha_threshold: float = GSPLAT_ALPHA_THRESHOLD,
    transmittance_threshold: float = GSPLAT_TRANSMITTANCE_THRESHOLD,
    near: float = 0.01,
    pairs: int | None = None,
    *,
    settings: RenderSettings | None = None,
) -> str:
    """The backend ``render`` would run for these settings (defaults: ``render``'s own), e.g. to
    log it before training; an error if ``backend`` is named explicitly and cannot run.

    ``pairs`` is the call's pixel x Gaussian count B * H * W * K, which decides between the dense
    reference and the fast path for ``auto`` on CUDA without gsplat (None: assume it fits).
    ``settings``: the :class:`RenderSettings` the renders will use (e.g. a model's
    ``render_settings``); when given, it replaces ``max_alpha``, ``alpha_threshold``,
    ``transmittance_threshold`` and ``near``."""
    if backend not in BACKENDS:
        known = ", ".join(BACKENDS)
        raise GmaeError(f"unknown render backend {backend!r}; expected one of {known}")
    if settings is None:
        settings = RenderSettings(
            near_plane=near,
            max_alpha=max_alpha,
            alpha_threshold=alpha_threshold,
            transmittance_threshold=transmittance_threshold,
        )
    return _choose_backend(backend, torch.device(device), dtype, settings, pairs=pairs)


def reference_memory_budget(device: torch.device) -> int:
    """Bytes the dense reference may use for ``auto`` on this CUDA device (a fixed share of its
    total memory, so the choice is the same at every step)."""
    total = torch.cuda.get_device_properties(device).total_memory
    return int(REFERENCE_MEMORY_SHARE * total)


_warned_fallback: set[tuple[str, str]] = set()


def _warn_fallback(device: torch.device, chosen: str, problem: str, detail: str = "") -> None:
    """`auto` on a GPU without gsplat: say once per process (per backend and reason; ``detail``,
    e.g. this call's size, does not count) what runs and why."""
    if (chosen, problem) in _warned_fallback:
        return
    _warned_fallback.add((chosen, problem))
    what = {
        "reference": "the dense PyTorch reference, the fastest without gsplat on a GPU while "
        "its memory fits",
        "fast": "the tiled PyTorch fast path, designed for CPU and much slower on a GPU",
    }[chosen]
    warnings.warn(
        f"gmae.render: backend 'auto' runs '{chosen}' ({what}) on {device.type}, because "
        f"{problem}{detail}. `gmae doctor` checks the gsplat set-up.",
        RuntimeWarning,
        stacklevel=4,
    )


def _choose_backend(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    settings: RenderSettings,
    pairs: int | None = None,
) -> str:
    if backend in ("reference", "fast"):
        return backend
    problem = _gsplat_problem(device, dtype, settings)
    if backend == "gsplat":
        if problem:
            raise GmaeError(f"backend 'gsplat' cannot be used: {problem}")
        return "gsplat"
    if not problem:
        return "gsplat"  # auto: gsplat > reference (CUDA, while it fits) > fast
    if device.type != "cuda":
        return "fast"
    need = None
    if pairs is not None:
        itemsize = torch.finfo(dtype).bits // 8
        need = pairs * REFERENCE_BYTES_PER_PAIR * itemsize // 4
    budget = reference_memory_budget(device)
    if need is None or need <= budget:
        _warn_fallback(device, "reference", problem)
        return "reference"
    _warn_fallback(
        device,
        "fast",
        problem,
        f", and the dense reference would need more than {REFERENCE_MEMORY_SHARE:.0%} of the "
        f"GPU's memory ({need / 2**30:.1f} GiB for {pairs:.2e} pixel x Gaussian pairs > "
        f"{budget / 2**30:.1f} GiB)",
    )
    return "fast"


def _gsplat_problem(
    device: torch.device, dtype: torch.dtype, settings: RenderSettings
) -> str | None:
    """Why gsplat cannot reproduce this call (None when it can)."""
    if device.type != "cuda":
        return f"gsplat needs CUDA tensors (got {device.type})"
    if dtype != torch.float32:
        return "gsplat is float32-only"
    if settings.alpha_threshold != GSPLAT_ALPHA_THRESHOLD:
        return "gsplat hard-codes alpha_threshold = 1/255"
    if settings.transmittance_threshold != GSPLAT_TRANSMITTANCE_THRESHOLD:
        return "gsplat hard-codes transmittance_threshold = 1e-4"
    if settings.near_plane <= 0:
        return "gsplat sorts depths by their float bits, so near must be > 0"
    from gmae.render.gsplat_backend import gsplat_kernel_problem, gsplat_max_alpha

    kernel_problem = gsplat_kernel_problem()
    if kernel_problem:
        return kernel_problem

    if gsplat_max_alpha() != settings.max_alpha:
        return (
            f"the installed gsplat clamps alpha at {gsplat_max_alpha()}, not {settings.max_alpha}"
        )
    return None


def _validate(means, scales, quats, colors, opacities, camera, keep):
    named = {
        "means": means,
        "scales": scales,
        "quats": quats,
        "colors": colors,
        "opacities": opacities,
    }
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise GmaeError(f"{name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise GmaeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not isinstance(camera, Camera):
        raise GmaeError(f"camera must be a gmae.render.Camera, got {type(camera).__name__}")
    if means.dim() != 3 or means.shape[-1] != 3:
        raise GmaeError(f"means must be [B, K, 3], got {list(means.shape)}")
    B, K = means.shape[:2]
    if B == 0:
        raise GmaeError("cannot render an empty batch (B = 0)")
    expect = {"scales": (B, K, 3), "quats": (B, K, 4), "opacities": (B, K)}
    for name, shape in expect.items():
        if tuple(named[name].shape) != shape:
            dims = ", ".join(str(d) for d in shape)
            raise GmaeError(f"{name} must be [{dims}] like means, got {list(named[name].shape)}")
    if colors.dim() != 3 or colors.shape[:2] != (B, K) or colors.shape[-1] < 1:
        raise GmaeError(f"colors must be [{B}, {K}, C] with C >= 1, got {list(colors.shape)}")
    if keep is not None:
        if not isinstance(keep, Tensor) or keep.dtype != torch.bool:
            raise GmaeError("keep must be a bool tensor [B, K]")
        if tuple(keep.shape) != (B, K):
            raise GmaeError(f"keep must be [{B}, {K}], got {list(keep.shape)}")
    devices = {t.device for t in named.values()} | ({keep.device} if keep is not None else set())
    if len(devices) > 1:
        raise GmaeError(f"inputs are on different devices: {sorted(map(str, devices))}")
    camera._check_batch(B)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in named.values()) else None
    return B, K, colors.shape[-1], dtype or torch.float32, means.device


def _drop_nonfinite(means, scales, quats, colors, opacities):
    """The non-finite contract: a Gaussian with any NaN or inf parameter (mean, scale, rotation,
    colour or opacity) is dropped, exactly as if ``keep`` excluded it: it adds nothing to image,
    alpha or depth, its radii are 0 and it gets no gradient. Its values are replaced by harmless
    ones (opacity 0, which culls it) so no backend ever sees a NaN. No host sync."""
    ok = (
        means.isfinite().all(-1)
        & scales.isfinite().all(-1)
        & quats.isfinite().all(-1)
        & colors.isfinite().all(-1)
        & opacities.isfinite()
    )
    okv = ok[..., None]
    identity = quats.new_tensor([1.0, 0.0, 0.0, 0.0])
    return (
        torch.where(okv, means, 0.0),
        torch.where(okv, scales, 1.0),
        torch.where(okv, quats, identity),
        torch.where(okv, colors, 0.0),
        torch.where(ok, opacities, 0.0),
    )


def _background(background, B: int, C: int, device, dtype) -> Tensor:
    if isinstance(background, bool) or not isinstance(background, float | int | Tensor):
        raise GmaeError(f"background must be a float or a tensor, got {type(background).__name__}")
    # Python numbers go straight to the render dtype (no float32 rounding of 0.7 in float64).
    bg = torch.as_tensor(background, device=device, dtype=dtype).to(device=device, dtype=dtype)
    if bg.dim() == 0:
        return bg.expand(B, C)
    if bg.dim() == 1 and bg.shape[0] == C:
        return bg.expand(B, C)
    if bg.dim() == 2 and tuple(bg.shape) == (B, C):
        return bg
    raise GmaeError(f"background must be a float, [{C}] or [{B}, {C}], got {list(bg.shape)}")


__all__ = [
    "BACKENDS",
    "RENDER_MODES",
    "RenderOutput",
    "RenderSettings",
    "render",
    "gsplat_available",
    "resolve_backend",
    "reference_memory_budget",
    "Projection",
]
