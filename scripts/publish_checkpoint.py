"""Publish a finished pretraining run: fp16 safetensors, a model card, the loss curve.

    python scripts/publish_checkpoint.py runs/gmae_tiny_imagenette64 [--name NAME]

writes checkpoints/NAME.safetensors (``gmae export checkpoint --fp16``), checkpoints/NAME.md
(Hub YAML front matter; command, data, schedule, wall time, final loss; the numbers measured on
it that --results holds; BibTeX), checkpoints/NAME-loss.png and the run's last
reconstruction grid as checkpoints/NAME-recon.png. The wall time is
the span between the run's config.yaml (written at start) and last.pt (written at the end).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path

import yaml

from gmae import io as gio
from gmae.export.checkpoints import export_checkpoint
from gmae.io import read_metrics
from gmae.report.curves import plot_loss_curves

METHOD_NAMES = {"gmae": "GMAE", "mae": "MAE", "latent_mim": "Latent MIM"}
# gmae data specs -> Hugging Face Hub data set ids (for the card's front matter).
HUB_DATASETS = {"imagenette": "frgfm/imagenette", "cifar10": "uoft-cs/cifar10"}
BIBTEX = """```bibtex
@article{rajasegaran2025gmae,
  title   = {Gaussian Masked Autoencoders},
  author  = {Rajasegaran, Jathushan and Chen, Xinlei and Li, Ruilong and Feichtenhofer,
             Christoph and Malik, Jitendra and Ginosar, Shiry},
  journal = {arXiv preprint arXiv:2501.03229},
  year    = {2025}
}
```

