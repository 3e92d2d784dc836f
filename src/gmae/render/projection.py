"""Per-Gaussian projection (3-D Gaussian -> 2-D splat), shared by every backend.

Plain PyTorch autograd: the cost is B x K, negligible next to compositing, and doing it ourselves
keeps gsplat's projection kernels (and their batched-backward pitfalls) out of the picture.
Semantics follow gsplat 1.x ``fully_fused_projection`` (see docs/renderer.md), with one
deliberate change: the culling radius uses ``sqrt(2 ln(o / alpha_threshold))`` without gsplat's
3.33 cap, which makes culling lossless for any threshold (for opacities <= 1 and the default
threshold the cap never binds, so radii are identical to gsplat's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gmae.render.camera import Camera
from gmae.render.settings import RenderSettings, settings_with_loose_keywords


@dataclass(frozen=True)
class Projection:
    """Projected Gaussians, all ``[B, K, ...]``; entries with ``radii == 0`` are culled."""

    means2d: Tensor  # [B, K, 2] pixel coordinates (pixel centres at j + 0.5)
    conics: Tensor  # [B, K, 3] (a, b, c) of the inverse 2-D covariance
    opacities: Tensor  # [B, K] after the antialiasing compensation (if any)
    depths: Tensor  # [B, K] camera-space z (orders compositing)
    radii: Tensor  # [B, K, 2] int32 box half-sizes in pixels, 0 = culled

    @property
    def visible(self) -> Tensor:
        """``[B, K]`` bool: not culled."""
        return (self.radii > 0).any(dim=-1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` (wxyz, normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


def project(
    means: Tensor,
    scales: Tensor,
    quats: Tensor,
    opacities: Tensor,
    camera: Camera,
    *,
    settings: RenderSettings | None = None,
    keep: Tensor | None = None,
    eps2d: float | None = None,
    near: float | None = None,
    far: float | None = None,
    mode: str | None = None,
    alpha_threshold: float | None = None,
) -> Projection:
    """Project ``[B, K]`` Gaussians through ``camera`` (inputs already validated and cast).

    ``settings``: a :class:`RenderSettings` (None: the defaults). ``eps2d``, ``near``, ``far``,
    ``mode`` and ``alpha_threshold`` are deprecated loose spellings of its fields.
    """
    settings = settings_with_loose_keywords(
        settings,
        "gmae.render.project",
        eps2d=eps2d,
        near=near,
        far=far,
        mode=mode,
        alpha_threshold=alpha_threshold,
    )
    B = means.shape[0]
    return project_tensors(
        means,
        scales,
        quats,
        opacities,
        camera.intrinsics(B, means.device, means.dtype),
        camera.viewmats(B, means.device, means.dtype),
        camera_model=camera.mode,
        height=camera.height,
        width=camera.width,
        settings=settings,
        keep=keep,
    )


def project_tensors(
    means: Tensor,
    scales: Tensor,
    quats: Tensor,
    opacities: Tensor,
    intrinsics: Tensor,
    viewmats: Tensor,
    *,
    camera_model: str,
    height: int,
    width: int,
    settings: RenderSettings,
    keep: Tensor | None = None,
) -> Projection:
    """``project`` with the camera given as tensors: intrinsics ``[B, 4]`` (fx, fy, cx, cy),
    world-to-camera ``viewmats [B, 4, 4]`` and the camera model (``Camera.mode``: ``gmae``,
    ``pinhole`` or ``ortho``)."""
    H, W = height, width
    eps2d, near, far = settings.eps2d, settings.near_plane, settings.far_plane
    alpha_threshold = settings.alpha_threshold

    # Sigma3 = (R S)(R S)^T; in the camera frame Sigma_c = (Rv R S)(Rv R S)^T, and on screen
    # Sigma2 = J Sigma_c J^T = N N^T with N = J Rv R S: 2 x 3 factors, no 3 x 3 products.
    Rv, tv = viewmats[:, :3, :3], viewmats[:, :3, 3]
    M = torch.einsum("bij,bkjl->bkil", Rv, quat_to_rotmat(quats) * scales[..., None, :])
    mean_c = torch.einsum("bij,bkj->bki", Rv, means) + tv[:, None]  # [B, K, 3]
    x, y, z = mean_c.unbind(-1)

    fx, fy, cx, cy = (v[:, None] for v in intrinsics.unbind(-1))  # [B, 1]
    in_depth = (z >= near) & (z <= far)
    zs = torch.where(in_depth, z, torch.ones_like(z))  # safe divisor for culled Gaussians

    # J = [[j00, 0, j02], [0, j11, j12]]
    if camera_model == "ortho":
        N0 = fx[..., None] * M[..., 0, :]
        N1 = fy[..., None] * M[..., 1, :]
    else:
        # Perspective EWA Jacobian; the tangent is clamped to the frustum widened by 0.3 tan_fov
        # on each side (gsplat) so off-screen Gaussians do not get absurd footprints.
        tan_fovx, tan_fovy = 0.5 * W / fx, 0.5 * H / fy
        lim_xp, lim_xn = (W - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
        lim_yp, lim_yn = (H - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
        tx = zs * torch.clamp(x / zs, min=-lim_xn, max=lim_xp)
        ty = zs * torch.clamp(y / zs, min=-lim_yn, max=lim_yp)
        j00, j11 = fx / zs, fy / zs
        j02, j12 = -fx * tx / (zs * zs), -fy * ty / (zs * zs)
        N0 = j00[..., None] * M[..., 0, :] + j02[..., None] * M[..., 2, :]
        N1 = j11[..., None] * M[..., 1, :] + j12[..., None] * M[..., 2, :]

    if camera_model == "pinhole":
        means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    else:  # ortho and the gmae hybrid: orthographic centres
        means2d = torch.stack([fx * x + cx, fy * y + cy], dim=-1)

    s00, s01, s11 = (N0 * N0).sum(-1), (N0 * N1).sum(-1), (N1 * N1).sum(-1)
    det_orig = s00 * s11 - s01 * s01
    s00, s11 = s00 + eps2d, s11 + eps2d  # low-pass filter: at least ~0.55 px of blur
    det = s00 * s11 - s01 * s01
    valid = in_depth & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([s11 / det, -s01 / det, s00 / det], dim=-1)

    if settings.rasterize_mode == "antialiased":
        # Mip-splatting style compensation keeps the splat's integral constant under the blur;
        # the tiny floor keeps the sqrt's gradient finite for degenerate (flat) Gaussians.
        opacities = opacities * torch.sqrt(torch.clamp(det_orig / det, min=1e-12))

    with torch.no_grad():
        o = opacities.detach()
        valid = valid & (o >= alpha_threshold)  # a new tensor: `valid` is saved by where()
        # Outside this box alpha < alpha_threshold, so culling to it (or to tiles touching it)
        # never changes the image.
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(o / alpha_threshold, min=1.0)))
        rx = torch.ceil(extend * torch.sqrt(s00.detach().clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(s11.detach().clamp(min=0)))
        mx, my = means2d.detach().unbind(-1)
        valid &= (rx > 0) | (ry > 0)
        valid &= (mx + rx > 0) & (mx - rx < W) & (my + ry > 0) & (my - ry < H)
        valid &= torch.isfinite(mx) & torch.isfinite(my) & torch.isfinite(conics).all(-1)
        if keep is not None:
            valid &= keep
        radii = torch.stack([rx, ry], dim=-1).clamp(max=2**30)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    means2d = torch.where(in_depth[..., None], means2d, torch.zeros_like(means2d))
    conics = torch.where(valid[..., None], conics, torch.zeros_like(conics))
    return Projection(means2d=means2d, conics=conics, opacities=opacities, depths=z, radii=radii)
