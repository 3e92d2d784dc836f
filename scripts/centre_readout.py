"""Could this GMAE's decoder features say where each image wants its centres?

A diagnostic for the centre-ratio check of Gaussian health. `scripts/centre_oracle.py` shows
that fitting a model's Gaussians to each image alone moves the centres with the image, while
the model's own prediction barely does. Is that because the decoder's features do not carry
where a centre should go (a representation gap), or because training never reads it out (the
head could, but does not)? This script asks with held-out ridge regressions:

1. The model predicts each image's Gaussians at mask 0 (every patch seen); a forward hook keeps
   each query's head input (the decoder's normed output token, what the linear head reads).
2. Each image's Gaussians are fitted to it alone from that prediction (the oracle's ``model``
   start, free centres). The target is each query's on-screen move, with the part shared by
   all images removed (each query's mean move over the training images): the image-specific
   move reconstruction asks for.
3. Ridge regressions, one map shared by every query as the head is, fitted on half the images
   and scored on the other half (R^2 over x and y, 95 % bootstrap CI over held-out images),
   from three feature sets, each with each query's mean over the training images removed:
   ``decoder``: the head's input, the same function class as a retrained head (linear);
   ``local``: the photo around the predicted centre (RGB and gradient magnitude in a
   (2r+1)^2 window), a control that asks whether the moves follow the photo at all;
   ``decoder+local``: both;
   ``local_error``: the photo minus the model's render in the same window, which drives the
   fit's first steps (a control the decoder cannot see: it never sees its render).

A positive control, ``decoder->own``, reads the model's own image-specific centres from the
same features (its head computes them from those, linearly then through a sigmoid), so it
should be near 1. A last row, ``repeat``, is the ceiling: the same fit run again from the
prediction plus a little noise (``--jitter``, on the raw outputs), its image-specific moves
taken as the prediction of the first fit's. Low there means the asked moves are not a function
of the image but of the fit's path: many layouts fit an image about equally well.

Reading: ``local`` well above 0 says the asked moves follow the photo; ``decoder`` near
``local`` says the features carry them and the head could have read them out; ``decoder``
near 0 with ``local`` above it says the features do not. Linear readouts bound nothing from
above: ``--mlp`` adds the same readouts by a small MLP (two hidden layers, early-stopped on a
quarter of the training images, weight decay chosen there), with its own positive control.

    python scripts/centre_readout.py --ckpt runs/seed1_e10/last.pt --num-images 128 \\
        --json results/health_sweep/centre_readout/seed1_control.json
"""

from __future__ import annotations

import argparse
import runpy
import time
from pathlib import Path

import numpy as np
import torch

