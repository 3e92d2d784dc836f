"""The full model report (the layers page of ``gmae zeroshot layers`` is ``gmae.report.layers``).

``build_report(model, out_dir)`` is what ``gmae report`` and ``gmae demo`` call. It runs every
zero-shot procedure (gmae.zeroshot) on a few BSDS500 val images and Weizmann horses and writes one
self-contained page (``index.html``, PNGs embedded as base64 and also written next to it) plus
``report.json`` with the numbers. A checkpoint trained on dead leaves (or any model given a
dead-leaves spec) also gets the occlusion scores of ``gmae.zeroshot.occlusion`` on a few test
scenes.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import grey_dilation

from gmae import io as gio
from gmae.data import bsds500_pairs, weizmann_horses
from gmae.data.deadleaves import is_deadleaves_spec
from gmae.errors import ArgumentError, GmaeError
from gmae.evaluate.boundaries import evaluate_boundaries, load_gt_boundaries
from gmae.images import headless_pyplot, strip
from gmae.loading.checks import stored_config
from gmae.loading.loaders import LoadedModel, random_like
from gmae.models import GMAE
from gmae.models.health import CHECKS as HEALTH_CHECKS
from gmae.photos import load_photo, model_device, model_input, predict_gaussians
from gmae.report.curves import read_metrics, training_figure
from gmae.report.html import HtmlReport

# The layers page lives in gmae.report.layers; these names are kept here for callers.
from gmae.report.layers import add_layer_sections, layers_page
from gmae.report.summary import budget_text, checkpoint_facts, last_value
from gmae.report.viewer import viewer_html, viewer_scene
from gmae.zeroshot.common import check_health
from gmae.zeroshot.figure_ground import load_mask
from gmae.zeroshot.layers import camera_depths, layer_set
from gmae.zeroshot.occlusion import DEFAULT_MAX_DIST as MAX_DIST
from gmae.zeroshot.occlusion import GMAE as OCC_GMAE
from gmae.zeroshot.occlusion import RANDOM as OCC_RANDOM
from gmae.zeroshot.occlusion import SHUFFLED as OCC_SHUFFLED
from gmae.zeroshot.occlusion import (
    load_scenes,
    occlusion_scores,
    scene_strip,
)
from gmae.zeroshot.pipelines import edge_maps, run_figure_ground
from gmae.zeroshot.stats import gaussian_stats, photo_batches

__all__ = [
    "ReportSettings",
    "add_layer_sections",
    "add_occlusion_section",
    "build_report",
    "layers_page",
    "occlusion_summary",
    "occlusion_verdict",
    "report_commands",
    "trained_deadleaves_spec",
]


@dataclass(frozen=True)
class ReportSettings:
    """How much of each procedure the report runs (``quick`` shrinks everything)."""

    num_images: int = 6  # BSDS500 val images and horses, each
    layers: tuple[int, ...] = (4, 8, 16, 32)  # edge L settings
    ks: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    groups: int = 8
    nthresh: int = 15  # boundary benchmark thresholds (the full benchmark uses 99)
    layer_pages: int = 2  # photos shown with the full layering section (a BSDS, a horse)
    workers: int = 2  # boundary-benchmark processes
    occlusion_images: int = 24  # dead-leaves test scenes scored (dead-leaves checkpoints only)
    occlusion_pictures: int = 4  # of them pictured
    occlusion_boot: int = 10_000  # bootstrap resamples of the occlusion CIs

    @classmethod
    def make(
        cls,
        num_images: int | None = None,
        quick: bool = False,
        occlusion_images: int | None = None,
    ) -> ReportSettings:
        if quick:
            n = 2 if num_images is None else num_images
            s = cls(num_images=n, layers=(4, 8), nthresh=5, layer_pages=1, workers=1,
                    occlusion_images=8, occlusion_pictures=2, occlusion_boot=2000)  # fmt: skip
        else:
            s = cls() if num_images is None else cls(num_images=num_images)
        if occlusion_images is not None:
            s = replace(s, occlusion_images=occlusion_images)
        return s


# --- the full report ------------------------------------------------------------------------------


def _photos_and_gt(n: int):
    """First n BSDS500 val photos with boundary GT, first n horses with masks."""
    bsds = [(load_photo(j), load_gt_boundaries(m)) for j, m in bsds500_pairs("val")[:n]]
    horses = [(load_photo(j), load_mask(m)) for j, m in weizmann_horses()[:n]]
    return bsds, horses


def _recon_grid(model, mae_model, photos, seed: int = 0):
    """Rows: input, masked input (training ratio), GMAE output at that ratio and at ratio 0,
    (MAE output at its ratio). Returns (uint8 image, column titles)."""
    x = model_input(photos, model.img_size, model_device(model))
    n = model.encoder.num_patches
    noise = torch.rand(len(photos), n, generator=torch.Generator().manual_seed(seed)).to(x)
    r = model.reconstruct(x, noise=noise)
    r0 = model.reconstruct(x, mask_ratio=0.0)
    cols = [r["input"], r["masked"], r["recon"], r0["recon"]]
    titles = [
        "input",
        f"masked {model.mask_ratio:.0%}",
        f"GMAE @ {model.mask_ratio:.0%}",
        "GMAE @ 0%",
    ]
    if mae_model is not None:
        xm = model_input(photos, mae_model.img_size, model_device(mae_model))
        m = mae_model.reconstruct(xm)
        up = torch.nn.functional.interpolate(m["recon"], size=x.shape[-2:], mode="nearest")
        cols.append(up.to(x))
        titles.append(f"MAE @ {mae_model.mask_ratio:.0%}")
    rows = [strip([c[i] for c in cols], gap=2) for i in range(len(photos))]
    # Two photos side by side per line, so the grid fills a wide page without getting tall.
    if len(rows) % 2:
        rows.append(np.full_like(rows[0], 255))
    sep = np.full((rows[0].shape[0], 12, 3), 255, np.uint8)
    lines = [np.concatenate([a, sep, b], axis=1) for a, b in zip(rows[::2], rows[1::2])]
    gap = np.full((2, lines[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([p for r_ in lines for p in (r_, gap)][:-1], axis=0)
    return grid, titles


def _boundary_gt_picture(gts: list[np.ndarray]) -> np.ndarray:
    """Mean of the annotators' boundary maps, dilated a pixel for visibility (1 = all agree)."""
    return grey_dilation(np.mean(gts, axis=0), size=(2, 2))


