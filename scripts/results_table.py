"""Markdown tables from the JSON files that scripts/results_*.sh write.

    python scripts/results_table.py results/imagenette64
    python scripts/results_table.py results/imagenette64_e40 --tag anchor

prints the evaluation table (kNN, 1-NN, linear probe, fine-tune, reconstruction PSNR; each row
with the wall times of the commands that produced it) and, when present, the zero-shot tables
(BSDS500 edges with the paired tests against each control, figure-ground IoU, Gaussian
statistics, what the depth order is worth). ``--tag T`` reads the zero-shot files of a second
model in the same folder: boundaries_T_<method>.json, paired_T_*.json, figure_ground_T.json,
stats_T.json, order_T.json.
Missing files show as "-", so a partial run still prints; encoders with no result are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmae.evaluate.paired import format_diff


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def eval_table(d: Path) -> list[str]:
    head = (
        "| encoder | kNN cls | kNN avg | 1-NN cls | linear cls | linear avg | fine-tune | "
        "PSNR masked (0.75) | PSNR whole (mask 0) | wall (kNN / linear / fine-tune / recon) |"
    )
    lines = [head, "|" + "---|" * 10]
    for name in ("gmae", "gmae_anchor", "mae", "mae_pix", "lmim", "random", "gmae_e20", "mae_e20"):
        files = ("knn", "linprobe", "finetune", "recon")
        knn, lin, ft, rec = (load(d / f"{p}_{name}.json") for p in files)
        if not any((knn, lin, ft, rec)):
            continue
        k = knn["results"] if knn else {}
        li = lin["results"] if lin else {}
        f = ft["results"] if ft else {}
        r = {row["mask_ratio"]: row for row in rec["results"]} if rec else {}
        masked = next((v["masked_psnr"] for m, v in r.items() if m > 0), None)
        whole0 = r.get(0.0, {}).get("psnr")
        walls = " / ".join(
            fmt(x["seconds"] / 60, 1) + " min" if x else "-" for x in (knn, lin, ft, rec)
        )
        lines.append(
            f"| {name} | {fmt(k.get('cls', {}).get('knn_top1'))} "
            f"| {fmt(k.get('mean', {}).get('knn_top1'))} "
            f"| {fmt(k.get('cls', {}).get('nn1_loo_top1'))} "
            f"| {fmt(li.get('cls', {}).get('top1'))} | {fmt(li.get('mean', {}).get('top1'))} "
            f"| {fmt(f.get('top1'))} | {fmt(masked, 2)} | {fmt(whole0, 2)} | {walls} |"
        )
    return lines


def boundary_table(d: Path, tag: str = "") -> list[str]:
    lines = ["| edges | ODS | OIS | AP |", "|---|---|---|---|"]
    methods = ("gmae_L4", "gmae_L8", "gmae_L16", "gmae_L32", "gmae_combined")
    t = f"{tag}_" if tag else ""
    for method in (*methods, "canny", "sobel", "shuffled", "luminance_order"):
        r = load(d / f"boundaries_{t}{method}.json")
        if r:
            lines.append(f"| {method} | {r['ods']:.3f} | {r['ois']:.3f} | {r['ap']:.3f} |")
    if len(lines) == 2:
        return []
    paired = [
        (control, load(d / f"paired_{t}gmae_combined_vs_{control}.json"))
        for control in ("shuffled", "luminance_order")
    ]
    paired = [(c, r) for c, r in paired if r]
    if paired:  # scripts/paired_compare.py outputs: per-image best F, GMAE minus the control
        lines += ["", "| gmae_combined minus | mean F difference [95 % CI] | p | GMAE better |",
                  "|---|---|---|---|"]  # fmt: skip
        for control, r in paired:
            lines.append(
                f"| {control} | {format_diff(r)} "
                f"| {r['p_sign_flip']:.4f} | {r['a_better_fraction']:.0%} |"
            )
    return lines


def tagged(stem: str, tag: str) -> str:
    """stem.json, or stem_TAG.json for a second model's files."""
    return f"{stem}_{tag}.json" if tag else f"{stem}.json"


