"""The report's interactive 3-D Gaussian viewer: the data it draws and its HTML block.

``viewer_scene(model, photos)`` predicts each photo's Gaussians (mask ratio 0) and expresses them
for an ordinary pinhole camera, the frame ``gmae export gaussians`` writes (gmae.export.ply): at
yaw = pitch = 0 the viewer's camera is the model's own, so its picture is the model's render,
and orbiting shows the depth the model gave each Gaussian. ``viewer_html(scene)`` is a
self-contained block (canvas, controls, data as JSON, the script in ``viewer.js``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch

from gmae.errors import GmaeError
from gmae.export.ply import DISTANCE
from gmae.images import colormap
from gmae.photos import predict_gaussians
from gmae.render.projection import quat_to_rotmat
from gmae.zeroshot.layers import camera_depths, depth_rank, group_index

CANVAS_PX = 560


def viewer_scene(model, photos: Sequence, groups: int = 8) -> dict:
    """JSON-able scene of ``photos`` (``gmae.zeroshot.common.Photo``) for the viewer.

    Per image: centres (flat x y z), 3-D covariances (flat xx xy xz yy yz zz), colours (uint8
    RGB), opacities, camera depths at the model's viewpoint and depth groups (0 = nearest of
    ``groups`` equal-count groups, as the report's layer strips).
    """
    if not photos:
        raise GmaeError("the 3-D viewer needs at least one image")
    g = predict_gaussians(model, photos)
    groups = max(1, min(groups, g.num_gaussians))
    depth = camera_depths(model, g)
    group = group_index(depth_rank(depth), groups)
    means, scales = g.means.double().cpu(), g.scales.double().cpu()
    if model.camera_model == "pinhole":  # already a pinhole camera: fx = W / 2 at distance 8
        focal = 0.5
    else:
        # GMAE's hybrid camera (orthographic centres, perspective footprints) has no 3-D
        # equivalent; the PLY export's pinhole frame puts centres exactly where GMAE draws
        # them and footprints within ~2 %: x' = x (z + d) / d, scales / d, fx = d W / 2.
        means = means.clone()
        means[..., :2] *= (means[..., 2:3] + DISTANCE) / DISTANCE
        scales = scales / DISTANCE
        focal = DISTANCE / 2
    rot = quat_to_rotmat(g.quats.double().cpu())
    cov = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    upper = cov[..., [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    colors = g.colors.float().cpu()
    if colors.shape[-1] == 1:
        colors = colors.expand(*colors.shape[:-1], 3)
    rgb = (colors[..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    background = np.broadcast_to(np.asarray(model.background, dtype=np.float64), (3,))
    images = []
    for i, photo in enumerate(photos):
        images.append(
            {
                "name": photo.name,
                "means": _rounded(means[i]),
                "cov": _rounded(upper[i], 6),
                "rgb": rgb[i].flatten().tolist(),
                "opacity": _rounded(g.opacities[i], 4),
                "depth": _rounded(depth[i], 5),
                "group": group[i].tolist(),
            }
        )
    return {
        "img_size": model.img_size,
        "focal": focal,  # fx as a fraction of the canvas width
        "distance": DISTANCE,
        "groups": groups,
        "background": [int(v * 255 + 0.5) for v in np.clip(background, 0, 1)],
        "colormap": colormap(np.linspace(0, 1, 9)).tolist(),  # viridis, as the depth maps
        "images": images,
    }


def _rounded(t, digits: int = 5) -> list[float]:
    """Short JSON: ``digits`` significant digits."""
    arr = np.asarray(t.detach().cpu().double() if hasattr(t, "detach") else t).ravel()
    return [float(f"{v:.{digits}g}") for v in arr]


def viewer_script() -> str:
    return resources.files("gmae.report").joinpath("viewer.js").read_text(encoding="utf-8")


def viewer_html(scene: dict, with_script: bool = True) -> str:
    """The viewer block: canvas, controls, the scene as JSON and (once per page) the script."""
    groups = scene["groups"]
    options = "".join(
        f'<option value="{i}">{html.escape(im["name"])}</option>'
        for i, im in enumerate(scene["images"])
    )
    payload = json.dumps(scene, separators=(",", ":")).replace("</", "<\\/")
    block = (
        '<div class="gviewer">'
        f'<canvas width="{CANVAS_PX}" height="{CANVAS_PX}" title="drag: orbit, wheel: zoom, '
        "double-click: the model's view\"></canvas>"
        '<div class="gv-controls">'
        f'<label>image <select class="gv-image">{options}</select></label>'
        '<label>colour <select class="gv-colour"><option value="image">image colour</option>'
        '<option value="depth">depth (yellow = near)</option></select></label>'
        f'<label>peel nearest layers <input type="range" class="gv-peel" min="0" '
        f'max="{groups - 1}" value="0" step="1"></label>'
        '<label><input type="checkbox" class="gv-only"> that layer alone</label>'
        '<label>splat size <input type="range" class="gv-size" min="5" max="100" value="100">'
        "</label>"
        '<label>depth stretch <input type="range" class="gv-stretch" min="1" max="10" '
        'step="0.5" value="1"></label>'
        '<button type="button" class="gv-reset">model\'s view</button>'
        '<p class="gv-status"></p>'
        '<p class="gv-help">Drag to orbit, scroll to zoom, double-click for the model\'s own '
        "view (its render of the image). Peeling hides the nearest depth layers one by one "
        f"({groups} equal-count groups by camera depth), so the layers behind show through. "
        "Smaller splats show where the centres are; depth stretch spreads them along the "
        "viewing axis (a drawing aid: 1 is the depth the model predicted).</p>"
        "</div>"
        f'<script type="application/json" class="gv-data">{payload}</script>'
        "</div>"
    )
    if with_script:
        block += f"<script>{viewer_script()}</script>"
    return block
