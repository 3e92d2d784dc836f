"""Training curves from ``metrics.jsonl`` files, as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gmae import io as gio
from gmae.images import headless_pyplot
from gmae.io import read_metrics  # lived here; gmae.report.curves.read_metrics still works


def plot_loss_curves(
    runs: Sequence[tuple[str, str | os.PathLike]], out_png: str | os.PathLike, key: str = "loss"
) -> Path:
    """Plot ``key`` against step for each (label, metrics.jsonl) pair into one PNG (atomic)."""
    plt = headless_pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    for ax, (label, path) in zip(axes[0], runs):
        rows = [r for r in read_metrics(path) if key in r]
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], lw=1.2)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    with gio.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_png


# Health traces worth a glance next to the losses (docs/models.md, "Gaussian health").
HEALTH_TRACES = (
    ("health/pinned_size", "sizes at the cap"),
    ("health/pinned_z", "z at a depth bound"),
    ("health/sat_z", "z saturated"),
    ("health/sat_scale", "scale saturated"),
    ("health/healthy", "healthy (1 = all checks pass)"),
)


def training_figure(rows: Sequence[dict]):
    """Training and validation loss, learning rate and (GMAE) Gaussian health against step, from
    metrics.jsonl rows; None when no row has a loss."""
    plt = headless_pyplot()

    def series(key):
        pts = [(r["step"], r[key]) for r in rows if "step" in r and r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    if not series("loss")[0]:
        return None
    health = [(k, label) for k, label in HEALTH_TRACES if series(k)[0]]
    panels = 3 if health else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.3))
    ax = axes[0]
    ax.plot(*series("loss"), lw=1.2, label="training loss")
    if series("val_loss")[0]:
        ax.plot(*series("val_loss"), "o-", ms=3, lw=1.2, label="validation loss (fixed batch)")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    axes[1].plot(*series("lr"), lw=1.2)
    axes[1].set_title("learning rate")
    if health:
        for key, label in health:
            axes[2].plot(*series(key), lw=1.2, label=label)
        axes[2].set_ylim(-0.05, 1.05)
        axes[2].set_title("Gaussian health (fractions)")
        axes[2].legend(fontsize=7)
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig
