"""The "Gaussians that live" sweep: short GMAE runs scored by Gaussian health and masked PSNR.

Each variant is the CPU preset ``gmae_tiny_imagenette64`` (or an MAE preset) plus ``--set``
overrides. Runs go side by side (``--parallel``), each ``gmae pretrain`` in its own process; a
run still going at ``--time-limit`` seconds gets SIGTERM, saves ``last.pt`` and is scored where
it stopped (the table says so). Then, per run: a compact checkpoint, ``gmae inspect`` on the
validation split (health) and ``gmae eval recon`` (masked PSNR at the training mask ratio).

    python scripts/health_sweep.py --out runs/sweep --epochs 10 --variants all
    python scripts/health_sweep.py --out runs/flagship --epochs 40 --pick runs/sweep/sweep.json \\
        --variants mae mae_pix

``--pick SWEEP_JSON`` adds the winner of an earlier sweep (healthy first, then most checks
passed, then masked PSNR). Writes OUT/sweep.json and OUT/sweep.md. docs/results.md has the
table and the exact commands that produced it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GMAE = "gmae_tiny_imagenette64"
MAE = "mae_tiny_imagenette64"
# The sweep started from the preset as it was before it (k = 96, c = 1, white, xavier head, no
# guard; the committed gmae_tiny_imagenette64{,_e20} checkpoints). Today's preset is the winner,
# k256_c2_grey_guard, so every variant spells out what it changes from that old base.
OLD = [
    "model.num_gaussians=96", "model.scale_cap=1.0", "model.background=1.0",
    "model.head_init=xavier", "model.raw_penalty=0.0",
]  # fmt: skip
GUARD = ["model.head_init=torch", "model.raw_penalty=1.0", "model.raw_bound=4.0"]
GREY_C2 = ["model.scale_cap=2.0", "model.background=0.45"]
K256 = ["model.num_gaussians=256"]
# The second and third probes ran on the preset before it took patch-anchored queries (the
# fourth probe's winner): they spell that out, so that they rerun as they ran.
UNANCHORED = ["model.query_anchor=none", "model.query_init=uniform"]
ATTEND = ["model.query_anchor=attend", "model.query_init=uniform"]  # the seventeenth probe's
ATTEND_LOCAL = ["model.query_anchor=attend_local", "model.query_init=normal"]
DEC256X8 = ["model.decoder_dim=256", "model.decoder_depth=8", "model.decoder_num_heads=8"]

# name -> (preset, overrides). "preset" (the old base) is the control: it collapses.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "preset": (GMAE, OLD),
    "c2_grey": (GMAE, [*OLD, *GREY_C2]),
    "c2_grey_torchinit": (GMAE, [*OLD, *GREY_C2, "model.head_init=torch"]),
    "c2_grey_guard": (GMAE, [*OLD, *GREY_C2, *GUARD]),
    "c2_grey_guard_lr5e-4": (GMAE, [*OLD, *GREY_C2, *GUARD, "optim.base_lr=5.0e-4"]),
    "k256_c2_grey_guard": (GMAE, [*OLD, *GREY_C2, *GUARD, *K256]),
    "k256_c1_white_guard": (GMAE, [*OLD, *GUARD, *K256]),
    "k256_c2_white_guard": (GMAE, [*OLD, *GUARD, *K256, "model.scale_cap=2.0"]),
    # Second sweep: today's preset (the winner above) against ideas for a layout that follows
    # the image (the centre-ratio criterion): weaker query identity, a wider and deeper decoder,
    # a lower peak lr, smaller Gaussians, the loss on every patch, a lower mask ratio.
    "centre_control": (GMAE, UNANCHORED),
    "centre_query_normal": (GMAE, [*UNANCHORED, "model.query_init=normal"]),
    "centre_dec256x8": (GMAE, [*UNANCHORED, *DEC256X8]),
    "centre_lr5e-4": (GMAE, [*UNANCHORED, "optim.base_lr=5.0e-4"]),
    "centre_c1": (GMAE, [*UNANCHORED, "model.scale_cap=1.0"]),
    "centre_loss_all": (GMAE, [*UNANCHORED, "model.loss_on=all"]),
    "centre_mask50": (GMAE, [*UNANCHORED, "model.mask_ratio=0.5"]),
    "centre_combo": (
        GMAE,
        [*UNANCHORED, "model.query_init=normal", *DEC256X8, "optim.base_lr=5.0e-4"],
    ),
    # Third (CPU): less slack. k = 256 at c = 2 covers ~5.7 image areas, so a fixed tiling
    # reconstructs well; with fewer Gaussians, moving them to where the image needs them pays.
    "slack_k32": (GMAE, [*UNANCHORED, "model.num_gaussians=32"]),
    "slack_k64": (GMAE, [*UNANCHORED, "model.num_gaussians=64"]),
    # Fourth (CPU): patch-anchored queries (model.query_anchor=grid, a departure). Each query
    # carries the sin-cos embedding of a fixed grid point and predicts an offset from it, so it
    # can attend to the patches it sits on; the layout would then follow local image content.
    "anchor_grid": (GMAE, ["model.query_anchor=grid"]),
    "anchor_grid_normal": (GMAE, ["model.query_anchor=grid", "model.query_init=normal"]),
    "anchor_grid_normal_r05": (
        GMAE,
        ["model.query_anchor=grid", "model.query_init=normal", "model.anchor_range=0.5"],
    ),
    # Fifth (CPU): the anchored preset with the paper's white background, to see whether the
    # grey background (a departure) drives the brightness code (docs/results.md).
    "white_anchor": (
        GMAE,
        ["model.query_anchor=grid", "model.query_init=normal", "model.background=1.0"],
    ),
    # Sixth (CPU): refinement (model.refine_steps, a departure) on the unanchored preset: one
    # more decoder pass that sees the render's error on the visible patches. Per-image fitting
    # moves the centres with the image (scripts/centre_oracle.py); can a second pass?
    "refine1": (GMAE, [*UNANCHORED, "model.refine_steps=1"]),
    # Its control: the same second pass and correction head, never shown the render's error.
    "refine1_blind": (GMAE, [*UNANCHORED, "model.refine_steps=1", "model.refine_feedback=none"]),
    # Thirteenth (CPU): the blind pass moved the centres more than any other change, through
    # training (its first pass alone moves them as much); do two blind passes move them more?
    "refine2_blind": (GMAE, [*UNANCHORED, "model.refine_steps=2", "model.refine_feedback=none"]),
    # Seventh (CPU): no mask at all (a plain autoencoder, the loss on every patch), a control:
    # is it the masking that keeps the layout in place? With every patch visible the decoder
    # sees the whole photo, and per-image fitting moves the centres (scripts/centre_oracle.py).
    "autoenc_mask0": (GMAE, [*UNANCHORED, "model.mask_ratio=0.0", "model.loss_on=all"]),
    # How far does the same recipe move between seeds? (every probe above is one seed)
    "seed1_control": (GMAE, [*UNANCHORED, "run.seed=1"]),
    # Eighth (CPU): decoder capacity at the full ten-epoch schedule. centre_dec256x8 was a
    # 300-step probe; here the decoder is twice as deep (8 unshared blocks, width kept), so
    # the queries have more layers in which to read the visible patches.
    "capacity_dec8": (GMAE, [*UNANCHORED, "model.decoder_depth=8"]),
    # Eleventh (CPU): the same question for width. The paper's decoder is 512 wide; here it
    # is made twice as wide (256, 8 heads of 32 as in the paper; depth 4 kept).
    "capacity_w256": (
        GMAE,
        [*UNANCHORED, "model.decoder_dim=256", "model.decoder_num_heads=8"],
    ),
    # Ninth (CPU), a control: every Gaussian at z = 0 (model.flat_depth). Over training the
    # centre ratio falls as the depth spread forms; does depth take over what the centres did?
    "depth_flat": (GMAE, [*UNANCHORED, "model.flat_depth=true"]),
    # Fourteenth and fifteenth (CPU): the ratio falls once the warm-up ends, while the
    # learning rate is highest, and half the peak rate only delays that. A warm-up three times
    # as long at the preset's peak; half the rate for everything outside the encoder alone.
    "lr_warmup3": (GMAE, [*UNANCHORED, "optim.warmup_epochs=3.0"]),
    "lr_dec0.5": (GMAE, [*UNANCHORED, "optim.decoder_lr_scale=0.5"]),
    # Sixteenth (CPU): the decoder's rate is what half the peak changed; so twice it.
    "lr_dec2": (GMAE, [*UNANCHORED, "optim.decoder_lr_scale=2.0"]),
    # Seventeenth (CPU): a centre read from the image (model.query_anchor=attend, a
    # departure): each query's centre is where it attends among the visible patches, so a
    # query that seeks one kind of content lands on it in every photo.
    "attend_centres": (GMAE, ATTEND),
    "attend_centres_seed1": (GMAE, [*ATTEND, "run.seed=1"]),
    # Its seventeenth probe's PSNR fell short of the plain-pixel MAE; twice the decoder's rate
    # gave the unanchored recipe +0.21 dB (sixteenth): both together.
    "attend_lr_dec2": (GMAE, [*ATTEND, "optim.decoder_lr_scale=2.0"]),
    # Eighteenth (CPU): its queries put only 0.54 of their centres in the masked patches, the
    # only ones the loss scores; let them point at the masked patches too, by place.
    "attend_all": (GMAE, ["model.query_anchor=attend_all", "model.query_init=uniform"]),
    # Nineteenth (CPU): the anchored preset's queries (each carries its grid point's embedding,
    # small random tokens), which reconstruct best, with attend's centres read from the image.
    "attend_grid": (GMAE, ["model.query_anchor=attend_grid", "model.query_init=normal"]),
    # Twentieth (CPU): the attending encoders are 2.5-3.5 kNN points under the control; does the
    # pointer's gradient into the decoder's features cost that (and the PSNR)? Stop it there.
    "attend_detach": (GMAE, [*ATTEND, "model.pointer_detach=true"]),
    # Twenty-first (CPU): the anchored preset reconstructs best, the attending recipe follows the
    # photo; both in one layout: 64 queries bound to an 8 x 8 grid (one per patch at 64 px),
    # 192 attending.
    "mixed64": (
        GMAE,
        ["model.query_anchor=mixed", "model.grid_queries=64", "model.query_init=uniform"],
    ),
    # Twenty-second (CPU): each query has a home (the anchored preset's grid point and token)
    # and points among its neighbours, masked ones included, by what it sees there: a soft
    # locality prior on the pointer (deformable attention's reference point).
    "attend_local": (GMAE, ATTEND_LOCAL),
    "attend_local_seed1": (GMAE, [*ATTEND_LOCAL, "run.seed=1"]),
    "attend_local_seed2": (GMAE, [*ATTEND_LOCAL, "run.seed=2"]),
    # Twenty-third (CPU): the attending models leave a fifth of the masked pixels mostly
    # uncovered (alpha < 0.5), showing the fixed grey there, and lose most on the smoothest
    # images: composite over each image's visible mean colour instead.
    "attend_local_fill": (GMAE, [*ATTEND_LOCAL, "model.background_fill=visible_mean"]),
    # Twenty-fourth (CPU): under the masked-only loss the 43 % of attending centres that sit on
    # visible patches are never scored where they sit: the loss on every patch.
    "attend_local_all": (GMAE, [*ATTEND_LOCAL, "model.loss_on=all"]),
    "attend_local_all_seed1": (GMAE, [*ATTEND_LOCAL, "model.loss_on=all", "run.seed=1"]),
    "mae": (MAE, []),  # norm-pix target (MAE's default): the representation baseline
    "mae_pix": (MAE, ["model.norm_pix_loss=false"]),  # GMAE's target: the PSNR baseline
    # The PSNR baseline's own seed-to-seed spread: a recipe is compared over seeds, not one run.
    "mae_pix_seed1": (MAE, ["model.norm_pix_loss=false", "run.seed=1"]),
    "mae_pix_seed2": (MAE, ["model.norm_pix_loss=false", "run.seed=2"]),
    # The PSNR baseline for capacity_w256: the same plain-pixel MAE with its decoder as wide.
    "mae_pix_w256": (
        MAE,
        ["model.norm_pix_loss=false", "model.decoder_dim=256", "model.decoder_num_heads=8"],
    ),
}
# not in the first sweep
FIRST_PROBES = (
    "mae",
    "centre_",
    "slack_",
    "anchor_",
    "white_",
    "refine",
    "autoenc",
    "seed",
    "capacity",
    "depth_",
    "lr_",
    "attend_",
    "mixed",
)
SWEEP = [v for v in VARIANTS if not v.startswith(FIRST_PROBES)] + ["mae_pix"]
CENTRE_SWEEP = [v for v in VARIANTS if v.startswith("centre_")]
SLACK_SWEEP = [v for v in VARIANTS if v.startswith("slack_")]
ANCHOR_SWEEP = [v for v in VARIANTS if v.startswith("anchor_")]


def gmae_cmd() -> list[str]:
    return [sys.executable, "-m", "gmae"]


def launch(
    name: str,
    out: Path,
    epochs: int,
    extra: list[str],
    gmae_extra: list[str],
    max_steps: int | None = None,
) -> subprocess.Popen:
    preset, sets = VARIANTS[name]
    if preset == GMAE:
        extra = [*extra, *gmae_extra]
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    cmd = [*gmae_cmd(), "pretrain", "--config", preset, "--out", str(run)]
    for s in [*sets, f"optim.epochs={epochs}", *extra]:
        cmd += ["--set", s]
    if max_steps:  # stop there; the schedule stays the one of ``epochs``
        cmd += ["--max-steps", str(max_steps)]
    log = open(run / "train.log", "w")  # noqa: SIM115 (closed by the child's exit)
    print("+", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def score(name: str, out: Path, data: str, device: str, images: int) -> dict:
    """Compact checkpoint, health (inspect) and masked PSNR (eval recon) of one finished run."""
    run = out / name
    ckpt = run / f"{name}.safetensors"
    row: dict = {"name": name, "preset": VARIANTS[name][0], "overrides": VARIANTS[name][1]}
    last = run / "last.pt"
    if not last.exists():
        return {**row, "error": "no checkpoint (see train.log)"}
    subprocess.run([*gmae_cmd(), "export", "checkpoint", "--ckpt", str(last), "--out", str(ckpt),
                    "--fp16"], check=True)  # fmt: skip
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    row["steps"] = metrics[-1]["step"] if metrics else 0
    row["trend"] = [
        {k: m.get(k) for k in ("step", "loss", "val_loss", "health/pinned_size",
                               "health/pinned_z", "health/z_std_within", "health/centre_ratio",
                               "health/depth_order_agreement", "health/masked_fraction",
                               "health/screen_p90_p10")}
        for m in metrics if "val_loss" in m
    ]  # fmt: skip
    common = ["--device", device]
    recon = run / "recon.json"
    subprocess.run([*gmae_cmd(), "eval", "recon", "--ckpt", str(ckpt), "--data", data,
                    "--val-split", "val", "--num-images", str(images), "--json", str(recon),
                    "--mask-ratios", "0.75", *common], check=True)  # fmt: skip
    rec = json.loads(recon.read_text())
    row["masked_psnr"] = _find_masked_psnr(rec)
    if VARIANTS[name][0] == GMAE:
        health = run / "health.json"
        subprocess.run([*gmae_cmd(), "inspect", "--ckpt", str(ckpt), "--data", data,
                        "--num-images", str(images), "--json", str(health), *common],
                       check=True)  # fmt: skip
        h = json.loads(health.read_text())["masked"]
        row["health"] = h
    return row


def _find_masked_psnr(rec: dict) -> float | None:
    rows = rec.get("results", rec if isinstance(rec, list) else [])
    for r in rows:
        if abs(r.get("mask_ratio", -1) - 0.75) < 1e-9:
            return r.get("masked_psnr")
    return None


def rank_key(row: dict) -> tuple:
    h = row.get("health")
    if not h:
        return (3, 0, 0.0)
    order = {"healthy": 0, "degraded": 1, "degenerate": 2}[h["verdict"]]
    return (order, len(h["failed"]), -(row.get("masked_psnr") or 0.0))


def pick(sweep_json: Path) -> str:
    rows = [r for r in json.loads(sweep_json.read_text())["runs"] if r.get("health")]
    if not rows:
        raise SystemExit(f"{sweep_json}: no scored GMAE run to pick from")
    return min(rows, key=rank_key)["name"]


def table(rows: list[dict]) -> str:
    head = (
        "| run | steps | verdict | size pinned | z pinned | size p90/p10 | z std | centre ratio "
        "| in masked (z) | order agreement | coverage | masked PSNR |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        h = r.get("health")
        psnr = f"{r['masked_psnr']:.2f}" if r.get("masked_psnr") is not None else "-"
        if not h:
            lines.append(f"| {r['name']} | {r.get('steps', '-')} | - |" + " - |" * 8 + f" {psnr} |")
            continue
        m = h["masked_centres"]
        # mask ratio 0 (an autoencoder): no masked patches, no z-score
        z = f"{m['z']:+.1f}" if m.get("z") is not None else "-"
        # flat depth (model.flat_depth): no depth order to agree on
        order = h["layout"]["depth_order_agreement"]
        order = f"{order:.2f}" if order is not None and not math.isnan(order) else "-"
        lines.append(
            f"| {r['name']} | {r['steps']} | {h['verdict']} | {h['pinned_size']:.1%} | "
            f"{h['pinned_z']:.1%} | {h['screen_p90_p10']:.2f} | {h['z_std_within']:.3f} | "
            f"{h['layout']['centre_ratio']:.2f} | {m['fraction']:.3f} ({z}) | "
            f"{order} | {h['alpha_coverage']['mean']:.2f} | "
            f"{psnr} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help=f"'all' (first sweep), 'centre' (second), 'slack' (third), 'anchor' (fourth) "
        f"or of: "
        f"{', '.join(VARIANTS)}",
    )
    ap.add_argument("--pick", type=Path, help="also run the winner of this earlier sweep.json")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-steps", type=int, help="stop each run after this many steps")
    ap.add_argument(
        "--score-only",
        action="store_true",
        help="train nothing: score the runs already in OUT (e.g. after --resume by hand)",
    )
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time")
    ap.add_argument("--time-limit", type=float, default=0, help="seconds, then SIGTERM (0: none)")
    ap.add_argument("--data", default="imagenette-128", help="data spec for training and scoring")
    ap.add_argument("--score-data", help="data spec for scoring (default: --data)")
    ap.add_argument("--score-images", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra override for every run (e.g. data.num_workers=2)")  # fmt: skip
    ap.add_argument(
        "--gmae-set",
        dest="gmae_sets",
        action="append",
        default=[],
        help="extra override for GMAE runs (e.g. model.render_backend=reference)",
    )
    args = ap.parse_args()
    groups = {"all": SWEEP, "centre": CENTRE_SWEEP, "slack": SLACK_SWEEP, "anchor": ANCHOR_SWEEP}
    names = [n for v in args.variants for n in groups.get(v, [v])]
    if args.pick:
        names.insert(0, pick(args.pick))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"unknown or no variants: {unknown}; choose from {', '.join(VARIANTS)}")
    extra = [f"data.spec={args.data}", *args.sets]
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    pending, running, stopped = ([] if args.score_only else list(names)), {}, set()
    while pending or running:
        while pending and len(running) < args.parallel:
            n = pending.pop(0)
            running[n] = launch(n, args.out, args.epochs, extra, args.gmae_sets, args.max_steps)
        time.sleep(2)
        for n, p in list(running.items()):
            if p.poll() is not None:
                print(
                    f"{n}: exit {p.returncode} after {time.monotonic() - start:.0f} s", flush=True
                )
                del running[n]
            elif (
                args.time_limit and time.monotonic() - start > args.time_limit and n not in stopped
            ):
                os.killpg(p.pid, signal.SIGTERM)  # the engine saves last.pt and exits
                stopped.add(n)

    def scored(n: str) -> dict:
        try:
            row = score(n, args.out, args.score_data or args.data, args.device, args.score_images)
        except subprocess.CalledProcessError as exc:
            row = {"name": n, "error": str(exc)}
        return {**row, "stopped_early": n in stopped}

    with ThreadPoolExecutor(max(args.parallel, 1)) as pool:  # each score runs subprocesses
        rows = list(pool.map(scored, names))
    result = {"epochs": args.epochs, "data": args.data, "runs": rows,
              "wall_s": time.monotonic() - start}  # fmt: skip
    from gmae import io as gio  # atomic writes: an interrupted sweep leaves no half file

    gio.write_text(args.out / "sweep.json", json.dumps(result, indent=1))
    gio.write_text(args.out / "sweep.md", table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
