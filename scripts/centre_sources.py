"""What moves a GMAE's centres across images: the image, the mask, or neither?

The centre ratio of Gaussian health (a query's centre spread across images over the spread
within an image, asked >= 0.25) is measured with a fresh random mask per image, so its
"across images" spread mixes two causes: the photo and the mask. This script separates them
on N validation images and says where the movement happens:

- ``own_masks``: each image its own seeded mask (what ``gmae inspect`` measures);
- ``shared_mask``: every image the same mask, so only the photo varies;
- ``same_image``: one image under N different masks, so only the mask varies (the spread of a
  query's centre across masks, averaged over --mask-images images, over the within-image
  spread);
- ``mask0``: every patch visible;
- ``mask0_seeks``: at mask 0, what lies under the centres in their own photo against under
  the same centres on another photo (as ``detail_at_centres`` of Gaussian health), for the
  photo's luminance and its gradient magnitude: each over the photo's mean (> 1: brighter /
  busier than the photo on average), with the own - other difference and its 95 % bootstrap CI
  over images. A layout that follows the photo for a reason sits on something: bright or dark
  regions, edges or flat ones;
- ``mask0_by_opacity``: at mask 0, the ratio of the quarter of queries with the highest mean
  opacity over the images and of the quarter with the lowest (same denominator: all
  Gaussians' within-image spread), and the ratio with each query weighted by its mean opacity:
  whether the Gaussians that show move, or only faint ones;
- ``pointer_to_masked`` (a ``query_anchor=attend_all`` or ``attend_local`` model only): under
  each image's own mask, the share of the pointer's attention that goes to the masked patches
  (mean over queries and images, with the 10th / 90th percentile over queries), against their
  share of the keys: whether the queries use the masked patches they are allowed to point at;
- ``by_anchor`` (a ``query_anchor=mixed`` model only): under each image's own mask and at mask
  0, the ratio of the grid-anchored queries and of the attending ones (same denominator: all
  Gaussians' within-image spread), and under the own masks the share of each group's on-screen
  centres that land in masked patches: the layout's two halves, told apart;
- ``by_pass`` (a model with ``model.refine_steps`` R > 0 only): the own-mask and mask-0 ratios
  after 0, 1, ..., R refinement passes: what the first pass lays out and what the later
  passes' corrections add.

Under the shared mask each query is put in a group by where its on-screen centre lands in most
images: in a visible patch or in a masked one (a query never on screen is counted apart). The
ratio of each group (its queries' spread across images over the within-image spread of all
Gaussians) says whether the centres follow the photo where the model can see it. A masked
patch's content is unknown to the model, so the loss-optimal Gaussians there are a guess that
cannot follow that content; the visible group has no such excuse.

    python scripts/centre_sources.py --ckpt checkpoints/gmae_tiny_imagenette64_e40.safetensors \\
        --num-images 128 --json results/health_sweep/centre_sources/e40.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from gmae.errors import GmaeError
from gmae.models.health import (
    centre_pixels,
    centres_in_masked_patches,
    detail_at_centres,
    gradient_magnitude,
    layout_dependence,
)


@torch.no_grad()
def centres_and_mask(
    model,
    imgs: torch.Tensor,
    mask_ratio: float,
    noise: torch.Tensor | None,
    refine_steps: int | None = None,
):
    """Screen centres [B, k, 2] (pixels), depths [B, k] and, per Gaussian [B, k], whether its
    centre is on screen, whether it lies in a masked patch (False when off screen) and its
    opacity. ``refine_steps``: stop a refining model after that many passes (None: all of them)."""
    latent, mask, ids_restore = model.encode(imgs, mask_ratio, noise)
    raw = model.forward_decoder_raw(latent, ids_restore, imgs, refine_steps).float()
    gaussians = model.head.activate(raw)
    proj = model.project_gaussians(gaussians, model.img_size, model.img_size)
    inside, in_masked = centres_in_masked_patches(
        proj.means2d, mask, model.img_size, model.patch_size
    )
    return (proj.means2d.cpu().numpy(), proj.depths.cpu().numpy(), inside.cpu().numpy(),
            in_masked.cpu().numpy(), gaussians.opacities.cpu().numpy())  # fmt: skip


@torch.no_grad()
def attention_to_masked(model, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor) -> dict:
    """Share of each query's pointer attention on the masked patches (``attend_all``,
    ``attend_local``)."""
    latent, _, ids_restore = model.encode(imgs, mask_ratio, noise)
    features = model.decoder_features(latent, ids_restore)
    queries, keys, xy = model.pointer_inputs(features, ids_restore)
    n_visible = latent.shape[1] - 1
    on_masked = model.pointer.weights(queries, keys, xy)[..., n_visible:].sum(-1)  # [B, k]
    per_query = on_masked.mean(0).numpy()
    return {
        "share": float(on_masked.mean()),
        "per_query_p10_p90": [float(np.quantile(per_query, q)) for q in (0.1, 0.9)],
        "keys_share": 1.0 - n_visible / keys.shape[1],
    }


def ratio(centres: np.ndarray, depth: np.ndarray) -> dict:
    layout = layout_dependence(depth, centres)
    return {"centre_ratio": layout["centre_ratio"], "centre_px": layout["centre_px"]}


def group_ratios(
    centres: np.ndarray,
    inside: np.ndarray,
    in_masked: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Under one shared mask: the ratio of the queries whose on-screen centre lands mostly in
    visible patches, and of those landing mostly in masked ones (same denominator: all
    Gaussians' within-image spread), and their difference with a 95 % bootstrap CI over
    queries. Queries never on screen are only counted."""
    within = float(centres.std(1).mean())
    across = centres.std(0).mean(-1)  # [k]: each query's spread across images
    on_screen = inside.sum(0)  # [k]: in how many images it is on screen
    # [k]: of those, the share in which it lands in a masked patch (as gaussian_health)
    masked_share = (in_masked & inside).sum(0) / np.maximum(on_screen, 1)
    seen = on_screen > 0
    groups = {"visible": seen & (masked_share < 0.5), "masked": seen & (masked_share >= 0.5)}
    out: dict = {"offscreen_queries": int((~seen).sum())}
    for name, sel in groups.items():
        n = int(sel.sum())
        a = float(across[sel].mean()) if n else math.nan
        out[name] = {
            "queries": n,
            "across_px": a,
            "centre_ratio": a / within if n and within > 0 else math.nan,
        }
    vis, msk = across[groups["visible"]], across[groups["masked"]]
    if len(vis) and len(msk) and within > 0:
        rng = np.random.default_rng(seed)
        diffs = [
            rng.choice(vis, len(vis)).mean() - rng.choice(msk, len(msk)).mean()
            for _ in range(resamples)
        ]
        lo, hi = np.quantile(np.array(diffs) / within, [0.025, 0.975])
        out["visible_minus_masked"] = {
            "centre_ratio": float((vis.mean() - msk.mean()) / within),
            "ci95": [float(lo), float(hi)],
        }
    return out


