"""The page of ``gmae zeroshot layers``: one photo's depth-sorted Gaussians as PNGs and an HTML
page, and the same sections inside the full report (``add_layer_sections``).

The layering itself is ``gmae.zeroshot.layers``; the page lives here, in the report package, so
that gmae.zeroshot never imports gmae.report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gmae.images import colormap, save_png, strip
from gmae.photos import predict_gaussians
from gmae.report.html import HtmlReport
from gmae.zeroshot.layers import gaussian_scatter, layer_set


def add_layer_sections(report: HtmlReport, prefix: str, photo, ls, g, index: int = 0) -> None:
    """Strips, depth maps and the scatter of image ``index`` of a LayerSet into ``report``."""
    num = ls.depths.shape[1]
    ks = ", ".join("all" if k == num else str(k) for k in ls.ks)
    report.image(
        f"{prefix}firstk",
        strip([photo.pixels, *ls.first_k[index]]),
        f"photo, then the nearest K Gaussians for K = {ks} (of {num}), nearest first",
    )
    report.image(
        f"{prefix}groups_alone",
        strip(list(ls.groups_alone[index])),
        f"{ls.groups} equal depth groups, each alone (nearest group left)",
    )
    report.image(
        f"{prefix}groups_cumulative",
        strip(list(ls.groups_cumulative[index])),
        f"the same {ls.groups} groups added front to back (last = full render)",
    )
    near = 1.0 - ls.depth_render[index].cpu().numpy()
    expected = 1.0 - ls.depth_expected[index].cpu().numpy()
    report.image(
        f"{prefix}depth",
        strip([photo.pixels, ls.full[index], colormap(near), colormap(expected)]),
        "photo, full render, depth render (colour = normalised Gaussian depth), renderer's "
        "expected depth (both: yellow = near, purple = far / empty)",
    )
    report.figure(
        f"{prefix}scatter",
        gaussian_scatter(
            photo.pixels,
            ls.means2d[index].cpu().numpy(),
            ls.depths[index].cpu().numpy(),
            g.scales[index].cpu().numpy(),
            g.opacities[index].cpu().numpy(),
        ),
        "Gaussian centres on the photo: colour = camera depth, marker size = scale",
        width=520,
    )


def layers_page(
    model,
    photo,
    out_dir: str | os.PathLike,
    ks: Sequence[int] = (8, 16, 32, 64, 128, 256),
    groups: int = 8,
) -> Path:
    """``gmae zeroshot layers``: PNGs of every render and OUT/index.html for one photo."""
    out = Path(out_dir)
    h, w = photo.size
    g = predict_gaussians(model, [photo])
    ls = layer_set(model, g, h, w, ks, groups)
    num = g.num_gaussians
    for k, img in zip(ls.ks, ls.first_k[0]):
        save_png(out / "first_k" / f"K{k:04d}.png", img)
    for i, (a, c) in enumerate(zip(ls.groups_alone[0], ls.groups_cumulative[0])):
        save_png(out / "groups" / f"alone_{i:02d}.png", a)
        save_png(out / "groups" / f"cumulative_{i:02d}.png", c)
    save_png(out / "depth_render.png", colormap(1.0 - ls.depth_render[0].cpu().numpy()))
    save_png(out / "depth_expected.png", colormap(1.0 - ls.depth_expected[0].cpu().numpy()))
    report = HtmlReport(f"GMAE layers: {photo.name}")
    report.text(
        f"{num} Gaussians sorted by camera depth (nearest first), rendered at the photo's "
        f"{w}x{h}; the model saw the photo squashed to {model.img_size}x{model.img_size}."
    )
    add_layer_sections(report, "", photo, ls, g)
    return report.save(out)
