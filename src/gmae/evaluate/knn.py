"""k-nearest-neighbour evaluation of frozen features.

- **Weighted kNN** (InstDisc, Wu et al. 2018; DINO's ``eval_knn``): L2-normalised features,
  cosine similarity to every training feature, the k = 20 most similar vote for their class with
  weight ``exp(sim / T)``, T = 0.07; the class with the largest summed weight wins (top-5: the
  five largest).
- **1-NN leave-one-out** (Latent MIM, Wei et al. 2024): on the validation set alone, each image
  takes the label of its most similar *other* validation image (cosine similarity; self excluded
  by index, so duplicate images still count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gmae.errors import GmaeError
from gmae.evaluate.common import FEATURE_KINDS, topk_accuracy


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


@torch.no_grad()
def knn_scores(
    train_x: Tensor,
    train_y: Tensor,
    query_x: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> Tensor:
    """Per-class vote weights [Nq, C] of weighted kNN (argmax = prediction)."""
    if k < 1 or temperature <= 0:
        raise GmaeError(f"kNN needs k >= 1 and T > 0, got k={k}, T={temperature}")
    if train_x.shape[0] == 0:
        raise GmaeError("kNN: no training features")
    k = min(k, train_x.shape[0])
    train = F.normalize(train_x.float(), dim=1)
    query = F.normalize(query_x.float(), dim=1)
    out = torch.zeros(query.shape[0], num_classes)
    for a, b in _chunks(query.shape[0], chunk):
        sim, idx = (query[a:b] @ train.T).topk(k, dim=1)
        votes = torch.zeros(b - a, num_classes)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        out[a:b] = votes
    return out


@torch.no_grad()
def nn1_leave_one_out(x: Tensor, y: Tensor, chunk: int = 1024) -> float:
    """1-NN accuracy (percent) of each sample against all *others* (cosine similarity)."""
    n = x.shape[0]
    if n < 2:
        raise GmaeError("1-NN leave-one-out needs at least 2 images")
    feats = F.normalize(x.float(), dim=1)
    correct = 0
    for a, b in _chunks(n, chunk):
        sim = feats[a:b] @ feats.T
        rows = torch.arange(b - a)
        sim[rows, rows + a] = -float("inf")  # exclude self by index
        correct += (y[sim.argmax(dim=1)] == y[a:b]).sum().item()
    return 100.0 * correct / n


def knn_eval(
    train, val, num_classes: int, k: int = 20, temperature: float = 0.07
) -> dict[str, dict[str, float]]:
    """Both protocols for cls and mean-pooled features (``Features`` of train and val)."""
    results = {}
    for kind in FEATURE_KINDS:
        scores = knn_scores(
            train.get(kind), train.labels, val.get(kind), num_classes, k, temperature
        )
        acc = topk_accuracy(scores, val.labels)
        results[kind] = {
            "knn_top1": acc["top1"],
            "knn_top5": acc["top5"],
            "nn1_loo_top1": nn1_leave_one_out(val.get(kind), val.labels),
        }
    return results