from gmae.errors import GmaeError
from gmae.models.health import gradient_magnitude

ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def local_windows(
    imgs: np.ndarray, centres: np.ndarray, radius: int, with_gradient: bool = True
) -> np.ndarray:
    """Features [B, k, (2r+1)^2 * (C + 1)] (C without the gradient): the C channels of ``imgs``
    [B, H, W, C] and (``with_gradient``) their gradient magnitude in a window around each
    centre [B, k, 2] (u, v) (rounded to a pixel, clamped to the image, edge-padded)."""
    b, h, w, c = imgs.shape
    maps = imgs
    if with_gradient:
        maps = np.concatenate([imgs, gradient_magnitude(imgs)[..., None]], axis=-1)
    padded = np.pad(maps, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = np.clip(np.floor(centres[..., 1]).astype(int), 0, h - 1)
    cols = np.clip(np.floor(centres[..., 0]).astype(int), 0, w - 1)
    offsets = np.arange(2 * radius + 1)
    rr = rows[..., None, None] + offsets[:, None]  # [B, k, 2r+1, 1] in padded coordinates
    cc = cols[..., None, None] + offsets[None, :]
    bi = np.arange(b)[:, None, None, None]
    return padded[bi, rr, cc].reshape(b, centres.shape[1], -1)


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of ridge regression on standardised x (the bias is not penalised)."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean(0)))
    w = w / sd[:, None]
    return w, y.mean(0) - mu @ w


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def heldout_r2(y: np.ndarray, pred: np.ndarray, rng: np.random.Generator) -> dict:
    """R^2 of ``pred`` for ``y`` (both [n_images, k, 2]) pooled over images, queries and x / y,
    with a 95 % bootstrap CI over the images (1,000 resamples drawn from ``rng``)."""
    boot = []
    for _ in range(1000):
        i = rng.integers(0, len(y), len(y))
        boot.append(r2(y[i].reshape(-1, 2), pred[i].reshape(-1, 2)))
    return {
        "r2": r2(y.reshape(-1, 2), pred.reshape(-1, 2)),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
    }


def readout(
    feats: np.ndarray, target: np.ndarray, train: np.ndarray, folds: int = 4, seed: int = 0
) -> dict:
    """Held-out R^2 of a ridge map from ``feats`` [B, k, d] to ``target`` [B, k, 2], fitted on the
    images in ``train`` (bool [B]) with alpha chosen by ``folds``-fold CV over those images;
    95 % bootstrap CI over the held-out images."""
    tr, te = np.flatnonzero(train), np.flatnonzero(~train)
    d = feats.shape[-1]
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(tr)) % folds
    cv = {}
    for alpha in ALPHAS:
        scores = []
        for f in range(folds):
            fit_i, val_i = tr[fold_of != f], tr[fold_of == f]
            w, b0 = ridge_fit(feats[fit_i].reshape(-1, d), target[fit_i].reshape(-1, 2), alpha)
            y_val = target[val_i].reshape(-1, 2)
            scores.append(r2(y_val, feats[val_i].reshape(-1, d) @ w + b0))
        cv[alpha] = float(np.mean(scores))
    alpha = max(cv, key=cv.get)
    w, b0 = ridge_fit(feats[tr].reshape(-1, d), target[tr].reshape(-1, 2), alpha)
    return {
        **heldout_r2(target[te], feats[te] @ w + b0, rng),
        "alpha": alpha,
        "cv_r2": {str(a): round(s, 4) for a, s in cv.items()},
        "n_features": d,
    }


WEIGHT_DECAYS = (1e-2, 1e-1, 1.0)


