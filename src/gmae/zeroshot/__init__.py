"""Zero-shot spatial tasks with a pretrained GMAE (mask ratio 0, nothing trained); see
docs/zeroshot.md.

    layers:        camera_depths, depth_rank, group_bounds, render_subsets, composite, layer_set
    edges:         gmae_edges (layer-index discontinuities), canny_edges, sobel_edges
    figure_ground: gmae_figure_masks, iou, score_masks (figure_ground.figure_ground: all methods)
    stats:         gaussian_stats (Spearman(scale, depth), high-frequency ratio)

Names are imported on first access, so ``gmae --help`` does not pay for torch.
"""

from __future__ import annotations

from gmae.lazy import lazy_exports

_LAZY = {
    "camera_depths": "gmae.zeroshot.layers",
    "composite": "gmae.zeroshot.layers",
    "depth_rank": "gmae.zeroshot.layers",
    "group_bounds": "gmae.zeroshot.layers",
    "layer_set": "gmae.zeroshot.layers",
    "render_subsets": "gmae.zeroshot.layers",
    "canny_edges": "gmae.zeroshot.edges",
    "gmae_edges": "gmae.zeroshot.edges",
    "sobel_edges": "gmae.zeroshot.edges",
    "gmae_figure_masks": "gmae.zeroshot.figure_ground",
    "iou": "gmae.zeroshot.figure_ground",
    "score_masks": "gmae.zeroshot.figure_ground",
    "gaussian_stats": "gmae.zeroshot.stats",
    "load_model": "gmae.zeroshot.common",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
