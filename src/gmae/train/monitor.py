"""Validation loss and Gaussian health on one fixed held-out batch, for the training log.

The batch (evenly spaced validation images) and its mask noise are drawn once, so successive
measurements differ only by the model. Nothing here touches the global RNG, so a resumed run
logs the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from gmae.models.health import flat_scalars, gaussian_health


class ValidationMonitor:
    def __init__(self, val_set: Dataset, n: int, num_patches: int, seed: int, device) -> None:
        n = min(n, len(val_set))
        picks = torch.linspace(0, len(val_set) - 1, n).round().long().tolist()
        self.images = torch.stack([val_set[i][0] for i in picks]).to(device)
        gen = torch.Generator().manual_seed(seed + 7919)  # not the training seed's stream
        self.noise = torch.rand(n, num_patches, generator=gen).to(device)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float | None]:
        was_training = model.training
        model.eval()
        try:
            out = model(self.images, noise=self.noise)
            row: dict[str, float | None] = {"val_loss": float(_task_loss(model, self.images, out))}
            if hasattr(model, "forward_decoder_raw"):  # GMAE
                row.update(flat_scalars(gaussian_health(model, self.images, noise=self.noise)))
        finally:
            model.train(was_training)
        return row


def _task_loss(model: nn.Module, imgs: torch.Tensor, out) -> torch.Tensor:
    """The reconstruction loss alone (GMAE's training loss may add the saturation guard)."""
    if getattr(out, "gaussians", None) is not None:
        return model.forward_loss(imgs, out.pred, out.mask)
    return out.loss