def build_report(
    model,
    out_dir: str | os.PathLike,
    mae_model=None,
    num_images: int | None = None,
    quick: bool = False,
    settings: ReportSettings | None = None,
    title: str | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    metrics: str | os.PathLike | None = None,
    mae_option: str | None = "--mae-ckpt",
    occlusion_data: str | None = None,
    occlusion_images: int | None = None,
) -> Path:
    """Run the zero-shot procedures on a few BSDS500 / horse images and write OUT/index.html.

    ``model``: a GMAE (eval mode; any device). ``mae_model``: optional MAE for the MAE baselines
    and reconstructions. ``quick``: 2 images each, L in (4, 8), 5 benchmark thresholds (about
    20 s for a tiny model on two CPU cores). ``checkpoint``: the file the model came from, for
    the summary box (training budget). ``metrics``: the run's metrics.jsonl for the training
    curves (default: the one next to ``checkpoint``, if any). ``mae_option``: how the caller
    takes an MAE checkpoint, named when there is none (None: the caller has no such option).
    ``occlusion_data``: a dead-leaves spec whose test scenes get the occlusion section (default:
    the checkpoint's own ``data.spec`` when it is a dead-leaves spec; otherwise no section);
    ``occlusion_images``: how many scenes (default 24, quick 8).
    Returns the page's path; the numbers are also in OUT/report.json.
    """
    if not isinstance(model, GMAE):
        raise GmaeError(f"the report needs a GMAE model, got {type(model).__name__}")
    s = settings or ReportSettings.make(num_images, quick, occlusion_images)
    if s.num_images < 1:
        raise ArgumentError("num_images", f"must be at least 1, got {s.num_images}")
    if s.occlusion_images < 2:  # the shuffled control pairs scenes
        raise ArgumentError("occlusion_images", f"must be at least 2, got {s.occlusion_images}")
    t0 = time.perf_counter()
    model.eval()
    if mae_model is not None:
        mae_model.eval()
    out = Path(out_dir)
    bsds, horses = _photos_and_gt(s.num_images)
    numbers: dict = {"settings": s.__dict__ | {"quick": quick}}
    rep = HtmlReport(title or "GMAE zero-shot report")
    facts = checkpoint_facts(checkpoint) if checkpoint is not None else {}
    # Checked before the slow sections, so a bad spec fails at once.
    occlusion_spec = occlusion_data or trained_deadleaves_spec(facts)
    scenes = _occlusion_scenes(occlusion_spec, s.occlusion_images) if occlusion_spec else []
    if metrics is None and checkpoint is not None:
        beside = Path(checkpoint).parent / "metrics.jsonl"
        metrics = beside if beside.is_file() else None
    metric_rows = read_metrics(metrics) if metrics is not None else []
    no_mae = f"no ({mae_option})" if mae_option else "no"
    mae_text = "yes" if mae_model is not None else no_mae

    photos = [p for p, _ in bsds] + [p for p, _ in horses]
    numbers["health"] = health = _health_banner(rep, model, photos)
    _training_section(rep, metric_rows, metrics)
    _model_section(rep, model, health, mae_text)
    _reconstruction_section(rep, model, mae_model, photos)
    _viewer_section(rep, model, bsds, horses, s)
    _layers_section(rep, model, [bsds[0][0], horses[0][0], *photos][: s.layer_pages], s)
    numbers["edges"] = _edges_section(rep, model, bsds, s, progress)
    numbers["figure_ground"] = _figure_ground_section(rep, model, mae_model, horses, progress)
    if occlusion_spec:  # dead-leaves scenes: where the model was trained on them (or asked)
        random_model = _random_twin(model, facts, checkpoint)
        numbers["occlusion"] = add_occlusion_section(
            rep, model, occlusion_spec, scenes, s, random_model, mae_model, progress
        )
    numbers["stats"] = _statistics_section(rep, model, photos, progress)

    rep.heading("Commands")  # how to reproduce each section at full size
    ckpt_name = str(checkpoint) if checkpoint is not None else "C"
    rep.code("\n".join(report_commands(ckpt_name, occlusion_spec)))
    numbers["seconds"] = round(time.perf_counter() - t0, 1)
    rep.text(f"Built in {numbers['seconds']} s.")
    rep.summary(_summary_rows(numbers, model, facts, metric_rows, len(bsds), len(horses), mae_text))
    gio.write_json(out / "report.json", numbers)
    return rep.save(out)


