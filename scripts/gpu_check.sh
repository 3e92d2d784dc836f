#!/usr/bin/env bash
# One command for the day a GPU is lent: is gmae's GPU path right and how fast is it?
#
#   bash scripts/gpu_check.sh [OUT_DIR] [--dry-run]
#
# Steps (each independent, each under a timeout; a failed step does not stop the others):
#   doctor     gmae doctor: devices, CUDA toolkit, backends; builds gsplat's kernels once
#   parity     the CUDA parity test of the renderer against gsplat (tests/test_render_fast.py);
#              recorded as skipped when pytest skipped it (gsplat not installed)
#   amp_step   one bf16-autocast training step of each model (MAE, GMAE, Latent MIM): finite
#              loss, fp32 loss / Gaussian head, the render backend that ran (CPU without a GPU)
#   nccl       a 2-process NCCL pretraining run of 2 steps (torchrun), if 2 GPUs are visible
#   bench_render  gmae bench render --quick --backend gsplat,reference-cuda,fast-cuda
#              --skip-unavailable (a backend that cannot run, e.g. gsplat, is recorded as skipped)
#   bench_train   gmae bench train --device cuda --amp bf16
# Everything lands in OUT_DIR (default $OUT, else ./gpu_check): one log per step and
# gpu_check.json with every step's exit status, time, last output lines and results.
# Without a CUDA device the GPU steps are recorded as skipped (so this runs on a CPU too);
# --dry-run records every step as skipped without running it.
# Environment: PYTHON (default .venv/bin/python if present, else python3), STEP_TIMEOUT (s, 900).
# Needs only src/, tests/ and scripts/ of a checkout (PYTHONPATH=src is set here) and an
# environment with torch and gmae's dependencies: no install, no data sets.
set -u

DRY=0
DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) DIR="$arg" ;;
  esac
done
DIR="${DIR:-${OUT:-./gpu_check}}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
STEP_TIMEOUT="${STEP_TIMEOUT:-900}"
mkdir -p "$DIR/steps" || { echo "gpu_check: cannot create $DIR" >&2; exit 2; }
DIR="$(cd "$DIR" && pwd)"
# Run from a checkout without installing: the package is in src/.
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$ROOT" || exit 2

