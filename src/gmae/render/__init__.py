"""Differentiable Gaussian splatting with gsplat's semantics, in pure PyTorch.

Public API::

    from gmae.render import Camera, render
    out = render(means, scales, quats, colors, opacities, Camera(height=224, width=224))
    out.image  # [B, C, H, W]
    render(..., settings=RenderSettings(rasterize_mode="antialiased"))  # gsplat's knob names

Backends: ``reference`` (dense, obviously correct), ``fast`` (tiles + custom autograd, the
default on CPU) and ``gsplat`` (CUDA only, when installed). See docs/renderer.md.
"""

from gmae.render.api import (
    BACKENDS,
    RENDER_MODES,
    RenderOutput,
    gsplat_available,
    render,
    resolve_backend,
)
from gmae.render.camera import CAMERA_MODES, DEFAULT_DISTANCE, Camera
from gmae.render.projection import Projection, project, quat_to_rotmat
from gmae.render.settings import RenderSettings

__all__ = [
    "BACKENDS",
    "CAMERA_MODES",
    "DEFAULT_DISTANCE",
    "RENDER_MODES",
    "Camera",
    "Projection",
    "RenderOutput",
    "RenderSettings",
    "gsplat_available",
    "project",
    "quat_to_rotmat",
    "render",
    "resolve_backend",
]
