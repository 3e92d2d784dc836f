"""``RenderSettings``: the renderer's semantic knobs in one frozen value, with gsplat's names.

Every backend and layer (``render``, ``project``, ``project_tensors``, the fast path, the dense
reference) takes one ``settings=`` instead of six loose keywords. ``render`` and ``project`` still
accept the old loose keywords (``eps2d``, ``near``, ``far``, ``mode``, ``max_alpha``,
``alpha_threshold``, ``transmittance_threshold``) with a DeprecationWarning; they are mapped onto
the settings by ``settings_with_loose_keywords``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from gmae.errors import GmaeError

RENDER_MODES: tuple[str, ...] = ("classic", "antialiased")

# gsplat hard-codes these; other values make `auto` stay on our own backends.
GSPLAT_ALPHA_THRESHOLD = 1.0 / 255.0
GSPLAT_TRANSMITTANCE_THRESHOLD = 1e-4

# Old loose keyword -> RenderSettings field (gsplat's names for near, far and mode).
LOOSE_KEYWORDS: dict[str, str] = {
    "eps2d": "eps2d",
    "near": "near_plane",
    "far": "far_plane",
    "mode": "rasterize_mode",
    "max_alpha": "max_alpha",
    "alpha_threshold": "alpha_threshold",
    "transmittance_threshold": "transmittance_threshold",
}


@dataclass(frozen=True)
class RenderSettings:
    """How Gaussians are projected and composited (gsplat's ``rasterization`` names).

    Args:
        eps2d: low-pass variance added to every 2-D covariance, in pixels^2.
        near_plane, far_plane: camera-space depth range; Gaussians outside are culled.
        rasterize_mode: ``"classic"`` or ``"antialiased"`` (opacity times sqrt(det before /
            after blur)).
        max_alpha: per-Gaussian alpha clamp (0.999 in gsplat <= 1.5.3, 0.99 in gsplat 1.6).
        alpha_threshold: alphas below this are skipped (gsplat's ALPHA_THRESHOLD, 1/255).
        transmittance_threshold: a pixel stops before the Gaussian that would bring its
            transmittance to <= this (gsplat's 1e-4).
    """

    eps2d: float = 0.3
    near_plane: float = 0.01
    far_plane: float = 1e10
    rasterize_mode: str = "classic"
    max_alpha: float = 0.999
    alpha_threshold: float = GSPLAT_ALPHA_THRESHOLD
    transmittance_threshold: float = GSPLAT_TRANSMITTANCE_THRESHOLD

    def __post_init__(self) -> None:
        if self.rasterize_mode not in RENDER_MODES:
            raise GmaeError(
                f"unknown render mode {self.rasterize_mode!r}; expected one of "
                f"{', '.join(RENDER_MODES)}"
            )
        if not 0.0 < self.max_alpha < 1.0:
            raise GmaeError(f"max_alpha must be in (0, 1), got {self.max_alpha}")
        if not 0.0 < self.alpha_threshold <= self.max_alpha:
            raise GmaeError(
                f"alpha_threshold must be in (0, max_alpha], got {self.alpha_threshold}"
            )
        if not 0.0 <= self.transmittance_threshold < 1.0:
            raise GmaeError(
                f"transmittance_threshold must be in [0, 1), got {self.transmittance_threshold}"
            )


DEFAULT_RENDER_SETTINGS = RenderSettings()


def settings_with_loose_keywords(
    settings: RenderSettings | None, caller: str, **loose: float | str | None
) -> RenderSettings:
    """``settings`` (default: ``RenderSettings()``) with the deprecated loose keywords that were
    given (not None) applied on top; warns once per call naming them and their new names."""
    if settings is not None and not isinstance(settings, RenderSettings):
        raise GmaeError(
            f"settings must be a gmae.render.RenderSettings, got {type(settings).__name__}"
        )
    base = DEFAULT_RENDER_SETTINGS if settings is None else settings
    given = {name: value for name, value in loose.items() if value is not None}
    if not given:
        return base
    renamed = ", ".join(f"{name}= -> {LOOSE_KEYWORDS[name]}" for name in given)
    warnings.warn(
        f"{caller}: the loose render keywords are deprecated; pass "
        f"settings=gmae.render.RenderSettings(...) instead ({renamed})",
        DeprecationWarning,
        stacklevel=3,
    )
    return dataclasses.replace(base, **{LOOSE_KEYWORDS[name]: v for name, v in given.items()})


__all__ = [
    "DEFAULT_RENDER_SETTINGS",
    "GSPLAT_ALPHA_THRESHOLD",
    "GSPLAT_TRANSMITTANCE_THRESHOLD",
    "LOOSE_KEYWORDS",
    "RENDER_MODES",
    "RenderSettings",
    "settings_with_loose_keywords",
]