def mlp_readout(
    feats: np.ndarray,
    target: np.ndarray,
    train: np.ndarray,
    seed: int = 0,
    hidden: int = 256,
    max_epochs: int = 200,
    patience: int = 15,
) -> dict:
    """Held-out R^2 of a small MLP (two hidden GELU layers of ``hidden``) from ``feats``
    [B, k, d] to ``target`` [B, k, 2]: the non-linear counterpart of ``readout``. Fitted with
    AdamW on three quarters of the images in ``train`` for each weight decay in
    ``WEIGHT_DECAYS``, stopped early on the last quarter; the net (decay and epoch) with the
    best validation R^2 is scored on the held-out images."""
    tr, te = np.flatnonzero(train), np.flatnonzero(~train)
    rng = np.random.default_rng(seed)
    tr = rng.permutation(tr)
    n_val = max(1, len(tr) // 4)
    fit_i, val_i = tr[n_val:], tr[:n_val]
    d = feats.shape[-1]
    mu, sd = feats[fit_i].reshape(-1, d).mean(0), feats[fit_i].reshape(-1, d).std(0) + 1e-8
    y_sd = float(target[fit_i].std()) + 1e-8

    def rows(i: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(((feats[i] - mu) / sd).reshape(-1, d)).float()
        return x, torch.from_numpy(target[i].reshape(-1, 2) / y_sd).float()

    x_fit, y_fit = rows(fit_i)
    x_val, y_val = rows(val_i)
    best = {"val_r2": -np.inf}
    for decay in WEIGHT_DECAYS:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
            torch.nn.GELU(), torch.nn.Linear(hidden, 2),
        )  # fmt: skip
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=decay)
        run_best, run_best_epoch = -np.inf, 0  # early stopping is per run, not global
        for epoch in range(max_epochs):
            net.train()
            for idx in torch.randperm(len(x_fit), generator=gen).split(512):
                loss = ((net(x_fit[idx]) - y_fit[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                score = r2(y_val.numpy(), net(x_val).numpy())
            if score > run_best:
                run_best, run_best_epoch = score, epoch
            elif epoch - run_best_epoch >= patience:
                break
            if score > best["val_r2"]:
                best = {"val_r2": score, "epochs": epoch + 1, "weight_decay": decay,
                        "state": {k: v.clone() for k, v in net.state_dict().items()}}  # fmt: skip
    net.load_state_dict(best.pop("state"))
    with torch.no_grad():
        x_te = torch.from_numpy(((feats[te] - mu) / sd).reshape(-1, d)).float()
        pred = net(x_te).numpy().reshape(len(te), -1, 2) * y_sd
    return {
        **heldout_r2(target[te], pred, rng),
        **best,
        "val_r2": round(float(best["val_r2"]), 4),
        "n_features": d,
        "hidden": hidden,
    }


def repeat_r2(target: np.ndarray, again: np.ndarray, train: np.ndarray, seed: int = 0) -> dict:
    """R^2 of ``target`` [B, k, 2] on the held-out images taken as ``again`` (a repeat), with a
    95 % bootstrap CI over those images."""
    te = np.flatnonzero(~train)
    return heldout_r2(target[te], again[te], np.random.default_rng(seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", default="imagenette-128")
    ap.add_argument("--split", default="val")
    ap.add_argument("--num-images", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300, help="per-image fitting steps")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam's lr on the raw outputs")
    ap.add_argument("--radius", type=int, default=4, help="local window half-size (pixels)")
    ap.add_argument("--jitter", type=float, default=0.02,
                    help="std of the noise on the repeat fit's start (raw units)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", required=True)
    ap.add_argument(
        "--mlp",
        action="store_true",
        help="also the non-linear readouts (a two-layer MLP, early-stopped)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.num_images < 8:
        raise SystemExit("centre_readout: --num-images must be at least 8 (4 folds, held-out half)")
    if args.steps < 1 or args.radius < 0 or not args.jitter > 0:
        raise SystemExit("centre_readout: --steps must be >= 1, --radius >= 0, --jitter > 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    from gmae import io as gio

    try:
        gio.check_output_file(args.json)  # before minutes of fitting
    except GmaeError as e:
        raise SystemExit(f"centre_readout: {e}") from None
    from gmae.loading.loaders import load_mae_or_gmae
    from gmae.zeroshot.stats import evenly_spaced_images

    oracle = runpy.run_path(str(Path(__file__).with_name("centre_oracle.py")))
    t0 = time.time()
    try:
        model = load_mae_or_gmae(args.ckpt, "gmae", "cpu")
        imgs = evenly_spaced_images(args.data, args.split, model.img_size, args.num_images)
    except GmaeError as e:
        raise SystemExit(f"centre_readout: {e}") from None
    if getattr(model, "refine_steps", 0):
        raise SystemExit("centre_readout: needs a one-pass decoder (this model refines its "
                         "Gaussians; the head's input is then not the only read-out)")  # fmt: skip
    if model.camera_model == "pinhole":
        raise SystemExit(
            f"centre_readout: needs the gmae or ortho camera, {args.ckpt} uses pinhole"
        )
    if len(imgs) < 8:
        raise SystemExit(f"centre_readout: {args.data} ({args.split}) has under 8 images")
    model.eval().requires_grad_(False)
    s = model.img_size

    kept = []
    hook = model.head.proj.register_forward_hook(lambda m, inp, out: kept.append(inp[0]))
    with torch.no_grad():
        latent, _, ids_restore = model.encode(imgs, 0.0)
        raw0 = model.forward_decoder_raw(latent, ids_restore, imgs).float()
    hook.remove()
    head_in = kept[0].float().numpy()  # [B, k, dec_dim]
    with torch.no_grad():
        start = model.project_gaussians(model.head.activate(raw0), s, s).means2d.numpy()
    _, raw = oracle["fit_per_image"](
        model, imgs, "model", args.steps, args.lr, [args.steps], progress=not args.no_progress,
        return_raw=True,
    )  # fmt: skip
    _, raw_again = oracle["fit_per_image"](
        model, imgs, "model", args.steps, args.lr, [args.steps], progress=not args.no_progress,
        return_raw=True, jitter=args.jitter, seed=args.seed + 1,
    )  # fmt: skip
    with torch.no_grad():
        fitted = model.project_gaussians(model.head.activate(raw), s, s).means2d.numpy()
        again = model.project_gaussians(model.head.activate(raw_again), s, s).means2d.numpy()
    if not np.allclose(model.head.proj(torch.from_numpy(head_in)).numpy(), raw0.numpy(), atol=1e-4):
        raise SystemExit("centre_readout: the hooked head input does not give the prediction")

    rng = np.random.default_rng(args.seed)
    train = np.zeros(len(imgs), bool)
    train[rng.permutation(len(imgs))[: len(imgs) // 2]] = True

    def specific(a: np.ndarray) -> np.ndarray:  # remove each query's mean over training images
        return a - a[train].mean(0, keepdims=True)

    move = fitted - start
    target = specific(move)
    photo = imgs.permute(0, 2, 3, 1).float().numpy()
    local = local_windows(photo, start, args.radius)
    with torch.no_grad():
        render = model.render_gaussians(model.head.activate(raw0), s, s, return_depth=False).image
    error = photo - render.permute(0, 2, 3, 1).float().numpy()
    feature_sets = {
        "decoder": specific(head_in),
        "local": specific(local),
    }
    feature_sets["decoder+local"] = np.concatenate(list(feature_sets.values()), axis=-1)
    # Not the decoder's to see (it never sees its render): does the first render's local error,
    # which drives the fit's first steps, say where the fit takes the centres?
    feature_sets["local_error"] = specific(local_windows(error, start, args.radius, False))
    rms = lambda a: float(np.sqrt((a**2).sum(-1).mean()))  # noqa: E731
    result = {
        "ckpt": str(args.ckpt),
        "source": {"data": args.data, "split": args.split},
        "n_images": len(imgs),
        "n_queries": int(start.shape[1]),
        "steps": args.steps,
        "lr": args.lr,
        "radius": args.radius,
        "jitter": args.jitter,
        "seed": args.seed,
        "move_px_rms": {
            "total": rms(move),
            "image_specific": rms(target[~train]),
            "prediction_image_specific": rms(specific(start)[~train]),
        },
        "readout": {},
    }
    for name, feats in feature_sets.items():
        result["readout"][name] = readout(feats, target, train, seed=args.seed)
    # A positive control: the same readout of the model's own image-specific centres, which its
    # head computes from these features (linear, then a sigmoid): near 1 if the readout works.
    result["readout"]["decoder->own"] = readout(
        feature_sets["decoder"], specific(start), train, seed=args.seed
    )
    result["readout"]["repeat"] = repeat_r2(target, specific(again - start), train, args.seed)
    if args.mlp:  # linear readouts bound nothing from above: does a non-linear one find more?
        result["readout_mlp"] = {
            name: mlp_readout(feats, target, train, seed=args.seed)
            for name, feats in feature_sets.items()
        }
        result["readout_mlp"]["decoder->own"] = mlp_readout(
            feature_sets["decoder"], specific(start), train, seed=args.seed
        )
    for kind in ("readout", "readout_mlp"):
        for name, r in result.get(kind, {}).items():
            how = f" (alpha {r['alpha']:g}, {r['n_features']} features)" if "alpha" in r else ""
            if "hidden" in r:
                how = f" (MLP, weight decay {r['weight_decay']:g}, {r['epochs']} epochs)"
            print(f"{name:14s} held-out R^2 {r['r2']:+.3f} "
                  f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]{how}")  # fmt: skip
    m = result["move_px_rms"]
    print(f"fitted moves (rms px): {m['total']:.2f} in all, {m['image_specific']:.2f} "
          "image-specific; the prediction's own image-specific spread "
          f"{m['prediction_image_specific']:.2f}")  # fmt: skip
    result["seconds"] = round(time.time() - t0, 1)
    gio.write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
