"""The pretraining loop: ``pretrain(cfg, out_dir)`` trains MAE, GMAE or Latent MIM from a
``Config``.

``_pretrain`` reads top to bottom, as nanoGPT's train.py: processes and device; batch size and
learning rate; model, probe and optimizer; data and the ``Schedule``; the ``TrainState`` (fresh,
or restored from a checkpoint); outputs; then the loop: one ``train_step`` per optimizer step
(micro-batches with gradient accumulation, AMP, clipping, skipping non-finite losses), a
``log_row`` every ``run.log_every`` steps, pictures and checkpoints after each epoch. Run it
with ``gmae pretrain`` (one process) or under ``torchrun`` (DDP).

Exactness: everything random is seeded from ``run.seed`` (see ``sampling``), the schedule is a
function of the step, and checkpoints hold optimizer, scaler and RNG states
(``TrainState.checkpoint_state`` / ``restore``), so a resumed run repeats an uninterrupted one
bit for bit on CPU.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.utils import random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from gmae import __version__
from gmae.data import build_dataset, eval_transform, pretrain_transform
from gmae.data.transforms import to_unit_float
from gmae.errors import GmaeError
from gmae.models import GMAE, create_model
from gmae.precision import tf32_matmuls
from gmae.render.gsplat_backend import gsplat_kernel_problem
from gmae.train import checkpoint as ckpt_io
from gmae.train import distributed
from gmae.train.config import Config, OptimConfig, config_to_dict, save_config
from gmae.train.distributed import DistInfo
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


def decoder_lr_scale(scale: float) -> Callable[[str], float] | None:
    """``optim.decoder_lr_scale`` as a multiplier over ``Pretrainer``'s parameter names: every
    model parameter outside ``model.encoder`` gets it, the online probe keeps 1. None for 1, so
    the optimizer keeps exactly its two weight-decay groups."""
    if scale == 1.0:
        return None

    def of(name: str) -> float:
        outside_encoder = name.startswith("model.") and not name.startswith("model.encoder.")
        return scale if outside_encoder else 1.0

    return of


def build_model(cfg: Config) -> nn.Module:
    return create_model(**ckpt_io.model_kwargs(cfg))


def build_data(cfg: Config) -> tuple[Dataset, Any, Dataset | None]:
    """(training images as PIL, their augmentation to uint8 tensors, validation set for the
    pictures or None). Batches become [0, 1] floats on the device (``to_unit_float``)."""
    d = cfg.data
    train = build_dataset(d.spec, d.split, transform=None, data_root=d.root)
    val = None
    if cfg.run.vis_images:
        val = build_dataset(d.spec, d.val_split, eval_transform(d.img_size), data_root=d.root)
    return train, pretrain_transform(d.img_size, d.scale, uint8=True), val


def build_probe(
    cfg: Config, model: nn.Module, train_images: Dataset, dist: DistInfo
) -> OnlineProbe | None:
    """The online probe on the encoder's tokens (``run.online_probe``), or None."""
    if not cfg.run.online_probe:
        return None
    classes = cfg.run.probe_classes or len(getattr(train_images, "classes", []))
    if not classes:
        raise GmaeError("run.online_probe needs run.probe_classes (data set has no classes)")
    probe = OnlineProbe(model.encoder.embed_dim, classes).to(dist.device)
    if dist.enabled and dist.device.type == "cuda":  # batch statistics over all GPUs
        probe = nn.SyncBatchNorm.convert_sync_batchnorm(probe)
    return probe


def build_loader(
    cfg: Config,
    train_set: SeededSamples,
    sampler: ResumableSampler,
    loader_rng: torch.Generator,
    device: torch.device,
) -> DataLoader:
    """Batches of (uint8 images, labels, mask noise) in the sampler's order; ``loader_rng``
    (reseeded every epoch) seeds the workers."""
    return DataLoader(
        train_set,
        batch_size=cfg.optim.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.persistent_workers and cfg.data.num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=loader_rng,
    )


def wrap_ddp(net: nn.Module, dist: DistInfo) -> DistributedDataParallel:
    device = dist.device
    ids = [device.index] if device.type == "cuda" else None
    # No buffer broadcast: the fixed pos-embeds are equal everywhere and the probe's BatchNorm
    # statistics are only saved from rank 0. Gradients alias DDP's buckets.
    return DistributedDataParallel(
        net, device_ids=ids, broadcast_buffers=False, gradient_as_bucket_view=True
    )


# --- the schedule and the state a checkpoint holds ------------------------------------------