def _health_banner(rep: HtmlReport, model: GMAE, photos: list) -> dict:
    """Gaussian health on the report's photos, as the page's banner: whether anything below
    can be believed."""
    health = check_health(model, photos)
    verdict_text = {
        "degenerate": "DEGENERATE MODEL: its Gaussians collapsed (saturation). The layers, depth "
        "order, edges and figure-ground below are artefacts of the query index, not of the "
        "image. ",
        "degraded": "Some Gaussian health checks fail; read the zero-shot results with care. ",
        "healthy": "Gaussian health: every check passes. ",
    }[health["verdict"]]
    rep.banner(verdict_text + "; ".join(health["failed"]), health["verdict"])
    return health


def _training_section(rep: HtmlReport, metric_rows: list[dict], metrics) -> None:
    """The run's loss, validation and health curves, when its metrics are known."""
    fig = training_figure(metric_rows) if metric_rows else None
    if fig is not None:
        rep.heading("Training")
        rep.figure(
            "training_curves",
            fig,
            f"from {metrics}: validation loss on a fixed held-out batch with a fixed mask",
            full=True,
        )


def _model_section(rep: HtmlReport, model: GMAE, health: dict, mae_text: str) -> None:
    params = sum(p.numel() for p in model.parameters())
    rep.heading("Model and Gaussian health")
    rep.open_columns()
    rep.table(
        ["model", "value"],
        [
            ["image size / patch", f"{model.img_size} / {model.patch_size}"],
            ["Gaussians (k)", model.num_gaussians],
            ["camera", model.camera_model],
            ["training mask ratio", model.mask_ratio],
            ["parameters", f"{params / 1e6:.2f} M"],
            ["MAE baseline", mae_text],
        ],
    )
    rep.table(
        ["Gaussian health (report photos, training mask ratio)", "value"],
        [
            ["verdict", health["verdict"]],
            ["sizes pinned at the cap", f"{health['pinned_size']:.1%}"],
            ["z at a depth bound", f"{health['pinned_z']:.1%}"],
            ["on-screen size p90 / p10", health["screen_p90_p10"]],
            ["within-image std of z", health["z_std_within"]],
            ["centre spread across / within images", health["layout"]["centre_ratio"]],
            ["depth-order agreement between images", health["layout"]["depth_order_agreement"]],
            *([["Spearman(luminance, depth), per image", health["luminance_depth_rho"]]]
              if "luminance_depth_rho" in health else []),
            ["detail at centres: own image - another", health["layout"]["detail_at_centres"][
                "gain"]],
            ["centres in masked patches (chance)", "{fraction:.3f} ({chance:.2f})".format(
                **health["masked_centres"])],
        ],
    )  # fmt: skip
    rep.close_columns()


