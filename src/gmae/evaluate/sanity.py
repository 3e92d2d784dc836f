"""Results-table sanity check: a random encoder must not beat the trained one.

    python -m gmae.evaluate.sanity --ckpt runs/mae_cifar10/last.pt --data cifar10 \\
        [--limit 5000] [--tolerance 1.0] [--json sanity.json]

Runs weighted kNN, 1-NN leave-one-out and the cached linear probe on the checkpoint and on a
random initialisation of the same architecture (same images, same protocol), prints both, and
exits with status 1 if the random encoder beats the trained one on any top-1 number by more than
``--tolerance`` points. A failure means a broken checkpoint, a loading bug or a protocol bug
(features taken before the encoder, labels misaligned between splits, ...).

Not a CI test: it needs an encoder that actually learned something, and pretraining one on real
data takes far longer than the test budget on a 2-core CPU (a few hundred supervised steps of a
2-block ViT on CIFAR-10 took minutes there and still gave a weak encoder). The CI tests check the
protocols themselves on data with a known answer; run this after every pretraining run that
feeds the results table.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gmae.cli import error_message
from gmae.devices import DEVICE_HELP, resolve_device
from gmae.errors import GmaeError
from gmae.evaluate.common import split_features, write_result
from gmae.evaluate.knn import knn_eval
from gmae.evaluate.linprobe import cached_linprobe
from gmae.loading.loaders import load_any, random_like


def compare_to_random(
    ckpt: str,
    data: str,
    limit: int | None = None,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    num_workers: int = 2,
    tolerance: float = 1.0,
    splits: tuple[str, str] = ("train", "val"),
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Scores of the checkpoint and of a random model of its architecture, and the verdict."""
    dev = resolve_device(device)
    trained = load_any(ckpt)
    scores: dict[str, dict[str, float]] = {}
    data_info: dict[str, Any] = {}
    for name, loaded in (("trained", trained), ("random", random_like(trained, seed))):
        (train, val), data_info = split_features(
            loaded, data, splits, dev, batch_size, num_workers, limit, seed
        )
        knn = knn_eval(train, val, data_info["num_classes"])
        probe = cached_linprobe(train, val, data_info["num_classes"], seed=seed, max_iter=max_iter)
        scores[name] = {
            f"{kind}_{metric}": value
            for kind in ("cls", "mean")
            for metric, value in (
                ("knn_top1", knn[kind]["knn_top1"]),
                ("nn1_loo_top1", knn[kind]["nn1_loo_top1"]),
                ("linprobe_top1", probe[kind]["top1"]),
            )
        }
    losses = [k for k, v in scores["random"].items() if v > scores["trained"][k] + tolerance]
    return {
        "ckpt": ckpt,
        "data": data_info,
        "scores": scores,
        "tolerance": tolerance,
        "random_wins": losses,
        "ok": not losses,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gmae.evaluate.sanity", description=__doc__)
    p.add_argument(
        "--ckpt", required=True, help="the trained checkpoint: anything gmae eval --ckpt reads"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=1.0, help="points random may lead by")
    p.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit")
    p.add_argument("--json")
    args = p.parse_args(argv)
    try:
        result = compare_to_random(
            args.ckpt, args.data, args.limit, args.seed, args.device, args.batch_size,
            args.num_workers, args.tolerance, max_iter=args.max_iter,
        )  # fmt: skip
    except GmaeError as exc:
        print(f"gmae: error: {error_message(exc)}", file=sys.stderr)
        return 2
    for key in result["scores"]["trained"]:
        t, r = result["scores"]["trained"][key], result["scores"]["random"][key]
        flag = "  <- random wins" if key in result["random_wins"] else ""
        print(f"{key:22s} trained {t:6.2f}  random {r:6.2f}{flag}")
    write_result(args.json, result)
    print("OK: the trained encoder is not beaten by a random one" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
