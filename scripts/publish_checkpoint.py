"""Publish a finished pretraining run: fp16 safetensors, a model card, the loss curve.

    python scripts/publish_checkpoint.py runs/gmae_tiny_imagenette64 [--name NAME]

writes checkpoints/NAME.safetensors (``gmae export checkpoint --fp16``), checkpoints/NAME.md
(command, data, schedule, wall time, final loss), checkpoints/NAME-loss.png and the run's last
reconstruction grid as checkpoints/NAME-recon.png. The wall time is
the span between the run's config.yaml (written at start) and last.pt (written at the end).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import yaml

from gmae import io as gio
from gmae.export.checkpoints import export_checkpoint
from gmae.report.curves import plot_loss_curves, read_metrics

METHOD_NAMES = {"gmae": "GMAE", "mae": "MAE", "latent_mim": "Latent MIM"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", type=Path, default=Path("checkpoints"))
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
    args = ap.parse_args()
    name = args.name or args.run.name
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    rows = read_metrics(args.run / "metrics.jsonl")
    last = args.run / "last.pt"
    clock = args.weights if args.weights else last
    seconds = clock.stat().st_mtime - (args.run / "config.yaml").stat().st_mtime
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
        ("wall time", f"{seconds / 3600:.2f} h {args.where}"),
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
    gio.write_text(args.out / f"{name}.md", card)
    mb = info["bytes"] / 1e6
    print(f"published {name}: {info['out']} ({mb:.1f} MB), final loss {final_loss:.4f}")


if __name__ == "__main__":
    main()