def _reconstruction_section(rep: HtmlReport, model: GMAE, mae_model, photos: list) -> None:
    rep.heading("Reconstructions")
    grid, titles = _recon_grid(model, mae_model, photos)
    rep.image(
        "reconstructions",
        grid,
        "two photos per line, each: " + " | ".join(titles) + " (photos squashed to the "
        "model's input)",
        full=True,
    )


def _viewer_section(rep: HtmlReport, model: GMAE, bsds, horses, s: ReportSettings) -> None:
    """The Gaussians in 3-D: a few photos, interactive (plain JavaScript, no network)."""
    rep.heading("Gaussians in 3-D")
    few = [p for p, _ in bsds[:2]] + [p for p, _ in horses[:2]]
    groups = min(s.groups, model.num_gaussians)
    rep.raw_html(viewer_html(viewer_scene(model, few, groups=groups)))


def _layers_section(rep: HtmlReport, model: GMAE, shown: list, s: ReportSettings) -> None:
    """Depth layers of a scene and an object (and more photos up to ``s.layer_pages``)."""
    rep.heading("Depth layers")
    rep.text(
        "Gaussians sorted by camera depth, nearest first, rendered at the photo's own "
        "resolution (the model saw it squashed to its square input)."
    )
    for i, photo in enumerate(shown):
        h, w = photo.size
        g = predict_gaussians(model, [photo])
        ls = layer_set(model, g, h, w, s.ks, min(s.groups, model.num_gaussians))
        add_layer_sections(rep, f"layers{i}_", photo, ls, g)


def _edges_section(rep: HtmlReport, model: GMAE, bsds, s: ReportSettings, progress: bool) -> dict:
    """Zero-shot edges on the BSDS500 photos beside Canny, scored by the benchmark."""
    rep.heading("Edges (BSDS500 val)")
    layers = tuple(L for L in s.layers if L <= model.num_gaussians) or (model.num_gaussians,)
    preds: dict[str, dict[str, np.ndarray]] = {}
    edge_iter = edge_maps(
        model, [p for p, _ in bsds], layers, "median", ("canny", "sobel"), progress=progress
    )
    rep.open_columns()
    for (photo, maps), (_, gt) in zip(edge_iter, bsds):
        for method, m in maps.items():
            preds.setdefault(method, {})[photo.name] = m
        rep.image(
            f"edges_{photo.name}",
            strip(
                [
                    photo.pixels,
                    maps["gmae_combined"],
                    maps[f"gmae_L{layers[0]}"],
                    maps["canny"],
                    _boundary_gt_picture(gt),
                ]
            ),  # fmt: skip
            f"{photo.name}: photo | GMAE combined (L = {', '.join(map(str, layers))}) | "
            f"GMAE L = {layers[0]} | Canny | human boundaries (mean of annotators)",
        )
    rep.close_columns()
    gt_map = {p.name: gt for p, gt in bsds}
    rows, numbers = [], {}
    for method, per in preds.items():
        r = evaluate_boundaries(
            per, gt_map, nthresh=s.nthresh, workers=s.workers, progress=progress
        )
        numbers[method] = {"ods": r.ods, "ois": r.ois, "ap": r.ap}
        rows.append([method, r.ods, r.ois, r.ap])
    rep.table(
        ["method", "ODS", "OIS", "AP"],
        rows,
        f"BSDS500 val, first {len(bsds)} images, {s.nthresh} thresholds (the full benchmark: "
        "`gmae zeroshot edges` + `gmae eval boundaries`)",
    )
    return numbers


