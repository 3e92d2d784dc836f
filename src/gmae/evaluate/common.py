"""What every evaluation protocol shares: devices, data subsets, loaders, feature extraction and
the JSON envelope of the results."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from gmae import __version__
from gmae import io as gio
from gmae.data import build_dataset, eval_transform
from gmae.errors import ArgumentError, GmaeError

FEATURE_KINDS = ("cls", "mean")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def dataset_targets(ds: Dataset) -> list[int]:
    """Labels without loading images (ImageFolder-style ``targets``, through Subsets)."""
    if isinstance(ds, Subset):
        inner = dataset_targets(ds.dataset)
        return [inner[i] for i in ds.indices]
    targets = getattr(ds, "targets", None)
    if targets is None:
        return [int(ds[i][1]) for i in range(len(ds))]
    return [int(t) for t in targets]


def dataset_classes(ds: Dataset) -> list[str]:
    while isinstance(ds, Subset):
        ds = ds.dataset
    classes = getattr(ds, "classes", None)
    if classes is None:
        raise GmaeError("data set has no 'classes' attribute (use a gmae data set spec)")
    return list(classes)


def limit_dataset(ds: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """A seeded random subset of ``limit`` images (sorted indices), or ``ds`` itself.

    Random, not the first ``limit``: image folders are sorted by class, so a prefix would hold
    one or two classes only.
    """
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise ArgumentError("limit", f"must be at least 1, got {limit}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=gen)[:limit].sort().values.tolist()
    return Subset(ds, idx)


def load_split(
    spec: str,
    split: str,
    transform: Callable | None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """``build_dataset(spec, split, transform)``, limited; an empty split is an error."""
    ds = build_dataset(spec, split, transform=transform)
    if len(ds) == 0:
        raise GmaeError(f"data set {spec!r} split {split!r} has no images")
    return limit_dataset(ds, limit, seed)


def make_loader(
    ds: Dataset,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 0,
    device: torch.device | None = None,
) -> DataLoader:
    if batch_size < 1:
        raise ArgumentError("batch_size", f"must be at least 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=gen,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@dataclass
class Features:
    """Frozen-encoder features of one split: cls token and mean of patch tokens, [N, D] each
    (after the encoder's final LayerNorm), and labels [N]."""

    cls: Tensor
    mean: Tensor
    labels: Tensor

    def get(self, kind: str) -> Tensor:
        if kind not in FEATURE_KINDS:
            raise GmaeError(
                f"unknown feature kind {kind!r}; choose from {', '.join(FEATURE_KINDS)}"
            )
        return getattr(self, kind)

    def __len__(self) -> int:
        return self.labels.shape[0]


def pool_tokens(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 1 + N, D] -> (cls [B, D], mean of the patch tokens [B, D])."""
    return tokens[:, 0], tokens[:, 1:].mean(dim=1)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    desc: str = "features",
    amp: bool = False,
) -> Features:
    """Run ``model.forward_features`` over a loader of ([0, 1] images, labels); fp32 on CPU."""
    model.eval().to(device)
    cls, mean, labels = [], [], []
    for imgs, y in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True, leave=False):
        imgs = imgs.to(device, non_blocking=True)
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"
        ):
            tokens = model.forward_features(imgs)
        c, m = pool_tokens(tokens.float())
        cls.append(c.cpu())
        mean.append(m.cpu())
        labels.append(torch.as_tensor(y).cpu())
    if not labels:
        raise GmaeError(f"{desc}: no images to extract features from")
    return Features(torch.cat(cls), torch.cat(mean), torch.cat(labels).long())


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent (k capped at the number of classes)."""
    out = {}
    num_classes = logits.shape[1]
    for k in ks:
        kk = min(k, num_classes)
        hit = logits.topk(kk, dim=1).indices.eq(labels.view(-1, 1)).any(dim=1)
        out[f"top{k}"] = 100.0 * hit.float().mean().item()
    return out


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """Plain JSON: non-finite floats become strings ("inf", "nan"), tuples lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return json_safe(obj.item())
    return obj


def envelope(protocol: str, loaded: Any, data: dict[str, Any], settings: dict[str, Any]) -> dict:
    """The common head of every result file."""
    return {
        "protocol": protocol,
        "gmae_version": __version__,
        "model": loaded.describe(),
        "data": data,
        "settings": settings,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_result(path: Any, result: dict[str, Any]) -> None:
    if path is not None:
        gio.write_json(path, json_safe(result))


def split_features(
    loaded: Any,
    spec: str,
    splits: Sequence[str],
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    limit: int | None = None,
    seed: int = 0,
    crop_pct: float = 1.0,
) -> tuple[list[Features], dict[str, Any]]:
    """Features of each split (eval transform at the model's size) and a data description."""
    transform = eval_transform(loaded.img_size, crop_pct)
    sets = [load_split(spec, s, transform, limit, seed) for s in splits]
    classes = [dataset_classes(ds) for ds in sets]
    if any(c != classes[0] for c in classes):
        raise GmaeError(f"splits {', '.join(splits)} of {spec!r} have different class lists")
    feats = [
        extract_features(
            loaded.model, make_loader(ds, batch_size, num_workers, device=device), device, f"{s}"
        )
        for s, ds in zip(splits, sets)
    ]
    data = {
        "spec": spec,
        "splits": {s: len(ds) for s, ds in zip(splits, sets)},
        "num_classes": len(classes[0]),
        "limit": limit,
        "img_size": loaded.img_size,
        "crop_pct": crop_pct,
    }
    return feats, data