def anchor_split(
    centres: np.ndarray, inside: np.ndarray | None, in_masked: np.ndarray | None, n_grid: int
) -> dict:
    """Ratio of the first ``n_grid`` (grid-anchored) queries and of the rest (attending), over
    all Gaussians' within-image spread; with ``inside`` / ``in_masked`` [n, k] also the share of
    each group's on-screen centres in masked patches."""
    within = float(centres.std(1).mean())
    across = centres.std(0).mean(-1)  # [k]
    out = {}
    for name, sel in {"grid": slice(0, n_grid), "attending": slice(n_grid, None)}.items():
        row = {
            "queries": int(across[sel].size),
            "centre_ratio": float(across[sel].mean() / within) if within > 0 else math.nan,
        }
        if inside is not None:
            seen = inside[:, sel]
            row["in_masked"] = float((in_masked[:, sel] & seen).sum() / max(seen.sum(), 1))
        out[name] = row
    return out


def seeks(imgs: torch.Tensor, centres: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Luminance and gradient magnitude under each photo's centres [n, k, 2] (pixels) over the
    photo's mean, on its own photo and on another one (photo (i + n/2) mod n), with the
    own - other difference and a 95 % bootstrap CI over images."""
    from skimage.color import rgb2gray

    arrays = imgs.permute(0, 2, 3, 1).float().cpu().numpy()
    maps = {"luminance": np.stack([rgb2gray(a) for a in arrays]),
            "gradient": gradient_magnitude(arrays)}  # fmt: skip
    h, w = arrays.shape[1:3]
    pixels = [centre_pixels(c, h, w) for c in centres]
    rng = np.random.default_rng(seed)
    out = {}
    for name, m in maps.items():
        own, other = detail_at_centres(list(m), pixels)
        diff = (own - other)[np.isfinite(own - other)]
        boot = [rng.choice(diff, len(diff)).mean() for _ in range(resamples)] if len(diff) else []
        lo, hi = np.quantile(boot, [0.025, 0.975]) if boot else (math.nan, math.nan)
        out[name] = {
            "own": float(np.nanmean(own)),
            "other_image": float(np.nanmean(other)),
            "own_minus_other": float(diff.mean()) if len(diff) else math.nan,
            "ci95": [float(lo), float(hi)],
        }
    return out


def opacity_split(centres: np.ndarray, opacities: np.ndarray) -> dict:
    """Centre ratio of the most and least opaque quarter of queries (by mean opacity over the
    images [n, k]) and the opacity-weighted ratio, over all Gaussians' within-image spread."""
    within = float(centres.std(1).mean())
    across = centres.std(0).mean(-1)  # [k]
    mean_op = opacities.mean(0)
    order = np.argsort(mean_op)
    q = max(len(order) // 4, 1)
    out = {}
    for name, sel in {"top_quarter": order[-q:], "bottom_quarter": order[:q]}.items():
        out[name] = {
            "queries": int(len(sel)),
            "mean_opacity": float(mean_op[sel].mean()),
            "centre_ratio": float(across[sel].mean() / within) if within > 0 else math.nan,
        }
    weights = (
        mean_op / mean_op.sum() if mean_op.sum() > 0 else np.full_like(mean_op, 1 / len(mean_op))
    )
    out["opacity_weighted_ratio"] = (
        float((across * weights).sum() / within) if within > 0 else math.nan
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", default="imagenette-128")
    ap.add_argument("--split", default="val")
    ap.add_argument("--num-images", type=int, default=128)
    ap.add_argument("--mask-images", type=int, default=8, help="images for the same-image test")
    ap.add_argument("--mask-ratio", type=float, default=None, help="default: the model's own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if args.num_images < 2 or args.mask_images < 1:
        raise SystemExit("centre_sources: --num-images must be >= 2 and --mask-images >= 1")
    if args.mask_ratio is not None and not 0.0 < args.mask_ratio < 1.0:
        raise SystemExit(f"centre_sources: needs a mask ratio in (0, 1), got {args.mask_ratio}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from gmae import io as gio

    try:
        gio.check_output_file(args.json)
    except GmaeError as e:
        raise SystemExit(f"centre_sources: {e}") from None
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.stats import evenly_spaced_images

    t0 = time.time()
    try:
        model = load_mae_or_gmae(args.ckpt, "gmae", "cpu")
        ratio_m = model.mask_ratio if args.mask_ratio is None else args.mask_ratio
        if not 0.0 < ratio_m < 1.0:
            raise GmaeError(f"needs a mask ratio in (0, 1), got {ratio_m} (the model's own); "
                            "pass --mask-ratio")  # fmt: skip
        imgs = evenly_spaced_images(args.data, args.split, model.img_size, args.num_images)
    except GmaeError as e:
        raise SystemExit(f"centre_sources: {e}") from None
    if len(imgs) < 2:
        raise SystemExit(f"centre_sources: {args.data} ({args.split}) has under 2 images")
    model.eval()
    n, n_patches = len(imgs), model.encoder.num_patches
    gen = torch.Generator().manual_seed(args.seed)
    own_noise = torch.rand(n, n_patches, generator=gen)
    shared_noise = own_noise[:1].expand(n, -1)

    c, d, inside, in_masked, _ = centres_and_mask(model, imgs, ratio_m, own_noise)
    n_grid = model.grid_queries  # 0 unless query_anchor="mixed"
    by_anchor = {"own_masks": anchor_split(c, inside, in_masked, n_grid)} if n_grid else None
    result = {
        "ckpt": str(args.ckpt),
        "source": {"data": args.data, "split": args.split},
        "n_images": n,
        "mask_ratio": ratio_m,
        "seed": args.seed,
        "own_masks": ratio(c, d),
    }
    c, d, inside, in_masked, _ = centres_and_mask(model, imgs, ratio_m, shared_noise)
    result["shared_mask"] = {
        **ratio(c, d),
        "groups": group_ratios(c, inside, in_masked, seed=args.seed),
    }
    # One image, many masks: only the mask varies.
    per_image = []
    for i in range(min(args.mask_images, n)):
        ci, di, *_ = centres_and_mask(model, imgs[i : i + 1].expand(n, -1, -1, -1), ratio_m,
                                     own_noise)  # fmt: skip
        per_image.append(ratio(ci, di))
    across = float(np.mean([r["centre_px"]["across_images"] for r in per_image]))
    within = float(np.mean([r["centre_px"]["within_image"] for r in per_image]))
    result["same_image"] = {
        "images": len(per_image),
        "centre_px": {"across_masks": across, "within_image": within},
        "centre_ratio": across / within if within > 0 else math.nan,
    }
    c, d, _, _, opacities = centres_and_mask(model, imgs, 0.0, None)
    result["mask0"] = ratio(c, d)
    result["mask0_seeks"] = seeks(imgs, c, seed=args.seed)
    result["mask0_by_opacity"] = opacity_split(c, opacities)
    if by_anchor is not None:
        result["by_anchor"] = {**by_anchor, "mask0": anchor_split(c, None, None, n_grid)}
    if model.pointer is not None and model.pointer.mask_key is not None:
        result["pointer_to_masked"] = attention_to_masked(model, imgs, ratio_m, own_noise)
    # A refining model (model.refine_steps = R): the ratio after each pass, so that the first
    # pass's layout can be told from the corrections the later passes add. After all R passes
    # it is the own-mask and mask-0 ratio measured above.
    if model.refine_steps:
        result["by_pass"] = []
        for steps in range(model.refine_steps):
            row = {"refine_steps": steps}
            for name, (m, noise) in {
                "own_masks": (ratio_m, own_noise),
                "mask0": (0.0, None),
            }.items():
                c, d, *_ = centres_and_mask(model, imgs, m, noise, steps)
                row[name] = ratio(c, d)
            result["by_pass"].append(row)
        result["by_pass"].append(
            {
                "refine_steps": model.refine_steps,
                "own_masks": result["own_masks"],
                "mask0": result["mask0"],
            }
        )
    result["seconds"] = round(time.time() - t0, 1)
    gio.write_json(args.json, result)

    g = result["shared_mask"]["groups"]
    d = g.get("visible_minus_masked")
    ci = f"; difference CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else ""
    print(
        f"{Path(args.ckpt).stem}: centre ratio, own masks {result['own_masks']['centre_ratio']:.3f}"
        f" | shared mask {result['shared_mask']['centre_ratio']:.3f} (visible "
        f"{g['visible']['centre_ratio']:.3f}, {g['visible']['queries']} queries; masked "
        f"{g['masked']['centre_ratio']:.3f}, {g['masked']['queries']}{ci})"
        f" | one image, masks vary {result['same_image']['centre_ratio']:.3f}"
        f" | mask 0 {result['mask0']['centre_ratio']:.3f}"
    )
    for name, v in result["mask0_seeks"].items():
        print(f"  mask 0, {name} under the centres / photo mean: own {v['own']:.3f}, another "
              f"photo {v['other_image']:.3f} (difference {v['own_minus_other']:+.3f}, CI "
              f"[{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}])")  # fmt: skip
    if "pointer_to_masked" in result:
        a = result["pointer_to_masked"]
        print(f"  pointer's attention on the masked patches {a['share']:.3f} (their share of the "
              f"keys {a['keys_share']:.2f}; per query p10 / p90 {a['per_query_p10_p90'][0]:.3f}"
              f" / {a['per_query_p10_p90'][1]:.3f})")  # fmt: skip
    o = result["mask0_by_opacity"]
    print(f"  mask 0, centre ratio of the most / least opaque quarter of queries "
          f"{o['top_quarter']['centre_ratio']:.3f} (mean opacity "
          f"{o['top_quarter']['mean_opacity']:.2f}) / {o['bottom_quarter']['centre_ratio']:.3f} "
          f"({o['bottom_quarter']['mean_opacity']:.2f}); opacity-weighted "
          f"{o['opacity_weighted_ratio']:.3f}")  # fmt: skip
    if "by_anchor" in result:
        own, m0 = result["by_anchor"]["own_masks"], result["by_anchor"]["mask0"]
        for name in ("grid", "attending"):
            print(f"  {name} queries ({own[name]['queries']}): centre ratio, own masks "
                  f"{own[name]['centre_ratio']:.3f} | mask 0 {m0[name]['centre_ratio']:.3f}; "
                  f"in masked patches {own[name]['in_masked']:.3f}")  # fmt: skip
    for row in result.get("by_pass", []):
        print(
            f"  after {row['refine_steps']} refinement passes: own masks "
            f"{row['own_masks']['centre_ratio']:.3f} | mask 0 {row['mask0']['centre_ratio']:.3f}"
        )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