def _figure_ground_section(rep: HtmlReport, model: GMAE, mae_model, horses, progress) -> dict:
    rep.heading("Figure-ground (Weizmann horses)")
    gt_masks = {p.name: m for p, m in horses}
    fg, masks = run_figure_ground(
        model, [p for p, _ in horses], None, mae_model=mae_model, gt=gt_masks, progress=progress
    )
    rep.open_columns()
    for photo, gt in horses:
        rep.image(
            f"figure_{photo.name}",
            strip(
                [
                    photo.pixels,
                    masks["gmae_depth_otsu"][photo.name],
                    masks["gmae_near_alpha"][photo.name],
                    masks["centre_prior"][photo.name],
                    gt,
                ]
            ),  # fmt: skip
            f"{photo.name}: photo | GMAE depth-Otsu | GMAE nearest-quarter alpha | "
            "centre prior | ground truth",
        )
    rep.close_columns()
    rep.table(
        ["method", "IoU (figure)", "mIoU (figure, ground)"],
        [[m, sc["iou_fg"], sc["miou"]] for m, sc in fg["scores"].items()],
        f"first {len(horses)} Weizmann horses",
    )
    return {m: {k: v for k, v in sc.items() if k != "per_image"} for m, sc in fg["scores"].items()}


def _statistics_section(rep: HtmlReport, model: GMAE, photos: list, progress: bool) -> dict:
    rep.heading("Gaussian statistics")
    batches = photo_batches(photos, model.img_size, 8)
    stats = gaussian_stats(model, batches, len(photos), progress=progress)
    corr = stats["spearman_size_vs_depth"]
    rep.table(
        ["measure", "pooled", "per-image mean"],
        [[f"Spearman({k}, depth)", v["pooled"], v["per_image_mean"]] for k, v in corr.items()]
        + [
            ["Spearman(luminance, depth) (control: depth sorting by brightness)", *_pair(v)]
            for v in [stats.get("spearman_luminance_vs_depth")]
            if v
        ]
        + [["hf_ratio (gradient at centres / mean)", *_pair(stats["hf_ratio"])]]
        + [
            ["hf_ratio on another photo (control)", "", v["per_image_mean"]]
            for v in [stats.get("hf_ratio_other_image")]
            if v
        ],
        f"{stats['n_images']} images, {stats['n_gaussians']} Gaussians; the paper's observation "
        "predicts Spearman < 0 (larger Gaussians nearer) and hf_ratio > 1, and above its "
        "control (the same centres read on another photo's gradients) if the layout follows "
        "the photo",
    )
    rep.figure("scale_vs_depth", _scale_depth_figure(model, photos), "", width=480)
    return stats


def _summary_rows(
    numbers: dict, model: GMAE, facts: dict, metric_rows: list[dict], n_bsds: int,
    n_horses: int, mae_text: str,
) -> list[tuple[str, str]]:  # fmt: skip
    """The summary box (shown at the top, under the banner); records the last losses."""
    health, edges, fgs = numbers["health"], numbers["edges"], numbers["figure_ground"]
    corr = numbers["stats"]["spearman_size_vs_depth"]
    params = sum(p.numel() for p in model.parameters())
    train_loss, val_loss = last_value(metric_rows, "loss"), last_value(metric_rows, "val_loss")
    numbers["summary"] = {"train_loss": train_loss, "val_loss": val_loss}
    return [
        ("checkpoint", f"{facts['file']} ({facts['kind']})" if facts else "(given in memory)"),
        ("training budget", budget_text(facts, metric_rows) if facts or metric_rows else "-"),
        ("Gaussian health", f"{health['verdict']} ({len(health['failed'])} of "
         f"{len(HEALTH_CHECKS)} checks fail)"),
        ("model", f"{params / 1e6:.2f} M params, {model.num_gaussians} Gaussians, "
         f"{model.img_size} px"),
        ("last training / validation loss", f"{_num(train_loss)} / {_num(val_loss)}"),
        ("edges ODS: GMAE combined / Canny", f"{edges['gmae_combined']['ods']:.3f} / "
         f"{edges['canny']['ods']:.3f} ({n_bsds} BSDS500 images)"),
        ("figure-ground mIoU: GMAE depth / centre prior",
         f"{fgs['gmae_depth_otsu']['miou']:.3f} / {fgs['centre_prior']['miou']:.3f} "
         f"({n_horses} horses)"),
        *([("occlusion depth order: GMAE / random / shuffled",
            occlusion_summary(numbers["occlusion"]))] if "occlusion" in numbers else []),
        ("Spearman(scale, depth), pooled", _num(corr["scale_gmean"]["pooled"])),
        ("MAE baseline", mae_text),
        ("built in", f"{numbers['seconds']} s"),
    ]  # fmt: skip


