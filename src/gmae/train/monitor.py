"""What training logs besides the loss: validation loss and Gaussian health on one fixed held-out
batch (scalars and histograms), and the depth-layer pictures of the picture batch.

The batch (evenly spaced validation images) and its mask noise are drawn once, so successive
measurements differ only by the model. Nothing here touches the global RNG, so a resumed run
logs the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from gmae.images import colormap
from gmae.models import GMAE
from gmae.models.health import flat_scalars, gaussian_health


class ValidationMonitor:
    def __init__(self, val_set: Dataset, n: int, num_patches: int, seed: int, device) -> None:
        n = min(n, len(val_set))
        picks = torch.linspace(0, len(val_set) - 1, n).round().long().tolist()
        self.images = torch.stack([val_set[i][0] for i in picks]).to(device)
        gen = torch.Generator().manual_seed(seed + 7919)  # not the training seed's stream
        self.noise = torch.rand(n, num_patches, generator=gen).to(device)
        # Per-Gaussian values of the last measurement (GMAE), for TensorBoard histograms.
        self.arrays: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float | None]:
        was_training = model.training
        model.eval()
        try:
            out = model(self.images, noise=self.noise)
            row: dict[str, float | None] = {"val_loss": float(_task_loss(model, self.images, out))}
            self.arrays = {}
            if isinstance(model, GMAE):
                health = gaussian_health(model, self.images, noise=self.noise, arrays=self.arrays)
                row.update(flat_scalars(health))
        finally:
            model.train(was_training)
        return row


def _task_loss(model: nn.Module, imgs: torch.Tensor, out) -> torch.Tensor:
    """The reconstruction loss alone (GMAE's training loss may add the saturation guard)."""
    if isinstance(model, GMAE):
        return model.forward_loss(imgs, out.pred, out.mask)
    return out.loss


@torch.no_grad()
def layer_grid(model: nn.Module, images: torch.Tensor, groups: int = 4) -> torch.Tensor:
    """Depth layers of a GMAE's Gaussians (mask ratio 0) as one [3, H, W] picture in [0, 1].

    One row per image: the full render, each of ``groups`` equal-count depth groups alone
    (nearest first) and the depth render (viridis: yellow = near, purple = far).
    """
    from gmae.zeroshot.layers import layer_set

    was_training = model.training
    model.eval()
    try:  # the encoder may draw mask noise: keep the training RNG where it was
        with torch.random.fork_rng(devices=[images.device.index] if images.is_cuda else []):
            g = model.predict_gaussians(images)
            s = model.img_size
            ls = layer_set(model, g, s, s, (), min(groups, g.num_gaussians))
    finally:
        model.train(was_training)
    depth = colormap(1.0 - ls.depth_render.float().cpu().numpy())  # [B, H, W, 3] uint8
    depth = torch.from_numpy(depth).permute(0, 3, 1, 2).float() / 255.0
    cols = [ls.full, *ls.groups_alone.unbind(1)]
    cols = [c.detach().float().clamp(0, 1).cpu().expand(-1, 3, -1, -1) for c in cols] + [depth]
    tiles = torch.stack(cols, dim=1).flatten(0, 1)  # row-major: image, then column
    return make_grid(tiles, nrow=len(cols), padding=2, pad_value=1.0)
