"""Paired comparison of two methods scored on the same images: mean difference, bootstrap CI.

Used to claim (or not) that GMAE's zero-shot edges beat a control: each BSDS500 image has a
best-threshold F for both methods (``images`` in `gmae eval boundaries` JSON), and the question
is whether the mean per-image difference is above zero beyond resampling noise. The same test
compares two reconstructions (per-image masked PSNR in `gmae eval recon` JSON): both models saw
the same images and, with the same seed, the same masks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from gmae.errors import GmaeError

# The per-image numbers of a `gmae eval recon` result that two results can be compared on.
RECON_METRICS = ("masked_psnr", "masked_ssim", "psnr", "ssim")


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> dict:
    """Mean of a - b over paired items, its percentile bootstrap CI (resampling images), and
    the two-sided sign-flip permutation p-value (exact null for a paired design)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise GmaeError(f"need two equally long lists of >= 2 scores, got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    flips = rng.choice([-1.0, 1.0], (n_boot, d.size))
    null = np.abs((flips * d).mean(1))
    p = (1 + np.sum(null >= abs(d.mean()) - 1e-15)) / (n_boot + 1)
    return {
        "n": int(d.size),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_diff": float(d.mean()),
        "ci": [float(lo), float(hi)],
        "level": level,
        "p_sign_flip": float(p),
        "a_better_fraction": float((d > 0).mean()),
    }


def diff_by_quartile(a: Sequence[float], b: Sequence[float]) -> list[dict]:
    """The mean of a - b within each quarter of the items ranked by b (lowest b first: for
    PSNR or F, B's hardest images first): whether a difference is spread evenly or sits on the
    items B finds hard or easy. Ties are broken by order, so the quarters differ by at most one
    item in size."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 4:
        raise GmaeError(f"need two equally long lists of >= 4 scores, got {a.shape} and {b.shape}")
    order = np.argsort(b, kind="stable")
    return [
        {
            "quarter": i + 1,
            "n": int(part.size),
            "b_range": [float(b[part].min()), float(b[part].max())],
            "mean_diff": float((a[part] - b[part]).mean()),
        }
        for i, part in enumerate(np.array_split(order, 4))
    ]


def format_diff(test: dict, digits: int = 3) -> str:
    """``+0.123 [+0.045, +0.201]``: a ``paired_bootstrap`` result's mean difference and CI."""
    lo, hi = test["ci"]
    return f"{test['mean_diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def per_image_f(result: dict) -> dict[str, float]:
    """{image name: best-threshold F} from a `gmae eval boundaries` JSON."""
    if "images" not in result:
        raise GmaeError("not a `gmae eval boundaries` result (no per-image 'images' list)")
    return {r["name"]: float(r["f"]) for r in result["images"]}


def compare_boundaries(a: dict, b: dict, **kw) -> dict:
    """Paired bootstrap of per-image F over the images both results scored."""
    fa, fb = per_image_f(a), per_image_f(b)
    common = sorted(fa.keys() & fb.keys())
    if len(common) != len(fa) or len(common) != len(fb):
        raise GmaeError(f"the results cover different images ({len(fa)} vs {len(fb)} scored)")
    return paired_bootstrap([fa[k] for k in common], [fb[k] for k in common], **kw)


def compare_results(a: dict, b: dict, metric: str = "masked_psnr", **kw) -> dict:
    """Paired bootstrap of two `gmae eval boundaries` results (per-image F) or two
    `gmae eval recon` results (per-image ``metric`` at the first mask ratio of ``a``)."""
    if a.get("protocol") == "recon" or b.get("protocol") == "recon":
        return compare_recon(a, b, metric, **kw)
    return compare_boundaries(a, b, **kw)


def compare_recon(a: dict, b: dict, metric: str = "masked_psnr", **kw) -> dict:
    """Paired bootstrap of a per-image reconstruction metric. Pairs only results that scored
    the same images with the same masks: same data, split sizes, seed and mask ratio."""
    check_same_images(a, b)
    ratio = a["results"][0]["mask_ratio"]
    va, vb = recon_scores(a, ratio, metric), recon_scores(b, ratio, metric)
    out = paired_bootstrap(va, vb, **kw)
    by_b = diff_by_quartile(va, vb) if len(va) >= 4 else None
    return {"metric": metric, "mask_ratio": ratio, **out, "by_quartile_of_b": by_b}


def check_same_images(a: dict, b: dict) -> None:
    """Raise unless two `gmae eval recon` results scored the same images with the same masks
    (same data, split sizes and seed) and kept per-image scores."""
    for r in (a, b):
        if r.get("protocol") != "recon" or not r.get("results"):
            raise GmaeError("not a `gmae eval recon` result (protocol 'recon' with results)")
        if "images" not in r["results"][0]:
            raise GmaeError("a `gmae eval recon` result without per-image scores: rerun it")
    for key in ("data", "settings"):
        fields = ("spec", "splits", "img_size", "crop_pct") if key == "data" else ("seed",)
        for f in fields:
            if a[key].get(f) != b[key].get(f):
                raise GmaeError(
                    f"the results differ in {key}.{f}: {a[key].get(f)} vs {b[key].get(f)}"
                )


def recon_scores(result: dict, mask_ratio: float, metric: str = "masked_psnr") -> list[float]:
    """The per-image ``metric`` of a `gmae eval recon` result at ``mask_ratio``."""
    r = next((r for r in result["results"] if r["mask_ratio"] == mask_ratio), None)
    if r is None:
        raise GmaeError(f"a result has no mask ratio {mask_ratio}")
    values = [im[metric] for im in r["images"]]
    if any(v is None for v in values):
        raise GmaeError(f"{metric} is undefined at mask ratio {mask_ratio}")
    return values


def seed_bootstrap(
    a_runs: Sequence[Sequence[float]],
    b_runs: Sequence[Sequence[float]],
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Two recipes trained with several seeds each, every run scored on the same images (and
    masks). The difference of the seed-averaged means, with a two-level percentile bootstrap CI
    (resample each recipe's seeds, then the images, one image draw shared by every run so the
    pairing is kept) and the exact permutation p-value of the per-seed means under swapped
    recipe labels. Seeds, not images, are the replicates of a training recipe: with s_a and s_b
    seeds the smallest attainable p is 1 / C(s_a + s_b, s_a), twice that when s_a = s_b (the
    mirror split is as extreme): 0.1 for 2 and 3 and for 3 and 3, whatever the images say."""
    a, b = np.asarray(a_runs, np.float64), np.asarray(b_runs, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] < 2:
        raise GmaeError(
            f"need runs x images score tables over the same >= 2 images, got {a.shape} and "
            f"{b.shape}"
        )
    rng = np.random.default_rng(seed)
    sa, sb, n = a.shape[0], b.shape[0], a.shape[1]
    boots = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        ra, rb = rng.integers(0, sa, sa), rng.integers(0, sb, sb)
        boots[i] = a[ra][:, idx].mean() - b[rb][:, idx].mean()
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    means = np.concatenate([a.mean(1), b.mean(1)])
    observed = abs(means[:sa].mean() - means[sa:].mean())
    splits = list(itertools.combinations(range(sa + sb), sa))
    hits = 0
    for group in splits:
        mask = np.zeros(sa + sb, bool)
        mask[list(group)] = True
        hits += abs(means[mask].mean() - means[~mask].mean()) >= observed - 1e-12
    return {
        "seeds_a": sa,
        "seeds_b": sb,
        "n": int(n),
        "seed_means_a": a.mean(1).tolist(),
        "seed_means_b": b.mean(1).tolist(),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_diff": float(a.mean() - b.mean()),
        "ci": [float(lo), float(hi)],
        "level": level,
        "p_seed_permutation": hits / len(splits),
        "p_smallest_possible": (2 if sa == sb else 1) / len(splits),
    }


def compare_recon_seeds(
    a: Sequence[dict], b: Sequence[dict], metric: str = "masked_psnr", **kw
) -> dict:
    """``seed_bootstrap`` of two recipes' `gmae eval recon` results (one per seed), all scored
    on the same images with the same masks (checked as in ``compare_recon``)."""
    if not a or not b:
        raise GmaeError("each recipe needs at least one recon result")
    first = a[0]
    for r in (*a, *b):
        check_same_images(first, r)
    ratio = first["results"][0]["mask_ratio"]
    out = seed_bootstrap(
        [recon_scores(r, ratio, metric) for r in a],
        [recon_scores(r, ratio, metric) for r in b],
        **kw,
    )
    return {"metric": metric, "mask_ratio": ratio, **out}