def report_commands(ckpt: str = "C", occlusion_spec: str | None = None) -> list[str]:
    """The full-size commands behind each section (every option exists: tests parse them)."""
    commands = [
        f"gmae zeroshot layers --ckpt {ckpt} --image photo.jpg --out runs/layers",
        f"gmae zeroshot edges --ckpt {ckpt} --images BSDS/images/val --out runs/edges "
        "--baselines canny sobel",
        "gmae eval boundaries --pred runs/edges/gmae_combined --gt BSDS/groundTruth/val "
        "--json runs/edges.json",
        f"gmae zeroshot figure-ground --ckpt {ckpt} --images HORSES/images --masks HORSES/masks "
        "--out runs/fg --json runs/fg.json",
        f"gmae zeroshot stats --ckpt {ckpt} --data imagenette-128 --json runs/stats.json",
        f"gmae export gaussians --ckpt {ckpt} --image photo.jpg --out photo.ply",
    ]
    if occlusion_spec:
        commands.append(
            f"gmae zeroshot occlusion --ckpt {ckpt} --data {shlex.quote(occlusion_spec)} "
            "--json runs/occlusion.json --out runs/occlusion"
        )
    return commands


# --- occlusion (dead leaves) ------------------------------------------------------------------


def trained_deadleaves_spec(facts: dict) -> str | None:
    """The checkpoint's training data spec when it is a dead-leaves one, else None."""
    spec = ((facts.get("config") or {}).get("data") or {}).get("spec")
    return spec if isinstance(spec, str) and is_deadleaves_spec(spec) else None


def _occlusion_scenes(spec: str, count: int):
    if not is_deadleaves_spec(spec):
        raise ArgumentError(
            "occlusion_data",
            f"needs a dead-leaves spec (deadleaves[:key=value,...]), got {spec!r}",
        )
    return load_scenes(spec, "test", count)


def _random_twin(model, facts: dict, checkpoint):
    """The random-GMAE baseline of ``gmae zeroshot occlusion`` (same architecture, seed 0), built
    from the checkpoint's stored config; None when the model came without one."""
    if not facts.get("config"):
        return None
    cfg = stored_config(facts["config"], checkpoint)
    twin = random_like(LoadedModel(model, "report", str(checkpoint), "gmae", cfg)).model
    return twin.to(model_device(model)).eval()


def _ci_text(score: dict) -> str:
    ci = score.get("ci")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"


def occlusion_verdict(depth_order: dict) -> str:
    """One plain sentence on GMAE's depth-order accuracy (0.5 chance, goal 0.75)."""
    d = depth_order[OCC_GMAE]
    head = (
        f"GMAE puts the occluding side nearer for {d['mean']:.3f} of the pixel pairs across a "
        f"true occlusion boundary ({d['n']} scenes"
    )
    if "ci" not in d:
        return head + "; too few for a CI). 0.5 is chance; the goal is 0.75."
    lo, hi = d["ci"]
    if lo >= 0.75:
        verdict = "it reaches the goal of 0.75"
    elif lo > 0.5:
        verdict = "better than chance (0.5)" + (
            ", and the CI reaches the goal of 0.75" if hi >= 0.75 else ", below the goal of 0.75"
        )
    elif hi < 0.5:
        verdict = "worse than chance (0.5): it tends to put the occluded side nearer"
    else:
        verdict = "not distinguishable from chance (0.5); the goal is 0.75"
    return head + f", 95 % CI {lo:.3f}-{hi:.3f}): {verdict}."


def occlusion_summary(numbers: dict) -> str:
    """The summary box's line: depth-order accuracy of GMAE (with CI) and its baselines."""
    d = numbers["depth_order"]
    base = " / ".join(f"{d[m]['mean']:.3f}" if m in d else "-" for m in (OCC_RANDOM, OCC_SHUFFLED))
    return (
        f"{d[OCC_GMAE]['mean']:.3f} {_ci_text(d[OCC_GMAE])} / {base} "
        f"({numbers['n_images']} scenes; chance 0.5, goal 0.75)"
    )


