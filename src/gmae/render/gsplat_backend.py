"""CUDA backend: our projection, gsplat's tile rasteriser for the per-pixel work.

Only used with CUDA tensors (gsplat JIT-compiles CUDA kernels and fails on CPU tensors) and
float32. We hand gsplat the projected means2d / conics / opacities and the features (colours,
plus depth as one more channel), exactly what ``composite_reference`` composites, and read back
``sum w f`` and ``alpha = 1 - T`` (no background: ``api.finish`` adds it, as for the other
backends). gsplat's own projection is never called (see docs/renderer.md, "Known gsplat issues").
"""

from __future__ import annotations

import functools
import math

from torch import Tensor

from gmae.errors import GmaeError
from gmae.render.projection import Projection
from gmae.render.settings import RenderSettings

TILE = 16  # gsplat's default tile size


def _version() -> tuple[int, ...]:
    import gsplat

    parts = []
    for p in str(getattr(gsplat, "__version__", "0")).split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@functools.lru_cache(maxsize=1)
def gsplat_kernel_problem() -> str | None:
    """None when gsplat imports *and* its compiled CUDA kernels load; otherwise why not.

    gsplat 1.5 builds its kernels on first use (``gsplat.cuda._backend``: a prebuilt module,
    else a JIT build that needs the CUDA toolkit and takes minutes). Without a toolkit the module
    is None and the first render would die with an AttributeError, so importing the package is
    not enough. Calling this may trigger that build; ``gmae doctor --build`` does it ahead of a
    torchrun launch, so the ranks do not all compile at once.
    """
    try:
        import gsplat  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA toolchain at import time
        return f"gsplat is not importable ({_first_line(exc)})"
    try:
        from gsplat.cuda import _backend
    except Exception as exc:  # a failed JIT build raises from the import
        return f"gsplat's CUDA kernels failed to build or load ({_first_line(exc)})"
    if getattr(_backend, "_C", None) is None:
        return (
            "gsplat's CUDA kernels are not built and cannot be (no CUDA toolkit: nvcc not found; "
            "install one, or a gsplat wheel with prebuilt kernels)"
        )
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@functools.lru_cache(maxsize=1)
def gsplat_max_alpha() -> float:
    """The alpha clamp compiled into the installed gsplat: 0.999 up to 1.5.x, 0.99 from 1.6."""
    return 0.99 if _version() >= (1, 6) else 0.999


def composite_gsplat(
    proj: Projection, features: Tensor, height: int, width: int, *, settings: RenderSettings
) -> tuple[Tensor, Tensor]:
    """Same contract as ``composite_reference``: ``(sum w f [B, F, H, W], T [B, 1, H, W])``.
    Only ``settings.max_alpha`` is checked here; gsplat hard-codes the thresholds (``render``
    picks this backend only when they are gsplat's)."""
    max_alpha = settings.max_alpha
    from gsplat import isect_offset_encode, isect_tiles, rasterize_to_pixels

    if features.device.type != "cuda":  # never let gsplat see CPU tensors
        raise GmaeError("the gsplat backend needs CUDA tensors")
    if gsplat_max_alpha() != max_alpha:
        raise GmaeError(f"the installed gsplat clamps alpha at {gsplat_max_alpha()}")
    B = features.shape[0]
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    radii = proj.radii
    if _version() < (1, 5):  # before 1.5 radii were one int per Gaussian
        radii = radii.amax(-1)
    # Our batch is gsplat's camera dimension: per-camera means2d / conics / colours / opacities
    # are exactly "different Gaussians per image". Depths only sort (ties keep index order, as
    # the radix sort is stable); near > 0 keeps them positive so their float bits sort right.
    _, isect_ids, flatten_ids = isect_tiles(
        proj.means2d.detach().contiguous(),
        radii.contiguous(),
        proj.depths.detach().contiguous(),
        TILE,
        tiles_x,
        tiles_y,
    )
    offsets = isect_offset_encode(isect_ids, B, tiles_x, tiles_y)
    colors, alphas = rasterize_to_pixels(
        proj.means2d.contiguous(),
        proj.conics.contiguous(),
        features.contiguous(),
        proj.opacities.contiguous(),
        width,
        height,
        TILE,
        offsets,
        flatten_ids,
    )
    accum = colors.permute(0, 3, 1, 2)  # [B, F, H, W]
    t_final = 1.0 - alphas.permute(0, 3, 1, 2)
    return accum, t_final