NGPU=0
if [ "$DRY" = 0 ]; then
  NGPU=$(timeout 120 "$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
fi
echo "gpu_check: $NGPU GPU(s), python $PYTHON, results in $DIR"

# step NAME NEEDS_GPUS COMMAND...: runs COMMAND under the timeout, records status and time.
step() {
  local name="$1" need="$2"
  shift 2
  local meta="$DIR/steps/$name.meta" log="$DIR/steps/$name.log"
  if [ "$DRY" = 1 ]; then
    printf 'skipped\tdry run\t0\n' > "$meta"; echo "[$name] skipped (dry run)"; return
  fi
  if [ "$NGPU" -lt "$need" ]; then
    printf 'skipped\tneeds %s CUDA device(s), %s visible\t0\n' "$need" "$NGPU" > "$meta"
    echo "[$name] skipped (needs $need GPU(s))"; return
  fi
  echo "[$name] running ..."
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=30 "$STEP_TIMEOUT" "$@" > "$log" 2>&1
  rc=$?
  local status=ok
  [ "$rc" != 0 ] && status=failed
  [ "$rc" = 124 ] && status=timeout
  printf '%s\texit %s\t%s\n' "$status" "$rc" "$(( $(date +%s) - t0 ))" > "$meta"
  echo "[$name] $status (exit $rc, $(( $(date +%s) - t0 )) s)"
}

step doctor 0 "$PYTHON" -m gmae doctor --json "$DIR/doctor.json"

step parity 1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_render_fast.py -k gsplat_parity -rs
# pytest exits 0 when every test was skipped: say so rather than report a parity that never ran.
if [ "$DRY" = 0 ] && [ -f "$DIR/steps/parity.log" ] && grep -q '^ok' "$DIR/steps/parity.meta" &&
  tail -n 1 "$DIR/steps/parity.log" | grep -q ' skipped' &&
  ! tail -n 1 "$DIR/steps/parity.log" | grep -q ' passed'; then
  why=$(grep -m 1 '^SKIPPED' "$DIR/steps/parity.log" | sed 's/^SKIPPED \[[0-9]*\] [^ ]* //')
  secs=$(cut -f 3 "$DIR/steps/parity.meta")
  printf 'skipped\tparity test skipped by pytest: %s\t%s\n' "${why:-see log}" "$secs" \
    > "$DIR/steps/parity.meta"
  echo "[parity] skipped by pytest: ${why:-see log}"
fi

step amp_step 0 "$PYTHON" - "$DIR/amp_step.json" <<'EOF'
"""One bf16 autocast training step per model on random images (tiny sizes); on a machine
without CUDA the same under CPU autocast (a check of the script itself)."""
import json
import sys

import torch

from gmae import io as gio
from gmae.models import create_model
from gmae.train.optim import build_optimizer

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cuda.matmul.allow_tf32 = True
small = dict(encoder="tiny", depth=2, img_size=64, patch_size=8, decoder_dim=64,
             decoder_depth=1, decoder_num_heads=2)
extra = {"mae": {}, "gmae": {"num_gaussians": 64}, "latent_mim": {"proj_hidden_dim": 64}}
results, ok = {}, True
for name, kw in extra.items():
    try:
        torch.manual_seed(0)
        model = create_model(name, **small, **kw).to(dev).train()
        fused = dev.type == "cuda"
        opt = build_optimizer(model, 1e-4, 0.05, (0.9, 0.95), model.no_weight_decay(), fused=fused)
        imgs = torch.rand(8, 3, 64, 64, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(imgs)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        row = {
            "device": str(dev),
            "loss": out.loss.item(),
            "loss_dtype": str(out.loss.dtype),
            "grad_norm": norm.item(),
            "finite": bool(torch.isfinite(out.loss).item() and torch.isfinite(norm).item()),
        }
        if out.raw is not None:
            row["head_dtype"] = str(out.raw.dtype)
            row["render_backend"] = model.last_render_backend
        row["ok"] = row["finite"] and row["loss_dtype"] == "torch.float32" and (
            row.get("head_dtype", "torch.float32") == "torch.float32"
        )
    except Exception as exc:  # one model failing must not hide the others
        row = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    ok &= row["ok"]
    results[name] = row
    print(name, json.dumps(row))
gio.write_json(sys.argv[1], results)
sys.exit(0 if ok else 1)
EOF

NCCL_DIR="$DIR/nccl"
step nccl 2 bash -c '
  set -u
  D="$1"; PY="$2"
  rm -rf "$D" && mkdir -p "$D/images/a" "$D/images/b" || exit 2
  "$PY" - "$D/images" <<PYEOF || exit 2
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(32):
    folder = sys.argv[1] + "/" + "ab"[i % 2]
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
PYEOF
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m gmae pretrain \
    --config gmae_tiny_cifar10 --out "$D/run" --max-steps 2 \
    --set data.spec=imagefolder:$D/images data.val_split=train data.img_size=32 \
      data.num_workers=1 optim.batch_size=4 run.device=cuda run.amp=bf16 run.log_every=1 \
      run.vis_images=0 run.health_every=-1 || exit 1
  test -f "$D/run/last.pt" && grep -q render_backend "$D/run/metrics.jsonl"
' nccl "$NCCL_DIR" "$PYTHON"

step bench_render 1 "$PYTHON" -m gmae bench render --quick \
  --backend gsplat,reference-cuda,fast-cuda --skip-unavailable --json "$DIR/bench_render.json"

step bench_train 1 "$PYTHON" -m gmae bench train --device cuda --amp bf16 \
  --json "$DIR/bench_train.json"

# One JSON with everything (written even when steps failed).
"$PYTHON" - "$DIR" <<'EOF'
import json
import os
import sys
import time
from pathlib import Path

d = Path(sys.argv[1])
report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": {}}
for meta in sorted((d / "steps").glob("*.meta")):
    name = meta.stem
    status, detail, seconds = meta.read_text().rstrip("\n").split("\t")
    log = d / "steps" / f"{name}.log"
    row = {"status": status, "detail": detail, "seconds": int(seconds)}
    if log.is_file():
        row["tail"] = log.read_text(errors="replace").splitlines()[-25:]
    result = d / f"{name}.json"
    if result.is_file():
        try:
            row["result"] = json.loads(result.read_text())
        except ValueError as exc:
            row["result_error"] = str(exc)
    report["steps"][name] = row
statuses = [r["status"] for r in report["steps"].values()]
report["counts"] = {s: statuses.count(s) for s in ("ok", "failed", "skipped")}
report["ok"] = report["counts"]["failed"] == 0
# "complete": nothing skipped, so every check really ran (a GPU without gsplat skips parity).
report["complete"] = report["ok"] and report["counts"]["skipped"] == 0
tmp = d / f".gpu_check.json.{os.getpid()}.tmp"
tmp.write_text(json.dumps(report, indent=2) + "\n")
os.replace(tmp, d / "gpu_check.json")
summary = ", ".join(f"{k} {v['status']}" for k, v in report["steps"].items())
state = "complete" if report["complete"] else ("incomplete" if report["ok"] else "FAILED")
print(f"gpu_check: {state}: {summary}; wrote {d / 'gpu_check.json'}")
EOF
