"""Gaussian health: cheap statistics that tell a GMAE whose Gaussians live from a collapsed one.

The failure they catch (docs/models.md, "saturation collapse"): within a few dozen steps every
Gaussian goes to the largest scale and the nearest depth, the raw scale and z outputs run deep
into the sigmoid's tails where no gradient reaches them, and the layout freezes into one tiling
for all images. Depth order, layers and edges read from such a model are artefacts of the query
index. Each statistic below is computed from one batch of images at the model's own mask ratio
(or any other), so it can be logged during training and measured for any checkpoint.

Thresholds (``CHECKS``) are the acceptance criteria of the CPU recipe; ``verdict`` turns a
summary into ``healthy`` / ``degraded`` / ``degenerate`` (docs/models.md, "Gaussian health").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.color import rgb2gray
from skimage.filters import sobel
from torch import Tensor

from gmae.errors import GmaeError

# Raw channel groups of the head (GaussianHead): [0:2] centre xy, [2] z, [3:6] scale,
# [6:10] rotation (Shoemake uses 6:9), [10:10+C] colour, [10+C] opacity.
SATURATED = 4.0  # |u| > 4: sigmoid' < 0.018, a fiftieth of its value at 0
PINNED_SIZE = 0.95  # size within 5 % of the largest the activation allows
PINNED_Z = 0.02  # z within 0.02 of a depth bound (-1 or 1)


def channel_groups(color_channels: int, rotation: str) -> dict[str, slice]:
    c = color_channels
    return {
        "centre_xy": slice(0, 2),
        "z": slice(2, 3),
        "scale": slice(3, 6),
        "rotation": slice(6, 9) if rotation == "shoemake" else slice(6, 10),
        "colour": slice(10, 10 + c),
        "opacity": slice(10 + c, 11 + c),
    }


def finite_mean(x: np.ndarray) -> float:
    """Mean of the finite entries (NaN when there are none): images without a valid reading
    carry NaN and drop out."""
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def finite_std(x: np.ndarray) -> float:
    """Standard deviation of the finite entries (NaN when there are none), as finite_mean."""
    x = x[np.isfinite(x)]
    return float(x.std()) if x.size else math.nan


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"p10": math.nan, "median": math.nan, "p90": math.nan}
    p10, p50, p90 = np.quantile(x, [0.1, 0.5, 0.9])
    return {"p10": float(p10), "median": float(p50), "p90": float(p90)}


def _unit_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of [N, k]: ranks, centred and scaled to unit length, so that the dot product of
    two rows is their Spearman correlation; and which rows are not constant (rows without an
    order keep their zero ranks)."""
    r = rankdata(x, axis=1)
    r = r - r.mean(1, keepdims=True)
    norm = np.linalg.norm(r, axis=1)
    ok = norm > 0
    r[ok] /= norm[ok, None]
    return r, ok


def depth_order_agreement(depth: np.ndarray) -> float:
    """Mean over image pairs of the Spearman correlation of per-query depths ([N, k]).

    1: every image gets the same depth order (its layers cannot depend on the image); 0:
    unrelated orders. Images whose Gaussians all share one depth have no order and are skipped.
    """
    if depth.shape[0] < 2:
        return math.nan
    r, ok = _unit_ranks(depth)
    r = r[ok]
    if len(r) < 2:
        return math.nan
    c = r @ r.T
    return float((c.sum() - np.trace(c)) / (len(r) * (len(r) - 1)))


def layout_dependence(depth: np.ndarray, centres: np.ndarray) -> dict:
    """How much the layout depends on the image. depth [N, k], centres [N, k, 2] (pixels).

    Gaussian i comes from decoder query i, so an index can be compared across images: the std
    of a query's centre (or depth) across images against the std within one image.
    """
    across = float(centres.std(0).mean()) if len(centres) > 1 else math.nan
    within = float(centres.std(1).mean())
    d_across = float(depth.std(0).mean()) if len(depth) > 1 else math.nan
    return {
        "depth_order_agreement": depth_order_agreement(depth),
        "centre_px": {"across_images": across, "within_image": within},
        "centre_ratio": across / within if within > 0 else math.nan,
        "depth": {"across_images": d_across, "within_image": float(depth.std(1).mean())},
    }


