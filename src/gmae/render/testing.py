"""Random GMAE-like Gaussians for tests and benchmarks."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def random_gaussians(
    batch: int,
    k: int,
    *,
    channels: int = 3,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    scale_cap: float = 1.0,
    requires_grad: bool = False,
    scale_max: float | None = None,
) -> dict[str, Tensor]:
    """Gaussians as the GMAE head makes them: centres uniform in (-1, 1)^3,
    scale = scale_cap * sigmoid(N(0, 1)) (the head's ``scale_cap``), opacity = sigmoid(N(0, 1)),
    random unit quaternions, colours uniform in [0, 1). Returns keyword arguments for ``render``.

    ``scale_max`` is the deprecated name of ``scale_cap`` (DeprecationWarning)."""
    if scale_max is not None:
        warnings.warn(
            "random_gaussians(scale_max=) is deprecated; use scale_cap= (the GMAE head's name)",
            DeprecationWarning,
            stacklevel=2,
        )
        scale_cap = scale_max
    g = torch.Generator().manual_seed(seed)

    def make(*shape: int, kind: str) -> Tensor:
        if kind == "uniform":
            return torch.rand(*shape, generator=g, dtype=torch.float64)
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    out = {
        "means": make(batch, k, 3, kind="uniform") * 2 - 1,
        "scales": scale_cap * torch.sigmoid(make(batch, k, 3, kind="normal")),
        "quats": make(batch, k, 4, kind="normal"),
        "colors": make(batch, k, channels, kind="uniform"),
        "opacities": torch.sigmoid(make(batch, k, kind="normal")),
    }
    return {
        n: t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for n, t in out.items()
    }


def saturated_gaussians(seed: int = 3, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """40 large, nearly opaque Gaussians piled on the centre of a ~10 px gmae image, some with
    tied depths and five above max_alpha: the early stop, the clamp and the tie-break all
    matter."""
    g = random_gaussians(1, 40, dtype=torch.float64, seed=seed)
    g["means"] = g["means"] * 0.5
    g["means"][..., 2] = torch.round(g["means"][..., 2] * 4) / 4  # ties in depth
    g["scales"] = g["scales"] * 2 + 2  # 1-2 px on screen at ~10 px
    gen = torch.Generator().manual_seed(seed + 1)
    g["opacities"] = 0.9 + 0.0999 * torch.rand(1, 40, generator=gen, dtype=torch.float64)
    g["opacities"][0, :5] = 0.9995  # above max_alpha: clamped
    return {k: v.to(dtype) for k, v in g.items()}