def figure_ground_table(d: Path, tag: str = "") -> list[str]:
    r = load(d / tagged("figure_ground", tag))
    if not r:
        return []
    lines = [
        f"| figure-ground ({r['n_images']} images) | IoU (figure) | mIoU (figure, ground) |",
        "|---|---|---|",
    ]
    for method in r["methods"]:
        sc = r["scores"][method]
        lines.append(f"| {method} | {sc['iou_fg']:.3f} | {sc['miou']:.3f} |")
    return lines


def stats_table(d: Path, tag: str = "") -> list[str]:
    r = load(d / tagged("stats", tag))
    if not r:
        return []
    lines = [
        f"| Spearman(size, depth), {r['n_images']} images, {r['n_gaussians']} Gaussians "
        "| pooled | per-image mean (std) |",
        "|---|---|---|",
    ]
    hf = "hf_ratio (not a correlation: Sobel at centres / image mean)"
    rows = [*r["spearman_size_vs_depth"].items()]
    if "spearman_luminance_vs_depth" in r:  # stats.json files written before it lack it
        rows.append(("luminance (colour brightness)", r["spearman_luminance_vs_depth"]))
    rows.append((hf, r["hf_ratio"]))
    for name, v in rows:
        lines.append(
            f"| {name} | {v['pooled']:.3f} | {v['per_image_mean']:.3f} ({v['per_image_std']:.3f}) |"
        )
    lay = r.get("layout")
    if lay:  # stats.json files written before the layout diagnostic lack it
        c, z = lay["centre_px"], lay["depth"]
        lines += [
            "",
            "| layout: same Gaussian index across images | value |",
            "|---|---|",
            f"| depth-order agreement (mean Spearman over image pairs) "
            f"| {lay['depth_order_agreement']:.3f} |",
            f"| centre std across images / within an image (px) "
            f"| {c['across_images']:.2f} / {c['within_image']:.2f} |",
            f"| camera-depth std across images / within an image "
            f"| {z['across_images']:.4f} / {z['within_image']:.4f} |",
        ]
    test = r.get("hf_ratio_own_vs_other")
    if test:  # stats.json files written before the other-image control lack it
        lines += [
            f"| hf_ratio on its own photo - on another photo (per image, 95 % CI, p) "
            f"| {format_diff(test)}, p {test['p_sign_flip']:.4f} |",
        ]
    return lines


def order_table(d: Path, tag: str = "") -> list[str]:
    """What the depth order is worth: `gmae zeroshot order` (PSNR of other orders)."""
    r = load(d / tagged("order", tag))
    if not r:
        return []
    from gmae.zeroshot.order import shown_recovered

    lines = [
        f"| order ({r['n_images']} images): PSNR, model - this [95 % CI], recovered "
        + "".join(f"| mask {x['mask_ratio']:g} " for x in r["results"])
        + "|",
        "|---|" + "---|" * len(r["results"]),
    ]
    blocks = [x.get("masked_psnr", x["psnr"]) for x in r["results"]]
    for name in r["orders"]:
        cells = []
        for b in blocks:
            row = b["orders"][name]
            if name == "model":
                cells.append(f"{row['mean']:.2f}")
                continue
            t, rec = row["model_minus_this"], shown_recovered(b, name)
            rec_text = f", {rec:.2f}" if rec is not None else ""
            cells.append(f"{row['mean']:.2f} ({format_diff(t)}{rec_text})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    shares = [
        f"{b['background_only']:.2f} (order: {b['order_share']:.1%} of the gain)"
        if b.get("order_share") is not None
        else f"{b['background_only']:.2f}"
        for b in blocks
    ]
    lines.append("| background alone | " + " | ".join(shares) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=Path("results/imagenette64"))
    ap.add_argument("--tag", default="", help="zero-shot files of another model: *_TAG*.json")
    args = ap.parse_args()
    d, tag = args.dir, args.tag
    tables = [eval_table(d), boundary_table(d, tag), figure_ground_table(d, tag),
              stats_table(d, tag), order_table(d, tag)]  # fmt: skip
    # The evaluation table's header always prints (a partial run shows what is missing).
    print("\n\n".join("\n".join(t) for t in tables if t))


if __name__ == "__main__":
    main()