def add_occlusion_section(
    rep: HtmlReport,
    model,
    spec: str,
    scenes,
    s: ReportSettings,
    random_model=None,
    mae_model=None,
    progress: bool = False,
) -> dict:
    """The "Occlusion (dead leaves)" section: ``gmae.zeroshot.occlusion``'s scores of the scenes
    (depth order, rank correlation, edges, with the random / shuffled baselines), a sentence on
    what they mean and picture strips. Returns the scores (without per-image lists)."""
    layers = tuple(L for L in s.layers if L <= model.num_gaussians) or (model.num_gaussians,)
    result, maps = occlusion_scores(
        model, scenes, random_model, mae_model, layers=layers, max_dist=MAX_DIST,
        n_boot=s.occlusion_boot, workers=s.workers, progress=progress,
    )  # fmt: skip
    d, r, b = result["depth_order"], result["rank_correlation"], result["boundaries"]
    size = scenes[0].image.shape[0]
    rep.heading("Occlusion (dead leaves)")
    rep.text(occlusion_verdict(d))
    labels = {OCC_GMAE: "GMAE", OCC_RANDOM: "random GMAE (same architecture)",
              OCC_SHUFFLED: "shuffled (next scene's GMAE map)"}  # fmt: skip

    def mean(score: dict):  # nan: no scene had pairs / three leaves with a finite depth
        return score["mean"] if np.isfinite(score["mean"]) else "-"

    rows = [
        [labels[m], mean(d[m]), _ci_text(d[m]), mean(r[m]), _ci_text(r[m]), b[m]["ods"]]
        for m in (OCC_GMAE, OCC_RANDOM, OCC_SHUFFLED)
        if m in d
    ]
    rows += [[m.capitalize() + " (edges only)", "-", "-", "-", "-", b[m]["ods"]]
             for m in ("canny", "sobel")]  # fmt: skip
    rep.table(
        ["method", "depth-order accuracy", "95 % CI", "rank correlation", "95 % CI", "edges ODS"],
        rows,
        f"{len(scenes)} test scenes of {spec} ({size} px). Depth-order accuracy: share of pixel "
        "pairs across a true occlusion boundary whose occluding side is nearer (0.5 chance, goal "
        "0.75); rank correlation: Spearman rho of each leaf's median depth and its true order (0 "
        f"chance); edges: layer-index edges (L = {', '.join(map(str, layers))}) against the true "
        f"boundaries, BSDS benchmark at tolerance {MAX_DIST} of the diagonal. 95 % "
        "bootstrap CIs over scenes.",
    )
    if random_model is None:
        rep.text("No random-GMAE baseline: the model came without a stored config.")
    depth_names = " | ".join(f"{labels[m].split(' (')[0]} depth" for m in maps)
    rep.open_columns()
    for i, scene in enumerate(scenes[: s.occlusion_pictures]):
        rep.image(
            f"occlusion_{i:02d}",
            scene_strip(scene, i, maps),
            f"test scene {i}: scene | true occlusion rank | {depth_names} | true boundaries | "
            "GMAE edges (near = bright)",
        )
    rep.close_columns()

    def compact(v):  # per-image lists belong in `gmae zeroshot occlusion`'s JSON, not here
        if not isinstance(v, dict):
            return v
        return {k: compact(x) for k, x in v.items() if k != "per_image"}

    return {"data": spec, **compact(result)}


def _num(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _pair(d: dict) -> list[float]:
    return [d["pooled"], d["per_image_mean"]]


def _scale_depth_figure(model, photos):
    """Scatter of Gaussian scale (geometric mean) vs camera depth, pooled over the photos."""
    plt = headless_pyplot()
    g = predict_gaussians(model, photos)
    d = camera_depths(model, g).cpu().numpy().ravel()
    sc = g.scales.clamp_min(1e-12).log().mean(-1).exp().cpu().numpy().ravel()
    keep = g.opacities.cpu().numpy().ravel() >= 1.0 / 255.0
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.scatter(d[keep], sc[keep], s=4, alpha=0.4)
    ax.set_xlabel("camera depth")
    ax.set_ylabel("scale (geometric mean)")
    ax.set_title("Gaussian scale vs depth", fontsize=9)
    return fig
