#!/usr/bin/env bash
# The command that produced results/health_sweep (run on a lent H200 from the repository root, with
# the packed data in .gpu/imagenette: python scripts/pack_gpu_data.py --src <imagenette-128> --out .gpu/imagenette --quality 75,
# and a copy of src in .gpu/src, health_sweep.py in .gpu/). On a CPU run health_sweep.py directly with --device cpu.
set -u
source "$(dirname "$0")/gpu_env.sh"
T0=$(date +%s)
python3 .gpu/health_sweep.py --out $R/sweep --variants all --epochs 10 --parallel 10 --time-limit ${P1:-170} \
  --data $D --device cuda --score-images 100 --set data.num_workers=1 --set run.ckpt_every=100 \
  --gmae-set model.render_backend=reference 2>&1 | grep -v "^recon\|it/s\]" | tail -n 25
echo "phase 1 took $(( $(date +%s) - T0 )) s"
LEFT=$(( ${BUDGET:-540} - ($(date +%s) - T0) - 45 ))
echo "phase 2 time limit $LEFT s"
python3 .gpu/health_sweep.py --out $R/flag --pick $R/sweep/sweep.json --variants mae mae_pix --epochs ${E2:-40} \
  --parallel 3 --time-limit $LEFT --data $D --device cuda --score-images 100 --set data.num_workers=4 \
  --set run.ckpt_every=100 --gmae-set model.render_backend=reference 2>&1 | grep -v "^recon\|it/s\]" | tail -n 12
echo "total $(( $(date +%s) - T0 )) s"
cd $R && tar czf $OUT/runs.tar.gz --exclude='*.pt' --exclude='*.safetensors' --exclude='tb' sweep flag
for f in $R/flag/*/*.safetensors; do cp $f $OUT/; done
ls -la $OUT
