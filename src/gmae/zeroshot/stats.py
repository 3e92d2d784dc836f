"""The paper's observed properties of GMAE's Gaussians, measured [paper claim, our measures].

1. Scale vs depth: "larger (low-frequency) Gaussians sit closer to the camera". Spearman rank
   correlation (scipy) between a Gaussian's size and its camera depth; the claim predicts rho < 0.
   Sizes: ``scale_gmean`` (geometric mean of the three scales, the 3-D size),
   ``scale_largest_axis`` (the largest of the three; not the head's scale cap), and
   ``screen_size`` (sqrt of the determinant of the projected 2-D covariance, in pixels of the
   model's input; it shrinks with depth by construction, so it is reported, not the headline).
   Reported pooled over all Gaussians of all images, and as the mean of per-image correlations.
2. High-frequency concentration: "Gaussians concentrate on high-frequency regions instead of a
   uniform grid". hf_ratio = mean Sobel gradient magnitude (grayscale input at the model's
   resolution) at the Gaussian centres / its mean over all pixels (the exact expectation at
   uniformly random positions). > 1: concentrated on edges / texture. Pooled (ratio of sums) and
   per-image mean. A fixed layout also scores > 1 when photos are busier where it puts its
   Gaussians (often the middle), so the control ``hf_ratio_other_image`` reads image i's centres
   on the gradient map of image i + N/2 (another photo of the same set), and
   ``hf_ratio_own_vs_other`` is the paired bootstrap of own minus other per image: the layout
   follows *this* photo's detail only where that difference is above zero.

Only Gaussians the renderer would draw count: opacity >= 1/255 and centre inside the image
(for hf_ratio).

3. Image dependence of the layout [our diagnostic, not a paper claim]: Gaussian i comes from
   decoder query i, so the same index can be compared across images. ``depth_order_agreement``:
   the mean over image pairs of the Spearman correlation between their per-index camera depths
   (1: every image gets the same depth order, so its layers and layer edges cannot depend on
   the image; 0: unrelated orders). ``centre_px``: the std of a Gaussian's 2-D centre across
   images vs the std of the centres within an image (pixels of the model's input; both
   averaged over x and y), and the same for camera depth (``depth``). All k Gaussians count.
4. Depth vs colour [our diagnostic, a control for the layers]: Spearman between a Gaussian's
   luminance (``gaussian_luminance``: scikit-image's rgb2gray weights on its predicted colour)
   and its camera depth, drawn Gaussians only. Near +-1 the depth order mostly sorts the
   Gaussians by brightness, so depth layers and their edges trace brightness contours rather
   than a layering of their own (brighter nearer gives rho < 0). Absent unless colours are RGB.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from gmae.data import build_dataset
from gmae.errors import GmaeError
from gmae.evaluate.paired import paired_bootstrap
from gmae.models.health import (
    centre_pixels,
    detail_at_centres,
    finite_mean,
    finite_std,
    gaussian_luminance,
    gradient_magnitude,
    layout_dependence,
)
from gmae.zeroshot.common import Photo, model_device, model_input

MIN_OPACITY = 1.0 / 255.0
SIZES = ("scale_gmean", "scale_largest_axis", "screen_size")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (scipy); nan for fewer than 3 points or a constant input."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


class GaussianStats:
    """Accumulates per-Gaussian measurements batch by batch; ``summary()`` gives the JSON."""

    def __init__(self) -> None:
        self._depth: list[np.ndarray] = []
        self._sizes: dict[str, list[np.ndarray]] = {k: [] for k in SIZES}
        self._depth_all: list[np.ndarray] = []  # [k] per image, every Gaussian, index order
        self._centres_all: list[np.ndarray] = []  # [k, 2]
        self._grads: list[np.ndarray] = []  # [S, S] Sobel magnitude per image
        self._pixels: list[tuple[np.ndarray, np.ndarray]] = []  # (row, col) of drawn centres
        self._luminance: list[np.ndarray] = []  # of the drawn Gaussians (3-channel colours only)

    def add(self, model, imgs, g) -> None:
        """imgs [B, 3, S, S] in [0, 1] (the model's input), g their Gaussians."""
        s = model.img_size
        with torch.no_grad():
            proj = model.project_gaussians(g.float(), s, s)
        depth = proj.depths.cpu().numpy()
        conic = proj.conics.cpu().numpy()
        # conic = inverse 2-D covariance (a, b, c): det(cov) = 1 / (a c - b^2).
        det_inv = conic[..., 0] * conic[..., 2] - conic[..., 1] ** 2
        screen = np.where(det_inv > 0, 1.0 / np.sqrt(np.maximum(det_inv, 1e-30)), np.nan) ** 0.5
        scales = g.scales.float().cpu().numpy()
        sizes = {
            "scale_gmean": np.exp(np.log(np.clip(scales, 1e-12, None)).mean(-1)),
            "scale_largest_axis": scales.max(-1),
            "screen_size": screen,
        }
        alive = g.opacities.float().cpu().numpy() >= MIN_OPACITY
        rgb = g.colors.shape[-1] == 3
        luminance = gaussian_luminance(g.colors.float()).cpu().numpy() if rgb else None  # [B, K]
        grad = gradient_magnitude(imgs.permute(0, 2, 3, 1).float().cpu().numpy())
        centres = proj.means2d.cpu().numpy()
        for i in range(depth.shape[0]):
            self._depth_all.append(depth[i])
            self._centres_all.append(centres[i])
            keep = alive[i] & np.isfinite(sizes["screen_size"][i])
            self._depth.append(depth[i][keep])
            for k in SIZES:
                self._sizes[k].append(sizes[k][i][keep])
            self._grads.append(grad[i])
            self._pixels.append(centre_pixels(centres[i][alive[i]], s, s))
            if luminance is not None:
                self._luminance.append(luminance[i][keep])

    def _with_depth(self, values: list[np.ndarray], depth: np.ndarray) -> dict:
        """Spearman of per-image ``values`` (drawn Gaussians) with their camera depth: pooled
        (``depth``: every image's, concatenated), and the mean and std over images."""
        per = np.array([spearman(v, d) for v, d in zip(values, self._depth)])
        return {
            "pooled": spearman(np.concatenate(values), depth),
            "per_image_mean": finite_mean(per),
            "per_image_std": finite_std(per),
        }

    def summary(self) -> dict:
        if not self._depth:
            raise GmaeError("no images were measured")
        depth = np.concatenate(self._depth)
        corr = {k: self._with_depth(self._sizes[k], depth) for k in SIZES}
        lum_corr = (
            {"spearman_luminance_vs_depth": self._with_depth(self._luminance, depth)}
            if len(self._luminance) == len(self._depth)
            else {}
        )
        ratios, other = detail_at_centres(self._grads, self._pixels)
        at = np.concatenate([g[row, col] for g, (row, col) in zip(self._grads, self._pixels)])
        total = float(np.mean([float(g.mean()) for g in self._grads]))  # all maps are S x S
        return {
            "n_images": len(self._depth),
            "n_gaussians": int(depth.size),
            "spearman_size_vs_depth": corr,
            **lum_corr,
            "hf_ratio": {
                "pooled": float(at.mean() / total) if at.size and total > 0 else float("nan"),
                "per_image_mean": finite_mean(ratios),
                "per_image_std": finite_std(ratios),
            },
            **_other_image_control(ratios, other),
            "layout": layout_dependence(np.stack(self._depth_all), np.stack(self._centres_all)),
        }


def _other_image_control(own: np.ndarray, other: np.ndarray) -> dict:
    """hf_ratio of image i's centres read on another photo's gradients, and the paired test of
    own minus other; empty for one image (no other photo)."""
    if len(own) < 2:
        return {}
    ok = np.isfinite(own) & np.isfinite(other)
    out = {"hf_ratio_other_image": {"per_image_mean": finite_mean(other),
                                    "per_image_std": finite_std(other)}}  # fmt: skip
    if ok.sum() >= 2:
        out["hf_ratio_own_vs_other"] = paired_bootstrap(own[ok], other[ok])
    return out


def gaussian_stats(
    model,
    batches: Iterable,
    total: int | None = None,
    progress: bool = False,
) -> dict:
    """Run ``GaussianStats`` over batches of [B, 3, S, S] model inputs in [0, 1]."""
    acc = GaussianStats()
    dev = model_device(model)
    bar = tqdm(total=total, desc="stats", unit="img", disable=not progress)
    for x in batches:
        x = x.to(dev)
        with torch.no_grad():
            g = model.predict_gaussians(x, mask_ratio=0.0)
        acc.add(model, x, g)
        bar.update(x.shape[0])
    bar.close()
    return acc.summary()


def dataset_batches(
    spec: str, split: str, size: int, num_images: int, batch_size: int
) -> tuple[Iterable, int]:
    """Batches of the first ``num_images`` images of a data set, squashed to ``size``."""
    ds = build_dataset(spec, split=split)
    n = len(ds) if num_images <= 0 else min(num_images, len(ds))
    if n == 0:
        raise GmaeError(f"data set {spec} ({split}) is empty")
    # Evenly spaced indices: the first N of an ImageFolder would all be one class.
    idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int))

    def gen():
        for i in range(0, len(idx), batch_size):
            photos = [Photo(str(j), np.asarray(ds[int(j)][0])) for j in idx[i : i + batch_size]]
            yield model_input(photos, size)

    return gen(), len(idx)


def evenly_spaced_images(spec: str, split: str, size: int, num_images: int) -> torch.Tensor:
    """One batch [N, 3, size, size] of ``num_images`` images evenly spaced over a split (all of
    it if smaller, or if ``num_images <= 0``), as ``dataset_batches`` picks them: what the
    health commands and scripts measure on."""
    batches, _ = dataset_batches(spec, split, size, num_images, num_images)
    return next(iter(batches))


def photo_batches(photos: Sequence, size: int, batch_size: int) -> Iterable:
    for i in range(0, len(photos), batch_size):
        yield model_input(photos[i : i + batch_size], size)
