"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard, the progress bar, pictures;
and the run directory's checks (whether to resume, decided on rank 0).

Only rank 0 writes; on other ranks ``RunLog`` is inert.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from gmae import images
from gmae import io as gio
from gmae.errors import ArgumentError, GmaeError

# read_metrics lives in gmae.io; the name is kept here for callers.
from gmae.io import read_metrics as read_metrics
from gmae.train.distributed import all_gather_object, broadcast_object

LAST = "last.pt"  # the checkpoint --resume continues from
METRICS = "metrics.jsonl"
RUN_MARKER = ".gmae-run"  # written into every run directory gmae pretrain creates or adopts
# What a run writes into its directory: a fresh run refuses to replace any of them in a
# directory gmae did not create (no RUN_MARKER, no last.pt), unless forced.
RUN_FILES = ("config.yaml", METRICS, "last.pt", "tb", "vis")
_CHECKPOINT = "checkpoint-*.pt"


def check_run_dir(out: Path, force: bool = False) -> None:
    """Refuse (one line, naming the path) to write a run into a directory that gmae did not
    create and that holds files the run would replace: ``config.yaml``, ``metrics.jsonl``,
    ``tb/``, ``vis/``, ``checkpoint-*.pt``. Other files in it are never touched. ``force``:
    replace them anyway. Also refuses an ``out`` that is a file or cannot be written."""
    gio.check_output_dir(out, "out")  # the CLI checked --out itself before
    if not out.is_dir() or force or (out / RUN_MARKER).is_file() or (out / "last.pt").is_file():
        return
    clash = [out / n for n in RUN_FILES if (out / n).exists() or (out / n).is_symlink()]
    clash += sorted(out.glob(_CHECKPOINT))
    if clash:
        raise ArgumentError(
            "out",
            f"{{out}} {out} is not a gmae run directory and already holds {clash[0]}, which the "
            "run would replace: choose another {out} (or pass {force} to replace it)",
            mentions=("force",),
        )


def decide_resume(out: Path, resume: bool | str | Path | None, force: bool, dist) -> Path | None:
    """Rank 0 checks ``out`` and decides whether (and from which file) to resume; every rank
    gets that decision, so ranks whose ``out`` is not on a shared file system cannot disagree on
    the step (and hang in a collective). A rank that cannot read the chosen file is an error on
    every rank."""
    decision: tuple[str | None, GmaeError | None] = (None, None)
    if dist.is_main:
        try:  # --out must be a run directory or hold nothing the run would replace
            check_run_dir(out, force)
            path = resume_path(out, resume)
            decision = (str(path) if path is not None else None, None)
        except GmaeError as exc:
            decision = (None, exc)  # the error itself: an ArgumentError keeps its argument
    chosen, error = broadcast_object(decision)
    if error is not None:
        raise error
    path = Path(chosen) if chosen is not None else None
    missing = all_gather_object(path is not None and not path.is_file())
    blind = [rank for rank, m in enumerate(missing) if m]
    if blind:
        raise ArgumentError(
            "out",
            f"rank 0 resumes from {path}, which rank(s) {', '.join(map(str, blind))} cannot "
            "read: put {out} on a file system every node shares, or copy the checkpoint there",
        )
    return path


def resume_path(out: Path, resume: bool | str | Path | None) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (see ``pretrain``)."""
    last = out / LAST
    if resume is None or resume is False:
        if last.exists():
            raise ArgumentError(
                "resume",
                f"{out} already holds a run ({last}): pass {{resume}} to continue it, or choose "
                "another {out}",
                mentions=("out",),
            )
        return None
    if resume is True:
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise GmaeError(f"checkpoint {path} not found")
    return path


def claim_run_dir(out: Path, force: bool = False) -> None:
    """Create the run directory (checked by ``check_run_dir``), mark it as a gmae run, and
    delete the temporary files a killed earlier run left in it (only gmae's own)."""
    check_run_dir(out, force)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / RUN_MARKER
    if not marker.is_file():
        gio.write_text(marker, "a gmae pretrain run directory\n")
    for folder in (out, out / "vis"):
        gio.remove_stale_temps(folder)


class RunLog:
    """JSON-lines metrics, TensorBoard scalars/images and a tqdm bar over all optimizer steps."""

    def __init__(self, out: Path, start_step: int, total_steps: int, enabled: bool) -> None:
        self.enabled = enabled
        self.tb = self.bar = self.file = None
        if not enabled:
            return

        # A resumed run replays the steps after its checkpoint: drop what was logged past it.
        truncate_metrics(out / METRICS, start_step)
        self.file = open(out / METRICS, "a")  # noqa: SIM115 (closed in close())
        self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step or None)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def metrics(self, row: dict) -> None:
        if not self.enabled:
            return
        self.file.write(gio.dumps(row) + "\n")  # NaN / inf -> null: always valid JSON
        self.file.flush()
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, int | float):
                self.tb.add_scalar(f"train/{key}", value, row["step"])
        self.bar.set_postfix(
            loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", img_s=f"{row['images_per_s']:.1f}"
        )

    def hparams(self, config: dict, metrics: tuple[str, ...]) -> None:
        """The resolved config (flattened: ``optim.base_lr`` ...) in TensorBoard's hparams view,
        next to the scalar tags ``metrics``."""
        if not self.enabled:
            return

        flat = {k: _hparam_value(v) for k, v in _flatten(config).items()}
        writer = self.tb._get_file_writer()
        for summary in hparams(flat, dict.fromkeys(metrics, 0.0)):
            writer.add_summary(summary)

    def histograms(self, arrays: dict, step: int, prefix: str = "health/") -> None:
        """Per-Gaussian distributions (finite values only) as TensorBoard histograms."""
        if not self.enabled:
            return
        for key, value in arrays.items():
            v = torch.as_tensor(value).detach().float().flatten().cpu()
            v = v[v.isfinite()]
            if v.numel():
                self.tb.add_histogram(f"{prefix}{key}", v, step)

    def advance(self) -> None:
        if self.enabled:
            self.bar.update(1)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        if self.enabled:
            self.tb.add_image(tag, grid, step)

    def note(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.tb.close()
            self.file.close()
            self.enabled = False


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _hparam_value(value):
    """TensorBoard hparams take numbers, strings and booleans: None and lists become text."""
    return value if isinstance(value, bool | int | float | str) else str(value)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines with ``step <= step`` (and drop a torn last line), atomically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", math.inf) <= step:
            keep.append(line + "\n")
    gio.write_text(path, "".join(keep))


@torch.no_grad()
def recon_grid(model: torch.nn.Module, images: torch.Tensor, seed: int) -> torch.Tensor:
    """Rows: input, masked input, reconstruction. The mask is drawn from ``seed`` (the same
    every time, so grids of successive epochs compare) without touching the global RNG."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[images.device.index] if images.is_cuda else []):
        torch.manual_seed(seed)
        out = model.reconstruct(images)
    model.train(was_training)
    rows = [out["input"], out["masked"], out["recon"]]
    grid = torch.cat([r.detach().float().clamp(0, 1).cpu() for r in rows])
    return make_grid(grid, nrow=len(images), padding=2, pad_value=1.0)


def save_png(grid: torch.Tensor, path: Path) -> None:
    """The old argument order (picture, path) of ``gmae.images.save_png(path, picture)``."""
    images.save_png(path, grid)
