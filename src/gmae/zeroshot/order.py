"""Does the depth order matter? Re-composite a GMAE's own Gaussians in other orders [a control].

Reading GMAE's depth as a layering (docs/zeroshot.md) assumes that the order in which the
renderer composites the Gaussians carries something the reconstruction needs. This ablation
keeps every Gaussian exactly as the model predicted and projected it (2-D centre, footprint,
colour, opacity) and changes only the key of the front-to-back sort:

- ``model``: the model's own camera depth (reproduces its render: a check);
- ``reversed``: back to front;
- ``random``: a random order per image (seeded);
- ``fixed``: one order for every image, each query's mean depth rank over the evaluated images
  (what the query index alone would give);
- ``luminance``: brightest first (the brightness code of docs/results.md);
- ``luminance_reversed``: darkest first.

Read it as: ``model`` minus ``random`` (PSNR) is what the order is worth at all
(``order_worth_db``; ``order_share`` puts it over what the Gaussians add to the background
alone, ``model`` minus ``background_only``); ``fixed`` recovers the part a fixed per-query order
explains, so the rest is image-specific; ``luminance`` the part a brightness sort explains.
``recovered`` = 1 - (model - X) / (model - random): 1 means X is as good as the model's own
order, 0 no better than a random one. It is only read where the order is worth something (the
95 % CI of model - random above 0: ``shown_recovered``). The JSON keeps the ratio wherever
the order's mean worth is above 0, even when its CI reaches 0, and null where it is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gmae.errors import GmaeError
from gmae.evaluate.paired import format_diff, paired_bootstrap
from gmae.evaluate.recon import image_metrics
from gmae.models.health import gaussian_luminance
from gmae.render.api import finish
from gmae.render.projection import Projection
from gmae.render.reference import composite_reference
from gmae.zeroshot.common import model_device

ORDERS = ("model", "reversed", "random", "fixed", "luminance", "luminance_reversed")


@dataclass
class _Batch:
    imgs: Tensor  # [B, C, S, S] in [0, 1]
    pixel_mask: Tensor  # [B, S, S] bool, True = masked
    proj: Projection
    colors: Tensor  # [B, K, C]
    model_render: Tensor  # [B, C, S, S]: the model's own render (any backend)


def pixel_mask(mask: Tensor, patch: int) -> Tensor:
    """[B, L] patch mask (1 = masked, row-major patches) -> [B, S, S] bool pixel mask."""
    B, L = mask.shape
    side = int(round(L**0.5))
    if side * side != L:
        raise GmaeError(f"expected a square patch grid, got {L} patches")
    m = mask.reshape(B, side, side) > 0.5
    return m.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


def composite_in_order(model, proj: Projection, colors: Tensor, key: Tensor) -> Tensor:
    """The model's render of projected Gaussians, composited front to back by ascending ``key``
    [B, K] instead of their camera depth (the dense reference compositor; same settings and
    background as the model). [B, C, S, S]."""
    if key.shape != proj.depths.shape:
        raise GmaeError(f"sort key must be {list(proj.depths.shape)}, got {list(key.shape)}")
    B, K, C = colors.shape
    S = model.img_size
    accum, t_final = composite_reference(
        replace(proj, depths=key.to(proj.depths)), colors, S, S, settings=model.render_settings
    )
    bg = torch.as_tensor(model.background, dtype=colors.dtype, device=colors.device)
    image, _, _ = finish(accum, t_final, bg.expand(B, C), C, return_depth=False)
    return image


def _predict(model, imgs: Tensor, mask_ratio: float, noise: Tensor) -> _Batch:
    S = model.img_size
    with torch.no_grad():
        out = model(imgs, mask_ratio, noise)
        g = out.gaussians.float()
        proj = model.project_gaussians(g, S, S)
    return _Batch(imgs, pixel_mask(out.mask, model.patch_size), proj, g.colors, out.pred.float())


def _keys(batch: _Batch, fixed_rank: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
    depth = batch.proj.depths
    B, K = depth.shape
    lum = gaussian_luminance(batch.colors) if batch.colors.shape[-1] == 3 else None
    keys = {
        "model": depth,
        "reversed": -depth,
        "random": torch.rand(B, K, generator=gen).to(depth),
        "fixed": fixed_rank.to(depth).expand(B, K),
    }
    if lum is not None:
        keys["luminance"] = -lum
        keys["luminance_reversed"] = lum
    return keys


def _ranks(x: Tensor) -> Tensor:
    """Ranks 0..K-1 along the last axis (ties by index)."""
    return torch.argsort(torch.argsort(x, dim=-1, stable=True), dim=-1).to(torch.float64)


def check_mask_ratios(mask_ratios: Sequence[float]) -> None:
    """One-line error for a mask ratio outside [0, 1), before any image is read."""
    if not mask_ratios:
        raise GmaeError("no mask ratios given")
    for ratio in mask_ratios:
        if not 0.0 <= ratio < 1.0:
            raise GmaeError(f"mask ratio must be in [0, 1), got {ratio}")


def order_ablation(
    model,
    batches: Iterable[Tensor],
    mask_ratios: Sequence[float],
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """PSNR of the model's Gaussians composited in each order of ``ORDERS`` (RGB models; the
    luminance orders need RGB colours), per mask ratio, with paired tests against ``model``.

    ``batches``: [B, C, S, S] model inputs in [0, 1], read once (kept in memory: a few MB per
    hundred images). Masks and random orders come from a generator seeded with ``seed`` per
    ratio (noise drawn batch by batch, as ``gmae eval recon`` does). Returns a JSON-ready dict."""
    check_mask_ratios(mask_ratios)
    dev = model_device(model)
    imgs_all = [x.to(dev) for x in batches]
    n = sum(x.shape[0] for x in imgs_all)
    if n < 2:  # the paired tests resample images
        raise GmaeError(f"the order ablation needs at least 2 images, got {n}")
    results = []
    for ratio in mask_ratios:
        gen = torch.Generator().manual_seed(seed)
        data = []
        for x in tqdm(imgs_all, desc=f"predict mask {ratio:g}", disable=not progress):
            noise = torch.rand(x.shape[0], model.encoder.num_patches, generator=gen).to(dev)
            data.append(_predict(model, x, ratio, noise))
        # One order for every image: each query's mean depth rank over the images.
        fixed_rank = torch.cat([_ranks(b.proj.depths) for b in data]).mean(0)
        per: dict[str, list[dict]] = {}
        floor: list[dict] = []  # the background alone: what the Gaussians add is measured from it
        max_gap = 0.0
        for b in tqdm(data, desc=f"composite mask {ratio:g}", disable=not progress):
            bg = torch.as_tensor(model.background, dtype=b.imgs.dtype, device=b.imgs.device)
            for i in range(b.imgs.shape[0]):
                m = b.pixel_mask[i].cpu().numpy() if ratio > 0 else None
                blank = bg.reshape(-1, 1, 1).expand_as(b.imgs[i])
                scores = image_metrics(b.imgs[i].cpu().numpy(), blank.cpu().numpy(), m)
                floor.append({"psnr": scores["psnr"], "masked_psnr": scores["masked_psnr"]})
            for name, key in _keys(b, fixed_rank, gen).items():
                with torch.no_grad():
                    image = composite_in_order(model, b.proj, b.colors, key)
                if name == "model":
                    max_gap = max(max_gap, float((image - b.model_render).abs().max()))
                for i in range(image.shape[0]):
                    m = b.pixel_mask[i].cpu().numpy() if ratio > 0 else None
                    scores = image_metrics(
                        b.imgs[i].float().cpu().numpy(), image[i].clamp(0, 1).cpu().numpy(), m
                    )
                    per.setdefault(name, []).append(
                        {"psnr": scores["psnr"], "masked_psnr": scores["masked_psnr"]}
                    )
        results.append(_summarise(ratio, per, floor, max_gap))
    return {"orders": list(per), "n_images": len(per["model"]), "results": results}


def _summarise(ratio: float, per: dict[str, list[dict]], floor: list[dict], max_gap: float) -> dict:
    metrics = ["psnr"] + (["masked_psnr"] if ratio > 0 else [])
    out: dict = {"mask_ratio": ratio, "model_order_vs_model_render_max_abs": max_gap}
    for metric in metrics:
        scores = {n: np.array([r[metric] for r in rows], np.float64) for n, rows in per.items()}
        worth = float(scores["model"].mean() - scores["random"].mean())
        blank = float(np.mean([r[metric] for r in floor]))
        added = float(scores["model"].mean()) - blank  # what the Gaussians add over the background
        table = {}
        for name, s in scores.items():
            row: dict = {"mean": float(s.mean())}
            if name != "model":
                row["model_minus_this"] = paired_bootstrap(scores["model"], s)
                drop = float(scores["model"].mean() - s.mean())
                row["recovered"] = 1.0 - drop / worth if worth > 0 else None
            table[name] = row
        out[metric] = {
            "order_worth_db": worth,
            "background_only": blank,
            "order_share": worth / added if added > 0 else None,
            "orders": table,
            "images": {n: [float(v) for v in s] for n, s in scores.items()},
        }
    return out


def shown_recovered(block: dict, name: str) -> float | None:
    """``recovered`` of order ``name`` in one metric block, or None where the order is not worth
    anything beyond noise (the CI of model - random reaches 0): a ratio over ~0 means nothing."""
    lo = block["orders"]["random"]["model_minus_this"]["ci"][0]
    return block["orders"][name].get("recovered") if lo > 0 else None


def format_table(result: dict) -> str:
    """One line per order and mask ratio: mean PSNR, drop from the model's order, recovered."""
    lines = []
    for r in result["results"]:
        for metric in ("masked_psnr", "psnr"):
            if metric not in r:
                continue
            block = r[metric]
            text = (
                f"mask {r['mask_ratio']:g} {metric}: the order is worth "
                f"{block['order_worth_db']:.2f} dB (model - random)"
            )
            if block["order_share"] is not None:
                added = block["orders"]["model"]["mean"] - block["background_only"]
                text += (
                    f", {block['order_share']:.1%} of the {added:.2f} dB the Gaussians add "
                    "over the background alone"
                )
            lines.append(text)
            for name, row in block["orders"].items():
                text = f"  {name:20s} {row['mean']:6.2f}"
                if "model_minus_this" in row:
                    rec = shown_recovered(block, name)
                    text += f"  model - this {format_diff(row['model_minus_this'])}"
                    text += f"  recovered {rec:.2f}" if rec is not None else ""
                lines.append(text)
    return "\n".join(lines)