The software: see `CITATION.cff` in the gmae repository."""
# (protocol, label, path into "results", Hub metric type)
MEASURES = [
    ("knn", "kNN (k 20) top-1, cls token", ("cls", "knn_top1"), "accuracy"),
    ("linprobe", "linear probe top-1, cls token", ("cls", "top1"), "accuracy"),
    ("finetune", "fine-tune top-1", ("top1",), "accuracy"),
    ("recon", "PSNR on masked patches (mask 0.75), dB", ("masked_psnr",), "psnr"),
]


def logged_train_seconds(rows: list[dict], cfg: dict) -> float:
    """Seconds spent in training steps, from the throughput each log row reports (images_per_s
    over the steps since the previous row). Evaluation and checkpoint time are not included, and a
    DDP run counts as one process (the config does not record the world size)."""
    o = cfg["optim"]
    batch = o["batch_size"] * o.get("accum_iter", 1)
    seconds, prev = 0.0, 0
    for r in rows:
        if r.get("images_per_s"):
            seconds += batch * (r["step"] - prev) / r["images_per_s"]
        prev = r["step"]
    return seconds


def measured(results_dir: Path, ckpt: Path) -> list[dict]:
    """The evaluation numbers of ``ckpt`` found in ``results_dir``'s JSON files (every
    ``gmae eval ... --json`` output records the checkpoint it measured)."""
    found = []
    for path in sorted(results_dir.rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
            continue
        if Path(str(doc["model"].get("ckpt", ""))).resolve() != ckpt.resolve():
            continue
        for protocol, label, keys, metric in MEASURES:
            if doc.get("protocol") != protocol:
                continue
            res = doc["results"]
            if protocol == "recon":  # one entry per mask ratio
                res = next((r for r in res if r.get("mask_ratio") == 0.75), None)
            for key in keys:
                res = res.get(key) if isinstance(res, dict) else None
            if isinstance(res, int | float):
                # The data the number was measured on, which need not be the pretraining data's
                # spec (a run may train on a packed copy and be evaluated on the original).
                data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
                spec = data.get("spec")
                found.append({"protocol": protocol, "label": label, "value": round(res, 2),
                              "metric": metric, "file": str(path),
                              "data": str(spec) if spec else None})  # fmt: skip
    labels = [n["label"] for n in found]
    for n in found:  # the same protocol twice (other settings): name the file
        if labels.count(n["label"]) > 1:
            n["label"] += f" ({Path(n['file']).stem})"
    return found


def hub_dataset(spec: str) -> str | None:
    """The Hugging Face Hub data set id of a gmae data spec, when it has one."""
    return next((v for k, v in HUB_DATASETS.items() if spec.startswith(k)), None)


def front_matter(name: str, model: dict, data: dict, numbers: list[dict]) -> str:
    """Hugging Face Hub YAML front matter (license, library, tags, data sets, metrics)."""
    method = model["name"]
    tags = [method.replace("_", "-"), "masked-image-modeling", "self-supervised-learning",
            "vision-transformer"]  # fmt: skip
    if method == "gmae":
        tags.append("gaussian-splatting")
    spec = str(data.get("spec", ""))
    meta: dict = {"license": "apache-2.0", "library_name": "gmae",
                  "pipeline_tag": "image-feature-extraction", "tags": tags}  # fmt: skip
    hub_ids = [hub_dataset(s) for s in [spec] + [n.get("data") or spec for n in numbers]]
    if any(hub_ids):
        meta["datasets"] = sorted({h for h in hub_ids if h})
    if numbers:
        meta["metrics"] = sorted({n["metric"] for n in numbers})
        results = []
        for n in numbers:
            task = "image-classification" if n["metric"] == "accuracy" else "image-to-image"
            measured_on = n.get("data") or spec
            results.append({
                "task": {"type": task, "name": n["label"]},
                "dataset": {"type": hub_dataset(measured_on) or measured_on,
                            "name": measured_on, "split": "validation"},
                "metrics": [{"type": n["metric"], "value": n["value"], "name": n["label"]}],
            })  # fmt: skip
        meta["model-index"] = [{"name": name, "results": results}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, width=100) + "---\n\n"


def measured_section(numbers: list[dict]) -> str:
    if not numbers:
        return ""
    rows = [f"| {n['label']} | {n['value']} | `{n['file']}` |" for n in numbers]
    return "\n".join(
        [
            "",
            "## Measured",
            "",
            "On the validation split; each JSON records its protocol and settings, "
            "docs/results.md the command that wrote it.",
            "",
            "| measure | value | from |",
            "|---|---|---|",
            *rows,
            "",
        ]  # fmt: skip
    )


def hub_card(name: str, model: dict, data: dict, body: str, numbers: list[dict]) -> str:
    """``body`` (the card without front matter) with Hub front matter, the measured numbers,
    and the BibTeX; an older version of these parts in ``body`` is replaced."""
    if body.startswith("---\n"):
        body = body.split("\n---\n", 1)[1].lstrip("\n")
    # Drop the generated sections, keep every other one (hand-written notes too), in order.
    sections = re.split(r"(?m)^(?=## )", body)
    kept = [s for s in sections if not s.startswith(("## Measured\n", "## Citation\n"))]
    body = "\n".join(s.rstrip("\n") + "\n" for s in kept if s.strip())
    body = re.sub(
        r"`gmae\.export\.checkpoints\.load_model\(\"([^\"]+)\"\)`",
        r'`gmae.from_pretrained("\1")` (one line, in eval mode)',
        body,
    )
    return (front_matter(name, model, data, numbers) + body + measured_section(numbers)
            + "\n## Citation\n\n" + BIBTEX + "\n")  # fmt: skip


def update_card(card: Path, results_dir: Path) -> None:
    """Refresh an existing card (``--update-card``): front matter, numbers, citation."""
    from gmae.export.checkpoints import read_metadata

    weights = card.with_suffix(".safetensors")
    cfg = json.loads(read_metadata(weights)["config"])
    numbers = measured(results_dir, weights)
    text = hub_card(card.stem, cfg["model"], cfg["data"], card.read_text(), numbers)
    gio.write_text(card, text)
    print(f"updated {card}: {len(numbers)} measured numbers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the run directory (or, with --update-card, a card)")
    ap.add_argument("--name", default=None, help="checkpoint name (default: the run's)")
    ap.add_argument("--out", type=Path, default=Path("checkpoints"), help="default checkpoints/")
    ap.add_argument("--command", default=None, help="the command that trained it (for the card)")
    ap.add_argument(
        "--weights",
        type=Path,
        help="an exported .safetensors of the run (when last.pt stayed elsewhere)",
    )
    ap.add_argument(
        "--where",
        default="on a 2-core CPU (shared with a second run)",
        help="where it trained, for the card",
    )
    ap.add_argument("--health", type=Path, help="`gmae inspect --json` output for the card")
    ap.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="directory searched for gmae eval JSONs of this checkpoint (default results/)",
    )
    ap.add_argument(
        "--update-card",
        action="store_true",
        help="RUN is an existing card (checkpoints/NAME.md): refresh its front matter, numbers "
        "and citation from NAME.safetensors and --results",
    )
    args = ap.parse_args()
    if args.update_card:
        update_card(args.run, args.results)
        return
    name = args.name or args.run.name
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    rows = read_metrics(args.run / "metrics.jsonl")
    last = args.run / "last.pt"
    clock = args.weights if args.weights else last
    seconds = clock.stat().st_mtime - (args.run / "config.yaml").stat().st_mtime
    wall = f"{seconds / 3600:.2f} h {args.where}"
    if seconds <= 0:  # files copied off another machine lose their times: use the logged speed
        wall = f"{logged_train_seconds(rows, cfg) / 3600:.2f} h of training steps {args.where}"
    tail = rows[-10:]
    final_loss = sum(r["loss"] for r in tail) / len(tail)

    target = args.out / f"{name}.safetensors"
    if args.weights:
        if args.weights.resolve() != target.resolve():
            gio.write_bytes(target, args.weights.read_bytes())
        info = {"bytes": target.stat().st_size, "out": str(target)}
    else:
        info = export_checkpoint(last, target, fp16=True)
    plot_loss_curves([(name, args.run / "metrics.jsonl")], args.out / f"{name}-loss.png")
    grids = sorted((args.run / "vis").glob("recon-*.png"))
    if grids:  # the last reconstruction grid of the run
        gio.write_bytes(args.out / f"{name}-recon.png", grids[-1].read_bytes())
    m, d, o = cfg["model"], cfg["data"], cfg["optim"]
    command = args.command or f"gmae pretrain --config {name} --out runs/{name}"
    rows_md = [
        ("command", f"`{command}`"),
        (
            "data",
            f"`{d['spec']}` split `{d['split']}`, RandomResizedCrop({d['img_size']}, "
            f"scale {d['scale']}) + flip",
        ),
        (
            "schedule",
            f"{o['epochs']} epochs, {rows[-1]['step']} steps, batch {o['batch_size']} "
            f"x {o['accum_iter']}, base lr {o['base_lr']} (lr = base x batch / 256), "
            f"warmup {o['warmup_epochs']} epochs + cosine, wd {o['weight_decay']}, "
            f"clip {o['clip_grad']}",
        ),
        ("model", f"`{json.dumps(m)}`"),
        ("wall time", wall),
        ("final loss", f"{final_loss:.4f} (mean of the last {len(tail)} logged steps)"),
        ("skipped steps", str(rows[-1].get("skipped", 0))),
        ("file", f"`{name}.safetensors`, {info['bytes'] / 1e6:.1f} MB"),
    ]
    if args.health:
        h = json.loads(args.health.read_text())["masked"]
        rows_md += [
            ("Gaussian health", f"**{h['verdict']}**" + (f": {'; '.join(h['failed'])}"
                                                         if h["failed"] else "")),
            ("sizes / z pinned at a bound", f"{h['pinned_size']:.1%} / {h['pinned_z']:.1%}"),
            ("on-screen size p90 / p10", f"{h['screen_p90_p10']:.2f}"),
            ("within-image std of z", f"{h['z_std_within']:.3f}"),
            ("centre spread across / within images", f"{h['layout']['centre_ratio']:.3f}"),
            ("centres in masked patches (chance)",
             f"{h['masked_centres']['fraction']:.3f} ({h['masked_centres']['chance']:.2f})"),
            ("depth-order agreement between images",
             f"{h['layout']['depth_order_agreement']:.3f}"),
            *([("Spearman(luminance, depth) (near -1 or +1: depth is a brightness code)",
                f"{h['luminance_depth_rho']:.3f}")] if "luminance_depth_rho" in h else []),
            ("health measured by", f"`gmae inspect --ckpt {target} --num-images "
                                   f"{h['n_images']}` (imagenette-128 val)"),
        ]  # fmt: skip
    method = METHOD_NAMES.get(m["name"], m["name"])
    card = "\n".join(
        [
            f"# {name}",
            "",
            f"A {method} pretrained with gmae ({dt.date.today().isoformat()}): ViT "
            f"encoder `{m.get('encoder', '?')}` ({m['patch_size']} px patches at "
            f"{d['img_size']} px) with its pretraining decoder; fp16 weights, the resolved "
            "config in the safetensors metadata. Load it with "
            f'`gmae.export.checkpoints.load_model("{args.out / name}.safetensors")` or pass '
            "it as `--ckpt` to any `gmae eval`, `gmae zeroshot`, `gmae report` or `gmae export` "
            "command.",
            "",
            "| | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in rows_md),
            "",
            f"![loss curve]({name}-loss.png)",
            "",
        ]
    )
    if grids:
        card += (
            f"\n![reconstructions after {o['epochs']} epochs: input, masked input "
            f"({m.get('mask_ratio', 0.75):.0%}), output]({name}-recon.png)\n"
        )
    card = hub_card(name, m, d, card, measured(args.results, target))
    gio.write_text(args.out / f"{name}.md", card)
    mb = info["bytes"] / 1e6
    print(f"published {name}: {info['out']} ({mb:.1f} MB), final loss {final_loss:.4f}")


if __name__ == "__main__":
    main()
