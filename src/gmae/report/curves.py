"""Training curves from ``metrics.jsonl`` files, as PNG."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from gmae.errors import GmaeError


def read_metrics(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"metrics file {path} not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise GmaeError(f"{path}:{n}: not JSON ({exc.msg})") from exc
    return rows


def plot_loss_curves(
    runs: Sequence[tuple[str, str | os.PathLike]], out_png: str | os.PathLike, key: str = "loss"
) -> Path:
    """Plot ``key`` against step for each (label, metrics.jsonl) pair into one PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gmae import io as gio

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