# scikit-image's rgb2gray weights (ITU-R BT.709), so a Gaussian's brightness is measured as the
# photos' grayscale is everywhere else.
LUMINANCE_WEIGHTS = (0.2125, 0.7154, 0.0721)


def gaussian_luminance(colors: Tensor) -> Tensor:
    """Luminance [..., K] of Gaussian colours [..., K, 3] (RGB only)."""
    if colors.shape[-1] != 3:
        raise GmaeError(f"luminance needs RGB colours, the model predicts {colors.shape[-1]}")
    return colors @ torch.tensor(LUMINANCE_WEIGHTS, dtype=colors.dtype, device=colors.device)


def luminance_depth_correlation(luminance: np.ndarray, depth: np.ndarray) -> float:
    """Mean over images of Spearman's rho between the Gaussians' luminance and camera depth
    ([N, k] each). Near -1 (+1): the depth order sorts the Gaussians brightest (darkest) first, so
    depth layers are a brightness code; images with a constant luminance or depth are skipped."""
    (rl, ok_l), (rd, ok_d) = _unit_ranks(luminance), _unit_ranks(depth)
    ok = ok_l & ok_d
    return float((rl * rd).sum(1)[ok].mean()) if ok.any() else math.nan


def gradient_magnitude(imgs: np.ndarray) -> np.ndarray:
    """Sobel magnitude (scikit-image) of the grayscale of [B, H, W, 3] float images in [0, 1]."""
    return np.stack([sobel(rgb2gray(im)) for im in imgs])


def centre_pixels(centres: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the pixels under the 2-D centres [m, 2] (u, v) that fall inside the image;
    pixel j covers [j, j + 1)."""
    u, v = np.asarray(centres, np.float64).reshape(-1, 2).T
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return v[inside].astype(int), u[inside].astype(int)


def detail_at_centres(
    grads: Sequence[np.ndarray], pixels: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(own, other) per image: the mean gradient magnitude under image i's centres over its mean
    (> 1: the centres sit on edges and texture), and the same centres read on the gradient map
    of image (i + n/2) mod n, another photo (the control: a layout that never moves scores the
    same on both, however busy photos are where it sits). nan without centres or a second image.
    """
    n = len(grads)
    own, other = np.full(n, np.nan), np.full(n, np.nan)
    for i, (row, col) in enumerate(pixels):
        if not row.size:
            continue
        if grads[i].mean() > 0:
            own[i] = grads[i][row, col].mean() / grads[i].mean()
        g = grads[(i + n // 2) % n]
        if n > 1 and g.shape == grads[i].shape and g.mean() > 0:
            other[i] = g[row, col].mean() / g.mean()
    return own, other


def centres_in_masked_patches(
    means2d: Tensor, mask: Tensor, size: int, patch_size: int
) -> tuple[Tensor, Tensor]:
    """For 2-D centres [B, k, 2] (u, v pixels) on a [size, size] image with patch mask [B, N]
    (1 = masked, row-major patches): whether each centre is on screen, and whether it lies in a
    masked patch (False when off screen) [B, k]."""
    u, v = means2d[..., 0], means2d[..., 1]
    inside = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    col = (u.clamp(0, size - 1) // patch_size).long()
    row = (v.clamp(0, size - 1) // patch_size).long()
    in_masked = torch.gather(mask, 1, row * (size // patch_size) + col).bool() & inside
    return inside, in_masked


@torch.no_grad()
def gaussian_health(
    model, imgs: Tensor, mask_ratio: float | None = None, noise=None, arrays: dict | None = None
) -> dict:
    """Health statistics of ``model`` (a GMAE) on one batch of [0, 1] images.

    mask_ratio: None = the model's own (training conditions; needed for ``masked_fraction``),
    0 = every patch visible (zero-shot conditions). Returns a JSON-able dict (see ``verdict``).
    ``arrays``: if given, filled with the per-Gaussian values behind the statistics (raw head
    outputs per channel group, size / cap, on-screen std in pixels, z, opacity) for histograms.
    """
    latent, mask, ids_restore = model.encode(imgs, mask_ratio, noise)
    raw = model.forward_decoder_raw(latent, ids_restore, imgs).float()
    g = model.head.activate(raw)
    s = model.img_size
    camera = model.camera_at(s, s)
    proj = model.project_gaussians(g, s, s)
    rendered = model.render_gaussians(g, s, s)
    b, k = raw.shape[:2]

    groups = channel_groups(model.head.color_channels, model.head.rotation)
    saturation = {
        name: float((raw[..., sl].abs() > SATURATED).float().mean()) for name, sl in groups.items()
    }
    cap = model.head.scale_cap
    size = torch.exp(torch.log(g.scales.clamp_min(1e-12)).mean(-1))  # geometric mean, 3-D
    z = g.means[..., 2]

    # On-screen std: sqrt of sqrt(det) of the projected 2-D covariance (conic = its inverse).
    a, bb, c = proj.conics.unbind(-1)
    det_inv = (a * c - bb * bb).clamp_min(1e-30)
    screen = det_inv.rsqrt().sqrt().cpu().numpy()
    fx = float(camera.intrinsics(1)[0, 0])
    # The largest on-screen std: scale cap at the nearest depth (z + distance, z > -1), plus
    # the renderer's low-pass eps2d (0.3 px^2 by default) added to every 2-D covariance.
    screen_cap = math.sqrt((fx * cap / (camera.distance - 1.0)) ** 2 + model.render_settings.eps2d)

    centres = proj.means2d.cpu().numpy()
    depth = proj.depths.cpu().numpy()
    grads = gradient_magnitude(imgs.permute(0, 2, 3, 1).float().cpu().numpy())
    own, other = detail_at_centres(grads, [centre_pixels(c, s, s) for c in centres])

    # Where the centres land: masked vs visible patches (chance = the mask ratio).
    inside, in_masked = centres_in_masked_patches(proj.means2d, mask, s, model.patch_size)
    per_image = [float(in_masked[i][inside[i]].float().mean()) for i in range(b) if inside[i].any()]
    frac = np.array(per_image)
    masked = {
        "fraction": float(frac.mean()) if frac.size else math.nan,
        "chance": float(mask.float().mean()),
        "stderr": float(frac.std(ddof=1) / np.sqrt(frac.size)) if frac.size > 1 else math.nan,
    }
    masked["z"] = (
        (masked["fraction"] - masked["chance"]) / masked["stderr"]
        if masked["stderr"] and masked["stderr"] > 0
        else math.nan
    )

    if arrays is not None:
        arrays.update({f"raw_{name}": raw[..., sl] for name, sl in groups.items()})
        arrays.update(size_over_cap=size / cap, screen_std_px=screen, z=z, opacity=g.opacities)
    alpha = rendered.alpha
    summary = {
        "n_images": b,
        "n_gaussians": k,
        "mask_ratio": masked["chance"],
        "saturation": saturation,
        "pinned_size": float((size >= PINNED_SIZE * cap).float().mean()),
        "pinned_z": float((z.abs() >= 1.0 - PINNED_Z).float().mean()),
        "scale_gmean": _quantiles((size / cap).cpu().numpy().ravel()),
        "screen_std_px": {**_quantiles(screen.ravel()), "cap": screen_cap},
        "screen_p90_p10": float(np.quantile(screen, 0.9) / max(np.quantile(screen, 0.1), 1e-12)),
        "z_std_within": float(z.std(1).mean()),
        "masked_centres": masked,
        "alpha_coverage": {
            "mean": float(alpha.mean()),
            "above_half": float((alpha > 0.5).float().mean()),
        },
        "opacity": _quantiles(g.opacities.cpu().numpy().ravel()),
        "layout": {
            **layout_dependence(depth, centres),
            # Do the centres sit on this image's detail more than on another image's?
            "detail_at_centres": {
                "own": finite_mean(own),
                "other_image": finite_mean(other),
                "gain": finite_mean(own - other),
            },
        },
    }
    if g.colors.shape[-1] == 3:  # is the depth order a brightness code?
        lum = gaussian_luminance(g.colors).cpu().numpy()
        summary["luminance_depth_rho"] = luminance_depth_correlation(lum, depth)
    summary["verdict"], summary["failed"] = verdict(summary)
    return summary


@dataclass(frozen=True)
class Check:
    name: str
    key: str  # dotted path into the summary
    op: str  # "<" or ">="
    bound: float
    why: str

    def value(self, summary: dict) -> float:
        v = summary
        for part in self.key.split("."):
            v = v[part]
        return float(v)

    def passes(self, summary: dict) -> bool:
        """False only when measured and out of bounds (a statistic that needs two images or a
        mask is not measured on one image or at mask ratio 0)."""
        v = self.value(summary)
        if not math.isfinite(v):
            return True
        return v < self.bound if self.op == "<" else v >= self.bound

    def failure(self, summary: dict) -> str:
        return f"{self.name}: {self.value(summary):.3g} (needs {self.op} {self.bound:g})"


# The acceptance criteria for a recipe (issue "Gaussians that live"); docs/models.md lists them.
CHECKS = (
    Check("size not pinned", "pinned_size", "<", 0.05, "under 5 % of sizes at the cap"),
    Check("z not pinned", "pinned_z", "<", 0.05, "under 5 % of z within 0.02 of a bound"),
    Check("sizes vary", "screen_p90_p10", ">=", 1.5, "on-screen size p90 / p10 >= 1.5"),
    Check("depth spread", "z_std_within", ">=", 0.05, "within-image std of z >= 0.05"),
    Check(
        "layout follows image",
        "layout.centre_ratio",
        ">=",
        0.25,
        "a query's centre spread across images >= 1/4 of the spread within an image",
    ),
)
# Signs of the saturation collapse: any one of them makes the model degenerate. (A layout that
# barely follows the image is a failed check, not a collapse: depth, size and opacity can still
# depend on the image while each query keeps its place.)
COLLAPSE = (
    Check("sizes pinned", "pinned_size", "<", 0.5, "half or more of all sizes at the cap"),
    Check("z pinned", "pinned_z", "<", 0.5, "half or more of all z at a depth bound"),
    Check("flat depth", "z_std_within", ">=", 0.01, "within-image std of z under 0.01"),
)


def verdict(summary: dict) -> tuple[str, list[str]]:
    """("healthy" | "degraded" | "degenerate", the names of the failed checks)."""
    collapse = [c.failure(summary) for c in COLLAPSE if not c.passes(summary)]
    if collapse:
        return "degenerate", collapse
    failed = [c.failure(summary) for c in CHECKS if not c.passes(summary)]
    m = summary["masked_centres"]
    if m["chance"] > 0 and math.isfinite(m["z"]) and abs(m["z"]) < 2:
        failed.append(
            f"centres ignore the mask: {m['fraction']:.3f} in masked patches vs chance "
            f"{m['chance']:.3f} (|z| {abs(m['z']):.1f}, needs >= 2)"
        )
    return ("healthy" if not failed else "degraded"), failed


def flat_scalars(summary: dict, prefix: str = "health/") -> dict[str, float]:
    """The headline numbers as flat scalars (metrics.jsonl, TensorBoard)."""
    out = {f"{prefix}sat_{k}": v for k, v in summary["saturation"].items()}
    out.update(
        {
            f"{prefix}pinned_size": summary["pinned_size"],
            f"{prefix}pinned_z": summary["pinned_z"],
            f"{prefix}screen_std_median": summary["screen_std_px"]["median"],
            f"{prefix}screen_p90_p10": summary["screen_p90_p10"],
            f"{prefix}z_std_within": summary["z_std_within"],
            f"{prefix}centre_ratio": summary["layout"]["centre_ratio"],
            f"{prefix}depth_order_agreement": summary["layout"]["depth_order_agreement"],
            # Summaries written before the detail statistic lack it.
            f"{prefix}detail_gain": summary["layout"].get("detail_at_centres", {}).get("gain"),
            f"{prefix}luminance_depth_rho": summary.get("luminance_depth_rho"),
            f"{prefix}masked_fraction": summary["masked_centres"]["fraction"],
            f"{prefix}alpha_coverage": summary["alpha_coverage"]["mean"],
            f"{prefix}opacity_median": summary["opacity"]["median"],
            f"{prefix}healthy": float(summary["verdict"] == "healthy"),
        }
    )
    return {k: (v if v is not None and math.isfinite(v) else None) for k, v in out.items()}


def describe(summary: dict) -> str:
    """One line for people: the verdict and what failed."""
    v = summary["verdict"]
    if v == "healthy":
        return "Gaussian health: healthy (every check passes)"
    return f"Gaussian health: {v.upper()}: {'; '.join(summary['failed'])}"
