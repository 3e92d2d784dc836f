"""One camera type with three projection modes (``gmae``, ``pinhole``, ``ortho``).

All modes share the same parameters: pixel intrinsics ``fx, fy, cx, cy`` and a world-to-camera
``viewmat``. What differs is how a camera-space point (x, y, z) lands on the image:

========  ===========================  ======================================
mode      centre (u, v)                2-D covariance Jacobian J
========  ===========================  ======================================
pinhole   (fx x/z + cx, fy y/z + cy)   perspective EWA, fx/z ... (clamped)
ortho     (fx x + cx, fy y + cy)       diag(fx, fy)
gmae      (fx x + cx, fy y + cy)       perspective EWA, fx/z ... (clamped)
========  ===========================  ======================================

``gmae`` is the GMAE authors' hybrid (docs/method.md section 3): orthographic centres, so x and y
in (-1, 1) span the whole image, but perspective footprints, so a Gaussian's on-screen size
shrinks with depth z + 8. Defaults for every mode: fx = W/2, fy = H/2 (90 degree field of view in
both directions), principal point at the image centre, camera looking down +z from distance 8
(camera-space depth = z + 8). With fy = H/2 a non-square render is exactly the square render
stretched: centres and footprints scale by the same per-axis factors.

Intrinsics are in pixels of *this* camera's image. ``resized`` rescales them, so the same
Gaussians render the same picture at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from gmae.errors import GmaeError

CameraMode = Literal["gmae", "pinhole", "ortho"]
CAMERA_MODES: tuple[str, ...] = ("gmae", "pinhole", "ortho")

# Depth offset of the GMAE camera: camera-space depth = z + DEFAULT_DISTANCE.
DEFAULT_DISTANCE = 8.0

Scalar = float | Tensor


@dataclass(frozen=True, eq=False)
class Camera:
    """A camera for a batch of images: shared (floats, ``[4, 4]``) or per image (``[B]``,
    ``[B, 4, 4]``).

    Args:
        mode: ``"gmae"`` (default, the paper's hybrid), ``"pinhole"`` or ``"ortho"``.
        height, width: output image size in pixels.
        fx, fy, cx, cy: intrinsics in pixels; ``None`` means W/2, H/2, W/2, H/2. A float or a
            tensor ``[B]`` (one value per image).
        viewmat: world-to-camera transform ``[4, 4]`` or ``[B, 4, 4]``; ``None`` means identity
            rotation and translation (0, 0, ``distance``).
        distance: camera distance used when ``viewmat`` is None.
    """

    mode: str = "gmae"
    height: int = 224
    width: int = 224
    fx: Scalar | None = None
    fy: Scalar | None = None
    cx: Scalar | None = None
    cy: Scalar | None = None
    viewmat: Tensor | None = None
    distance: float = DEFAULT_DISTANCE

    def __post_init__(self) -> None:
        if self.mode not in CAMERA_MODES:
            raise GmaeError(
                f"unknown camera mode {self.mode!r}; expected one of {', '.join(CAMERA_MODES)}"
            )
        for name in ("height", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise GmaeError(f"camera {name} must be a positive int, got {v!r}")
        for name in ("fx", "fy", "cx", "cy"):
            v = getattr(self, name)
            if isinstance(v, Tensor) and v.dim() > 1:
                raise GmaeError(f"camera {name} must be a float or a [B] tensor, got {_shape(v)}")
        if self.viewmat is not None:
            v = self.viewmat
            if not isinstance(v, Tensor) or v.shape[-2:] != (4, 4) or v.dim() not in (2, 3):
                raise GmaeError(f"camera viewmat must be [4, 4] or [B, 4, 4], got {_shape(v)}")
        sizes = {n for n in self._batch_sizes()}
        if len(sizes) > 1:
            raise GmaeError(f"camera has per-image parameters of different sizes {sorted(sizes)}")

    @classmethod
    def from_matrices(
        cls,
        mode: str,
        height: int,
        width: int,
        Ks: Tensor,
        viewmats: Tensor | None = None,
    ) -> Camera:
        """Build a camera from intrinsic matrices ``[3, 3]`` / ``[B, 3, 3]`` (gsplat style)."""
        if not isinstance(Ks, Tensor) or Ks.shape[-2:] != (3, 3) or Ks.dim() not in (2, 3):
            raise GmaeError(f"Ks must be [3, 3] or [B, 3, 3], got {_shape(Ks)}")
        return cls(
            mode=mode,
            height=height,
            width=width,
            fx=Ks[..., 0, 0],
            fy=Ks[..., 1, 1],
            cx=Ks[..., 0, 2],
            cy=Ks[..., 1, 2],
            viewmat=viewmats,
        )

    # -- batch handling -------------------------------------------------------------------

    def _batch_sizes(self) -> list[int]:
        out = []
        for name in ("fx", "fy", "cx", "cy"):
            v = getattr(self, name)
            if isinstance(v, Tensor) and v.dim() == 1:
                out.append(v.shape[0])
        if self.viewmat is not None and self.viewmat.dim() == 3:
            out.append(self.viewmat.shape[0])
        return out

    @property
    def batch_size(self) -> int | None:
        """Number of per-image cameras, or None when one camera serves the whole batch."""
        sizes = self._batch_sizes()
        return sizes[0] if sizes else None

    def _check_batch(self, batch: int) -> None:
        n = self.batch_size
        if n is not None and n != batch:
            raise GmaeError(f"camera has {n} per-image entries but the batch has {batch} images")

    def intrinsics(self, batch: int, device=None, dtype=torch.float32) -> Tensor:
        """``[batch, 4]`` tensor of (fx, fy, cx, cy) per image."""
        self._check_batch(batch)
        defaults = (self.width / 2, self.height / 2, self.width / 2, self.height / 2)
        cols = []
        for name, default in zip(("fx", "fy", "cx", "cy"), defaults):
            v = getattr(self, name)
            v = default if v is None else v
            if isinstance(v, int | float):  # a fill on the device, not a host-to-device copy
                cols.append(torch.full((batch,), float(v), device=device, dtype=dtype))
                continue
            v = torch.as_tensor(v, device=device, dtype=dtype)
            cols.append(v.expand(batch) if v.dim() == 0 else v)
        return torch.stack(cols, dim=-1)

    def viewmats(self, batch: int, device=None, dtype=torch.float32) -> Tensor:
        """``[batch, 4, 4]`` world-to-camera matrices."""
        self._check_batch(batch)
        if self.viewmat is None:
            v = torch.eye(4, device=device, dtype=dtype)
            v[2, 3] = self.distance
        else:
            v = self.viewmat.to(device=device, dtype=dtype)
        return v.expand(batch, 4, 4) if v.dim() == 2 else v

    def resized(self, height: int, width: int) -> Camera:
        """The same camera for an image of ``height x width`` (intrinsics rescaled per axis)."""
        probe = Camera(mode=self.mode, height=height, width=width)  # validates the new size
        sx, sy = width / self.width, height / self.height

        def scaled(v, default, s):
            return default * s if v is None else v * s

        return replace(
            self,
            height=probe.height,
            width=probe.width,
            fx=scaled(self.fx, self.width / 2, sx),
            fy=scaled(self.fy, self.height / 2, sy),
            cx=scaled(self.cx, self.width / 2, sx),
            cy=scaled(self.cy, self.height / 2, sy),
        )

    def __repr__(self) -> str:
        extra = [
            f"{n}={_short(getattr(self, n))}"
            for n in ("fx", "fy", "cx", "cy", "viewmat")
            if getattr(self, n) is not None
        ]
        tail = ", " + ", ".join(extra) if extra else ""
        return f"Camera(mode={self.mode!r}, height={self.height}, width={self.width}{tail})"


def _shape(v) -> str:
    return f"shape {list(v.shape)}" if isinstance(v, Tensor) else type(v).__name__


def _short(v) -> str:
    if isinstance(v, Tensor):
        return f"tensor{list(v.shape)}" if v.dim() else f"{float(v):g}"
    return f"{v:g}" if isinstance(v, float | int) else repr(v)
