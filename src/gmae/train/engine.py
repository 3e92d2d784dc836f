"""The pretraining loop: ``pretrain(cfg, out_dir)`` trains MAE or GMAE from a ``Config``.

Read top to bottom: processes and device; batch size and learning rate; model, probe and
optimizer; data; resume; then the loop over optimizer steps (micro-batches with gradient
accumulation, AMP, clipping, skipping non-finite losses), with pictures and checkpoints after
each epoch. Run it with ``gmae pretrain`` (one process) or under ``torchrun`` (DDP).

Exactness: everything random is seeded from ``run.seed`` (see ``sampling``), the schedule is a
function of the step, and checkpoints hold optimizer, scaler and RNG states, so a resumed run
repeats an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.utils import random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from gmae import __version__
from gmae.data.transforms import to_unit_float
from gmae.errors import GmaeError
from gmae.precision import tf32_matmuls
from gmae.train import checkpoint as ckpt_io
from gmae.train import distributed
from gmae.train.config import Config, config_to_dict, save_config
from gmae.train.monitor import ValidationMonitor, layer_grid
from gmae.train.optim import build_optimizer, lr_at, set_lr
from gmae.train.outputs import (
    LAST,
    RunLog,
    claim_run_dir,
    decide_resume,
    recon_grid,
    save_png,
)
from gmae.train.sampling import ResumableSampler, SeededSamples, seed_worker

# --- what gets trained ------------------------------------------------------------------------


class OnlineProbe(nn.Module):
    """BatchNorm1d(affine=False) + Linear on detached mean-pooled patch tokens (monitoring only:
    its gradient never reaches the encoder)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(latent[:, 1:].mean(dim=1).detach().float()))


class Pretrainer(nn.Module):
    """The model and the optional probe as one module, so that one DDP wrapper syncs both.

    Returns (pretraining loss, probe loss, probe accuracy); the probe terms are 0 without it.
    """

    def __init__(self, model: nn.Module, probe: OnlineProbe | None = None) -> None:
        super().__init__()
        self.model, self.probe = model, probe

    def forward(self, imgs: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor):
        out = self.model(imgs, noise=noise)
        if self.probe is None:
            zero = out.loss.new_zeros(())
            return out.loss, zero, zero
        logits = self.probe(out.latent)
        acc = (logits.argmax(-1) == labels).float().mean()
        return out.loss, F.cross_entropy(logits.float(), labels), acc


class StopSignals:
    """SIGTERM / SIGUSR1 (a scheduler's pre-emption or time limit) and a first Ctrl-C ask the run
    to stop after the current step, with last.pt saved, instead of dying mid-step. A second
    Ctrl-C aborts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.received is not None:
                raise KeyboardInterrupt
            print("gmae: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def build_model(cfg: Config) -> nn.Module:
    from gmae.models import create_model

    return create_model(**ckpt_io.model_kwargs(cfg))


def build_data(cfg: Config) -> tuple[Dataset, Any, Dataset | None]:
    """(training images as PIL, their augmentation to uint8 tensors, validation set for the
    pictures or None). Batches become [0, 1] floats on the device (``to_unit_float``)."""
    from gmae.data import build_dataset, eval_transform, pretrain_transform

    d = cfg.data
    train = build_dataset(d.spec, d.split, transform=None, data_root=d.root)
    val = None
    if cfg.run.vis_images:
        val = build_dataset(d.spec, d.val_split, eval_transform(d.img_size), data_root=d.root)
    return train, pretrain_transform(d.img_size, d.scale, uint8=True), val


# --- the run --------------------------------------------------------------------------------


def pretrain(
    cfg: Config,
    out_dir: str | Path,
    resume: bool | str | Path | None = None,
    max_steps: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train; write config, metrics, TensorBoard, pictures and checkpoints under ``out_dir``.

    ``resume``: None/False starts fresh (an existing ``last.pt`` is an error), True continues
    from ``out_dir/last.pt`` if there is one, a path continues from that checkpoint.
    ``max_steps`` stops (with ``last.pt`` saved) once that many optimizer steps are done.
    ``force``: also write into a directory gmae did not create that holds files the run would
    replace (config.yaml, metrics.jsonl, ...); without it that is an error.
    Returns a summary dict.
    """
    dist = distributed.init(cfg.run.device)
    try:
        with ExitStack() as cleanup:
            return _pretrain(cfg, Path(out_dir), resume, max_steps, dist, cleanup, force)
    finally:
        distributed.cleanup()