def batch_split(optim: OptimConfig, world_size: int) -> tuple[int, int]:
    """(micro-batches per optimizer step and process, effective batch of one optimizer step).

    ``optim.effective_batch`` fixes the effective batch and sets the accumulation from it, so a
    recipe keeps its batch (and learning rate) on any number of processes.
    """
    accum = optim.accum_iter
    if optim.effective_batch is not None:
        per_step = optim.batch_size * world_size
        if optim.effective_batch % per_step:
            raise GmaeError(
                f"optim.effective_batch {optim.effective_batch} is not a multiple of batch_size "
                f"x processes = {per_step}"
            )
        accum = optim.effective_batch // per_step
    return accum, optim.batch_size * accum * world_size


@dataclass(frozen=True)
class Schedule:
    """The run's length and its learning rate, both functions of the optimizer step only, so
    that a resumed run continues exactly. Weight decay is constant (``optim.weight_decay``)."""

    batch: int  # effective batch of one optimizer step (all micro-batches and processes)
    lr: float  # the peak: MAE's linear scaling rule, base_lr x batch / 256
    min_lr: float
    warmup_steps: int
    steps_per_epoch: int
    epochs: int
    total_steps: int

    @classmethod
    def plan(cls, optim: OptimConfig, batch: int, lr: float, steps_per_epoch: int) -> Schedule:
        epochs, total_steps = optim.epochs, optim.epochs * steps_per_epoch
        if optim.total_steps is not None:  # exactly that many steps; the last epoch may be partial
            epochs, total_steps = -(-optim.total_steps // steps_per_epoch), optim.total_steps
        return cls(
            batch=batch,
            lr=lr,
            min_lr=optim.min_lr,
            warmup_steps=round(optim.warmup_epochs * steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            total_steps=total_steps,
        )

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine."""
        return lr_at(step, self.total_steps, self.warmup_steps, self.lr, self.min_lr)


@dataclass(eq=False)
class TrainState:
    """Everything a checkpoint holds, and the counters of where the run is.

    ``checkpoint_state`` and ``restore`` mirror each other, key for key (the file format is
    described in ``gmae.train.checkpoint``).
    """

    config: dict[str, Any]  # config_to_dict of the run's Config
    schedule: Schedule
    model: nn.Module
    probe: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in ``epoch``
    step: int = 0  # optimizer steps done in all
    skipped: int = 0  # steps whose update was skipped (non-finite loss or gradient)

    def checkpoint_state(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint dict; ``rngs``: every rank's ``ckpt_io.rng_state``."""
        return {
            "format": ckpt_io.FORMAT,
            "gmae_version": __version__,
            "config": self.config,
            "model": self.model.state_dict(),
            "probe": self.probe.state_dict() if self.probe is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": {
                "step": self.step,
                "total_steps": self.schedule.total_steps,
                "effective_batch": self.schedule.batch,
                "lr": self.schedule.lr,
            },
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "skipped": self.skipped,
            "rng": rngs,
        }

    def restore(self, ckpt: dict[str, Any], path: Path, dist: DistInfo) -> None:
        """Continue from ``ckpt`` (read from ``path``; its config is already checked to match);
        this rank's RNG state is its own, or rank 0's when the process count changed."""
        # Steps and epochs only line up with the same effective batch (any split of it over
        # processes and accumulation is fine).
        if ckpt["schedule"]["effective_batch"] != self.schedule.batch:
            raise GmaeError(
                f"checkpoint {path} was trained with an effective batch of "
                f"{ckpt['schedule']['effective_batch']}, this run has {self.schedule.batch}: set "
                "optim.batch_size / accum_iter / effective_batch to match"
            )
        ckpt_io.load_state(self.model, ckpt["model"], path)
        if self.probe is not None and ckpt.get("probe") is not None:
            ckpt_io.load_state(self.probe, ckpt["probe"], path)
        # The run's config sets each group's lr multiplier, not the checkpoint's.
        scales = [group.get("lr_scale") for group in self.optimizer.param_groups]
        if len(ckpt["optimizer"]["param_groups"]) != len(scales):
            old = ckpt["config"].get("optim", {}).get("decoder_lr_scale", 1.0)
            new = self.config["optim"]["decoder_lr_scale"]
            raise GmaeError(
                f"checkpoint {path} has {len(ckpt['optimizer']['param_groups'])} optimizer "
                f"parameter groups, this run {len(scales)}: it was trained with "
                f"optim.decoder_lr_scale {old:g}, this run has {new:g} (a run cannot switch "
                "between 1 and another value)"
            )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group, scale in zip(self.optimizer.param_groups, scales, strict=True):
            group.pop("lr_scale", None)
            if scale is not None:
                group["lr_scale"] = scale
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        self.step, self.skipped = ckpt["step"], ckpt["skipped"]
        rngs = ckpt["rng"]
        rng = rngs[dist.rank] if len(rngs) == dist.world_size else rngs[0]
        ckpt_io.set_rng_state(rng, dist.device)


def save_checkpoints(state: TrainState, out: Path, names: list[str], dist: DistInfo) -> None:
    """Write the checkpoint as each of ``names`` under ``out`` (rank 0, with every rank's RNG
    state); every rank calls this."""
    rngs = distributed.all_gather_object(ckpt_io.rng_state(dist.device))
    if dist.is_main:
        checkpoint = state.checkpoint_state(rngs)
        for name in names:
            ckpt_io.save_checkpoint(out / name, checkpoint)
    distributed.barrier()  # nobody runs ahead (or exits) before the files exist


# --- one optimizer step and its metrics row -------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step measured, averaged over its micro-batches and all ranks."""

    loss: float
    probe_loss: float
    probe_acc: float
    grad_norm: float  # of the model's gradients, before clipping
    skipped: bool  # non-finite loss (or gradient): no update
    stop: bool  # some rank received a stop signal: every rank stops after this step


def train_step(
    net: nn.Module,
    state: TrainState,
    batches,
    *,
    accum: int,
    amp: torch.dtype | None,
    clip_grad: float | None,
    world_size: int,
    signals: StopSignals,
) -> StepResult:
    """One optimizer step: ``accum`` micro-batches of ``batches`` forward and backward through
    ``net`` (the ``Pretrainer``, DDP-wrapped or not) under autocast ``amp``, then clip and update
    (through the GradScaler when there is one). The learning rate is already set."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    ddp = net if isinstance(net, DistributedDataParallel) else None
    device = next(model.parameters()).device
    # loss, non-finite count, probe loss, probe accuracy, stop signal (summed over ranks)
    stats = torch.zeros(5, device=device)
    for micro in range(accum):
        imgs, labels, noise = (t.to(device, non_blocking=True) for t in next(batches))
        imgs = to_unit_float(imgs)  # uint8 from the workers: 4x fewer bytes to copy
        # DDP all-reduces gradients on the last micro-batch only.
        sync = ddp is None or micro == accum - 1
        with nullcontext() if sync else ddp.no_sync():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss, probe_loss, probe_acc = net(imgs, labels, noise)
            total = (loss + probe_loss) / accum
            (scaler.scale(total) if scaler else total).backward()
        micro_stats = [loss, ~(loss + probe_loss).isfinite(), probe_loss, probe_acc]
        stats[:4] += torch.stack([s.detach().float() for s in micro_stats])
    stats[4] = signals.received is not None  # every rank stops at the same step
    stats = distributed.all_reduce_sum(stats)
    if scaler is not None:
        scaler.unscale_(optimizer)
    # Clip (and log) the model's gradients only: the probe must not change pretraining.
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad or math.inf)
    # One host sync per step: the stats and the gradient norm in one copy.
    *stats, grad_norm = torch.cat([stats, grad_norm.detach().float().view(1)]).tolist()
    # A non-finite loss (or, without a GradScaler, gradient) skips the update.
    skipped = stats[1] > 0 or (scaler is None and not math.isfinite(grad_norm))
    if not skipped:
        if scaler is not None:
            scaler.step(optimizer)  # skips by itself on inf/nan gradients
        else:
            optimizer.step()
    if scaler is not None:
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    n = accum * world_size
    return StepResult(
        loss=stats[0] / n,
        probe_loss=stats[2] / n,
        probe_acc=stats[3] / n,
        grad_norm=grad_norm,
        skipped=skipped,
        stop=stats[4] > 0,
    )


def log_row(
    state: TrainState, result: StepResult, *, lr: float, images_per_s: float, render_backend: str
) -> dict[str, Any]:
    """The metrics.jsonl row of the step just done (the validation monitor may add to it)."""
    row = {
        "step": state.step,
        "epoch": state.epoch,
        "loss": result.loss,
        "lr": lr,
        "grad_norm": result.grad_norm,
        "images_per_s": images_per_s,
        "skipped": state.skipped,
    }
    if render_backend:  # what this step rendered with (auto's choice can vary with the batch)
        row["render_backend"] = state.model.last_render_backend
    if state.probe is not None:
        row.update(probe_loss=result.probe_loss, probe_acc=result.probe_acc)
    return row


class Throughput:
    """Images per second over the steps since the last ``reset``."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.reset()

    def reset(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def tick(self) -> None:
        self.steps += 1

    def images_per_s(self) -> float:
        return self.batch * self.steps / max(time.perf_counter() - self.start, 1e-9)


# --- outputs besides metrics and checkpoints ------------------------------------------------


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


class Pictures:
    """Reconstruction and (GMAE) depth-layer pictures of a fixed batch of validation images:
    TensorBoard (drawn once per step) and vis/{recon,layers}-NAME.png. ``images`` None: none."""

    def __init__(
        self, model: nn.Module, images: torch.Tensor | None, out: Path, log: RunLog, seed: int
    ) -> None:
        self.model, self.images, self.out, self.log, self.seed = model, images, out, log, seed
        self.step, self.grids = -1, {}  # the step the grids were drawn at

    def save(self, name: str, step: int) -> None:
        if self.images is None:
            return
        if self.step != step:
            grids = {"recon": recon_grid(self.model, self.images, self.seed)}
            if isinstance(self.model, GMAE):
                grids["layers"] = layer_grid(self.model, self.images)
            for key, grid in grids.items():
                tag = {"recon": "reconstruction", "layers": "depth_layers"}[key]
                self.log.image(tag, grid, step)
            self.step, self.grids = step, grids
        for key, grid in self.grids.items():
            save_png(grid, self.out / "vis" / f"{key}-{name}.png")


def picture_batch(val_set: Dataset, n: int, device: torch.device) -> torch.Tensor:
    """``n`` validation images, evenly spaced over the (class-sorted) set: one per class or so."""
    n = min(n, len(val_set))
    picks = torch.linspace(0, len(val_set) - 1, n).round().long().tolist()
    return torch.stack([val_set[i][0] for i in picks]).to(device)


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
    accum, batch = batch_split(o, dist.world_size)
    lr = o.base_lr * batch / 256

    # Model (the same initialisation on every rank), online probe, optimizer.
    random_seed(r.seed, 0)
    model = build_model(cfg).to(device)
    render_backend = prepare_renderer(model, device, dist, o.batch_size)
    train_images, augment, val_set = build_data(cfg)
    probe = build_probe(cfg, model, train_images, dist)
    net = Pretrainer(model, probe)
    no_decay = {f"model.{n}" for n in model.no_weight_decay()} | {"probe.*"}
    optimizer = build_optimizer(
        net,
        lr,
        o.weight_decay,
        o.betas,
        no_decay,
        fused=device.type == "cuda",
        lr_scale=decoder_lr_scale(o.decoder_lr_scale),
    )
    random_seed(r.seed, dist.rank)

    # Data: order, augmentation and mask noise are functions of (seed, epoch, index).
    train_set = SeededSamples(train_images, augment, model.encoder.num_patches, r.seed)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, r.seed)
    loader_rng = torch.Generator()  # reseeded per epoch: worker seeds
    loader = build_loader(cfg, train_set, sampler, loader_rng, device)
    steps_per_epoch = sampler.num_samples // o.batch_size // accum
    if steps_per_epoch == 0:
        raise GmaeError(
            f"data set {cfg.data.spec} ({len(train_set)} images) is smaller than one step's "
            f"batch of {batch}"
        )
    schedule = Schedule.plan(o, batch=batch, lr=lr, steps_per_epoch=steps_per_epoch)

    # Where the run is: fresh, or where the checkpoint left it (weights, optimizer, RNG ...).
    state = TrainState(
        config=config_to_dict(cfg),
        schedule=schedule,
        model=model,
        probe=probe,
        optimizer=optimizer,
        scaler=scaler,
    )
    if ckpt is not None:
        state.restore(ckpt, ckpt_path, dist)
    forward = wrap_ddp(net, dist) if dist.enabled else net

    # Outputs (rank 0): resolved config, metrics, TensorBoard, progress bar, pictures.
    if dist.is_main:
        claim_run_dir(out, force)  # create, mark as a run, delete stale temp files of ours
        save_config(cfg, out / "config.yaml")
    log = cleanup.enter_context(RunLog(out, state.step, schedule.total_steps, dist.is_main))
    signals = cleanup.enter_context(StopSignals())
    vis_images = None
    if dist.is_main and val_set is not None and r.vis_images and model.pixel_output:
        vis_images = picture_batch(val_set, r.vis_images, device)
    pictures = Pictures(model, vis_images, out, log, r.seed)
    monitor = None
    if dist.is_main and val_set is not None and r.health_every >= 0 and r.health_images > 0:
        monitor = ValidationMonitor(
            val_set, r.health_images, model.encoder.num_patches, r.seed, device
        )
    health_every = r.health_every or r.log_every
    # Config in TensorBoard's hparams view, beside the losses and the health verdict.
    log.hparams(state.config, ("train/loss", "train/val_loss", "train/health/healthy"))
    log.note(
        f"{cfg.model['name']}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"{dist.world_size} process(es) on {device}, batch {batch} "
        f"({o.batch_size} x {accum} accum x {dist.world_size}), lr {lr:.3g}"
        + (f" (x {o.decoder_lr_scale:g} outside the encoder)" if o.decoder_lr_scale != 1 else "")
        + ", "
        f"{steps_per_epoch} steps/epoch, {schedule.total_steps} steps "
        f"({schedule.total_steps / steps_per_epoch:.3g} epochs)"
        + (f", resumed at step {state.step} from {ckpt_path}" if ckpt is not None else "")
    )
    if render_backend:
        log.note(f"renderer: {render_backend}")

    # The loop. One iteration = one optimizer step = `accum` micro-batches per process.
    last_step = schedule.total_steps if max_steps is None else min(schedule.total_steps, max_steps)
    start_step, interrupted, consecutive_bad = state.step, False, 0
    stop = state.step >= last_step
    throughput = Throughput(batch)
    net.train()
    while state.epoch < schedule.epochs and not stop:
        sampler.set_epoch(state.epoch, start=state.step_in_epoch * accum * o.batch_size)
        train_set.set_epoch(state.epoch)
        loader_rng.manual_seed(r.seed + state.epoch)
        batches = iter(loader)
        while state.step_in_epoch < steps_per_epoch and not stop:
            step_lr = schedule.lr_at(state.step)
            set_lr(optimizer, step_lr)
            result = train_step(
                forward,
                state,
                batches,
                accum=accum,
                amp=amp,
                clip_grad=o.clip_grad,
                world_size=dist.world_size,
                signals=signals,
            )
            if result.skipped:
                state.skipped += 1
                consecutive_bad += 1
            else:
                consecutive_bad = 0
            state.step += 1
            state.step_in_epoch += 1
            # Latent MIM moves its EMA target here, a function of (step, total_steps) and the
            # state dict, so a resumed run repeats it exactly; a no-op for MAE and GMAE.
            model.after_step(state.step, schedule.total_steps)
            throughput.tick()
            log.advance()

            if state.step % r.log_every == 0 or state.step == schedule.total_steps:
                row = log_row(
                    state,
                    result,
                    lr=step_lr,
                    images_per_s=throughput.images_per_s(),
                    render_backend=render_backend,
                )
                health_due = state.step % health_every == 0 or state.step == schedule.total_steps
                if monitor is not None and health_due:
                    row.update(monitor(model))
                    log.histograms(monitor.arrays, state.step)
                log.metrics(row)
                throughput.reset()
            if result.skipped:
                log.note(f"step {state.step}: non-finite loss or gradient, update skipped")
            if consecutive_bad >= r.max_nonfinite:
                raise GmaeError(
                    f"loss or gradients non-finite for {consecutive_bad} steps in a row (up to "
                    f"step {state.step}): lower optim.base_lr, set optim.clip_grad, try "
                    "run.amp=bf16 or none, or check the data"
                )

            if r.vis_every_steps and state.step % r.vis_every_steps == 0:
                pictures.save(f"step{state.step:07d}", state.step)
            interrupted = result.stop
            stop = interrupted or state.step >= last_step
            every = r.ckpt_every_steps and state.step % r.ckpt_every_steps == 0
            if state.step_in_epoch < steps_per_epoch and (stop or every):  # mid-epoch
                save_checkpoints(state, out, [LAST], dist)

        if state.step_in_epoch >= steps_per_epoch:  # the epoch is complete
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
            last_epoch = state.epoch == schedule.epochs
            if state.epoch % r.vis_every == 0 or last_epoch:
                pictures.save(f"{state.epoch:04d}", state.step)
            names = [LAST]
            if state.epoch % r.ckpt_every == 0 or last_epoch:
                names.append(f"checkpoint-{state.epoch:04d}.pt")
            save_checkpoints(state, out, names, dist)

    if state.step > start_step and pictures.step != state.step:  # any run's end: --max-steps too
        pictures.save(f"step{state.step:07d}", state.step)
    if interrupted:
        log.note(f"stopped by a signal at step {state.step}; continue with --resume")
    return {
        "step": state.step,
        "epoch": state.epoch,
        "skipped": state.skipped,
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
    if not isinstance(model, GMAE):
        return ""
    backend = model.render_backend
    if device.type == "cuda" and backend in ("auto", "gsplat"):
        if dist.local_rank != 0:
            distributed.barrier()
        gsplat_kernel_problem()
        if dist.local_rank == 0:
            distributed.barrier()
    return model.render_backend_for(device, batch_size)