def _pretrain(cfg, out: Path, resume, max_steps, dist, cleanup: ExitStack, force=False) -> dict:
    o, r = cfg.optim, cfg.run
    device = dist.device
    ckpt_path = decide_resume(out, resume, force, dist)
    ckpt = ckpt_io.load_checkpoint(ckpt_path) if ckpt_path else None
    if ckpt is not None:
        ckpt_io.check_compatible(ckpt["config"], config_to_dict(cfg), ckpt_path)

    # AMP only on CUDA: bf16 needs no loss scaling, fp16 does (GradScaler). The renderer runs
    # in fp32 under autocast by itself.
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(r.amp)
    if device.type != "cuda":
        amp = None
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    if device.type == "cuda":
        # TF32 only without autocast: the islands' backward runs under the global flag (see
        # gmae.precision); under autocast the blocks' matmuls are half precision anyway.
        cleanup.enter_context(tf32_matmuls(r.tf32 and amp is None))

    # Batch and learning rate: MAE's linear scaling rule on the effective batch.
    accum = o.accum_iter
    if o.effective_batch is not None:
        per_step = o.batch_size * dist.world_size
        if o.effective_batch % per_step:
            raise GmaeError(
                f"optim.effective_batch {o.effective_batch} is not a multiple of batch_size x "
                f"processes = {per_step}"
            )
        accum = o.effective_batch // per_step
    batch = o.batch_size * accum * dist.world_size
    lr = o.base_lr * batch / 256

    # Model (the same initialisation on every rank), online probe, optimizer.
    random_seed(r.seed, 0)
    model = build_model(cfg).to(device)
    render_backend = prepare_renderer(model, device, dist, o.batch_size)
    train_images, augment, val_set = build_data(cfg)
    probe = None
    if r.online_probe:
        classes = r.probe_classes or len(getattr(train_images, "classes", []))
        if not classes:
            raise GmaeError("run.online_probe needs run.probe_classes (data set has no classes)")
        probe = OnlineProbe(model.encoder.embed_dim, classes).to(device)
        if dist.enabled and device.type == "cuda":  # batch statistics over all GPUs
            probe = nn.SyncBatchNorm.convert_sync_batchnorm(probe)
    net = Pretrainer(model, probe)
    no_decay = {f"model.{n}" for n in model.no_weight_decay()} | {"probe.*"}
    optimizer = build_optimizer(
        net, lr, o.weight_decay, o.betas, no_decay, fused=device.type == "cuda"
    )
    random_seed(r.seed, dist.rank)

    # Data: order, augmentation and mask noise are functions of (seed, epoch, index).
    train_set = SeededSamples(train_images, augment, model.encoder.num_patches, r.seed)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, r.seed)
    loader_rng = torch.Generator()  # reseeded per epoch: worker seeds
    loader = DataLoader(
        train_set,
        batch_size=o.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.persistent_workers and cfg.data.num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=loader_rng,
    )
    steps_per_epoch = sampler.num_samples // o.batch_size // accum
    if steps_per_epoch == 0:
        raise GmaeError(
            f"data set {cfg.data.spec} ({len(train_set)} images) is smaller than one step's "
            f"batch of {batch}"
        )
    epochs, total_steps = o.epochs, o.epochs * steps_per_epoch
    if o.total_steps is not None:  # exactly that many steps; the last epoch may be partial
        epochs, total_steps = -(-o.total_steps // steps_per_epoch), o.total_steps
    warmup_steps = round(o.warmup_epochs * steps_per_epoch)

    epoch, step_in_epoch, step, skipped = 0, 0, 0, 0
    if ckpt is not None:
        # Steps and epochs only line up with the same effective batch (any split of it over
        # processes and accumulation is fine).
        if ckpt["schedule"]["effective_batch"] != batch:
            raise GmaeError(
                f"checkpoint {ckpt_path} was trained with an effective batch of "
                f"{ckpt['schedule']['effective_batch']}, this run has {batch}: set "
                "optim.batch_size / accum_iter / effective_batch to match"
            )
        ckpt_io.load_state(model, ckpt["model"], ckpt_path)
        if probe is not None and ckpt.get("probe") is not None:
            ckpt_io.load_state(probe, ckpt["probe"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        epoch, step_in_epoch, step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]
        skipped = ckpt["skipped"]
        rngs = ckpt["rng"]
        rng = rngs[dist.rank] if len(rngs) == dist.world_size else rngs[0]
        ckpt_io.set_rng_state(rng, device)
    ddp = None
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        # No buffer broadcast: the fixed pos-embeds are equal everywhere and the probe's
        # BatchNorm statistics are only saved from rank 0. Gradients alias DDP's buckets.
        ddp = DistributedDataParallel(
            net, device_ids=ids, broadcast_buffers=False, gradient_as_bucket_view=True
        )
    forward = ddp or net

    def save(*names: str) -> None:
        rngs = distributed.all_gather_object(ckpt_io.rng_state(device))  # every rank's RNG
        if dist.is_main:
            state = {
                "format": ckpt_io.FORMAT,
                "gmae_version": __version__,
                "config": config_to_dict(cfg),
                "model": model.state_dict(),
                "probe": probe.state_dict() if probe is not None else None,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "schedule": {
                    "step": step,
                    "total_steps": total_steps,
                    "effective_batch": batch,
                    "lr": lr,
                },
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "step": step,
                "skipped": skipped,
                "rng": rngs,
            }
            for name in names:
                ckpt_io.save_checkpoint(out / name, state)
        distributed.barrier()  # nobody runs ahead (or exits) before the files exist

    # Outputs (rank 0): resolved config, metrics, TensorBoard, progress bar, picture batch.
    if dist.is_main:
        claim_run_dir(out, force)  # create, mark as a run, delete stale temp files of ours
        save_config(cfg, out / "config.yaml")
    log = cleanup.enter_context(RunLog(out, step, total_steps, dist.is_main))
    signals = cleanup.enter_context(StopSignals())
    vis_images = None
    if (
        dist.is_main
        and val_set is not None
        and r.vis_images
        and getattr(model, "pixel_output", True)
    ):
        n = min(r.vis_images, len(val_set))
        # Evenly spaced over the (class-sorted) validation set: one picture per class or so.
        picks = torch.linspace(0, len(val_set) - 1, n).round().long().tolist()
        vis_images = torch.stack([val_set[i][0] for i in picks]).to(device)
    monitor = None
    if dist.is_main and val_set is not None and r.health_every >= 0 and r.health_images > 0:
        monitor = ValidationMonitor(
            val_set, r.health_images, model.encoder.num_patches, r.seed, device
        )
    health_every = r.health_every or r.log_every
    # Config in TensorBoard's hparams view, beside the losses and the health verdict.
    log.hparams(config_to_dict(cfg), ("train/loss", "train/val_loss", "train/health/healthy"))
    pictures_at: dict[str, Any] = {"step": -1, "grids": {}}

    def pictures(name: str) -> None:
        """Reconstruction and (GMAE) depth-layer pictures of the picture batch: TensorBoard
        (once per step) and vis/{recon,layers}-NAME.png."""
        if vis_images is None:
            return
        if pictures_at["step"] != step:
            grids = {"recon": recon_grid(model, vis_images, r.seed)}
            if hasattr(model, "num_gaussians"):
                grids["layers"] = layer_grid(model, vis_images)
            for key, grid in grids.items():
                log.image({"recon": "reconstruction", "layers": "depth_layers"}[key], grid, step)
            pictures_at.update(step=step, grids=grids)
        for key, grid in pictures_at["grids"].items():
            save_png(grid, out / "vis" / f"{key}-{name}.png")

    log.note(
        f"{cfg.model['name']}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"{dist.world_size} process(es) on {device}, batch {batch} "
        f"({o.batch_size} x {accum} accum x {dist.world_size}), lr {lr:.3g}, "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps ({total_steps / steps_per_epoch:.3g} "
        "epochs)" + (f", resumed at step {step} from {ckpt_path}" if ckpt is not None else "")
    )
    if render_backend:
        log.note(f"renderer: {render_backend}")

    # The loop. One iteration = one optimizer step = `accum` micro-batches per process.
    net.train()
    consecutive_bad = 0
    stop = step >= total_steps or (max_steps is not None and step >= max_steps)
    start_step, interrupted = step, False
    window_start, window_steps = time.perf_counter(), 0
    while epoch < epochs and not stop:
        sampler.set_epoch(epoch, start=step_in_epoch * accum * o.batch_size)
        train_set.set_epoch(epoch)
        loader_rng.manual_seed(r.seed + epoch)
        batches = iter(loader)
        while step_in_epoch < steps_per_epoch and not stop:
            step_lr = lr_at(step, total_steps, warmup_steps, lr, o.min_lr)
            set_lr(optimizer, step_lr)
            # loss, non-finite count, probe loss, probe accuracy, stop signal (summed over ranks)
            stats = torch.zeros(5, device=device)
            for micro in range(accum):
                imgs, labels, noise = (t.to(device, non_blocking=True) for t in next(batches))
                imgs = to_unit_float(imgs)  # uint8 from the workers: 4x fewer bytes to copy
                # DDP all-reduces gradients on the last micro-batch only.
                sync = ddp is None or micro == accum - 1
                with nullcontext() if sync else ddp.no_sync():
                    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                        loss, probe_loss, probe_acc = forward(imgs, labels, noise)
                    total = (loss + probe_loss) / accum
                    (scaler.scale(total) if scaler else total).backward()
                micro_stats = [loss, ~(loss + probe_loss).isfinite(), probe_loss, probe_acc]
                stats[:4] += torch.stack([s.detach().float() for s in micro_stats])
            stats[4] = signals.received is not None  # every rank stops at the same step
            stats = distributed.all_reduce_sum(stats)
            if scaler is not None:
                scaler.unscale_(optimizer)
            # Clip (and log) the model's gradients only: the probe must not change pretraining.
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad or math.inf)
            # One host sync per step: the stats and the gradient norm in one copy.
            *stats, grad_norm = torch.cat([stats, grad_norm.detach().float().view(1)]).tolist()
            # A non-finite loss (or, without a GradScaler, gradient) skips the update.
            bad = stats[1] > 0 or (scaler is None and not math.isfinite(grad_norm))
            if bad:
                skipped += 1
                consecutive_bad += 1
            else:
                consecutive_bad = 0
                if scaler is not None:
                    scaler.step(optimizer)  # skips by itself on inf/nan gradients
                else:
                    optimizer.step()
            if scaler is not None:
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # Models with a momentum target (Latent MIM's EMA encoder) update it once per
            # optimizer step; its momentum is a function of (step, total_steps) and the target
            # lives in the state dict, so a resumed run repeats this exactly.
            if hasattr(model, "after_step"):
                model.after_step(step, total_steps)
            step_in_epoch += 1
            window_steps += 1
            log.advance()

            if step % r.log_every == 0 or step == total_steps:
                n = accum * dist.world_size
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": step,
                    "epoch": epoch,
                    "loss": stats[0] / n,
                    "lr": step_lr,
                    "grad_norm": grad_norm,
                    "images_per_s": batch * window_steps / max(elapsed, 1e-9),
                    "skipped": skipped,
                }
                if render_backend:
                    row["render_backend"] = getattr(model, "last_render_backend", render_backend)
                if probe is not None:
                    row.update(probe_loss=stats[2] / n, probe_acc=stats[3] / n)
                if monitor is not None and (step % health_every == 0 or step == total_steps):
                    row.update(monitor(model))
                    log.histograms(monitor.arrays, step)
                log.metrics(row)
                window_start, window_steps = time.perf_counter(), 0
            if bad:
                log.note(f"step {step}: non-finite loss or gradient, update skipped")
            if consecutive_bad >= r.max_nonfinite:
                raise GmaeError(
                    f"loss or gradients non-finite for {consecutive_bad} steps in a row (up to "
                    f"step {step}): lower optim.base_lr, set optim.clip_grad, try run.amp=bf16 "
                    "or none, or check the data"
                )

            if r.vis_every_steps and step % r.vis_every_steps == 0:
                pictures(f"step{step:07d}")
            interrupted = stats[4] > 0
            stop = interrupted or step >= total_steps
            stop = stop or (max_steps is not None and step >= max_steps)
            mid_epoch = step_in_epoch < steps_per_epoch
            if mid_epoch and (stop or (r.ckpt_every_steps and step % r.ckpt_every_steps == 0)):
                save(LAST)

        if step_in_epoch >= steps_per_epoch:  # the epoch is complete
            epoch, step_in_epoch = epoch + 1, 0
            last_epoch = epoch == epochs
            if epoch % r.vis_every == 0 or last_epoch:
                pictures(f"{epoch:04d}")
            names = [LAST]
            if epoch % r.ckpt_every == 0 or last_epoch:
                names.append(f"checkpoint-{epoch:04d}.pt")
            save(*names)

    if step > start_step and pictures_at["step"] != step:  # the end of any run: --max-steps too
        pictures(f"step{step:07d}")
    if interrupted:
        log.note(f"stopped by a signal at step {step}; continue with --resume")
    return {
        "step": step,
        "epoch": epoch,
        "skipped": skipped,
        "out": str(out),
        "rank": dist.rank,
        "interrupted": interrupted,
    }


def prepare_renderer(
    model: nn.Module, device: torch.device, dist, batch_size: int | None = None
) -> str:
    """The render backend a GMAE will train with ('' for models without a renderer), for
    training renders of ``batch_size`` images (the reference-or-fast choice on CUDA depends on
    the size; metrics record what each logged step actually ran).

    On CUDA, gsplat's kernels are loaded here, before the first step: local rank 0 of each node
    first (building them if needed; gsplat's loader is not safe against concurrent builds),
    then the other ranks load that build.
    """
    from gmae.render import resolve_backend

    backend = getattr(model, "render_backend", None)
    if backend is None:
        return ""
    if device.type == "cuda" and backend in ("auto", "gsplat"):
        from gmae.render.gsplat_backend import gsplat_kernel_problem

        if dist.local_rank != 0:
            distributed.barrier()
        gsplat_kernel_problem()
        if dist.local_rank == 0:
            distributed.barrier()
    pairs = None
    if batch_size and hasattr(model, "num_gaussians"):
        pairs = batch_size * model.img_size**2 * model.num_gaussians
    return resolve_backend(backend, device, pairs=pairs, settings=model.render_settings)
