#!/usr/bin/env bash
# The device run behind docs/results.md "A layout that follows the image" (the second health sweep)
# and the dead-leaves pair of docs/occlusion.md. Run from the repository root of a lent GPU machine
# with .gpu/ prepared as for scripts/health_sweep_gpu.sh (packed Imagenette in .gpu/imagenette, a
# snapshot of src in .gpu/src, scripts/health_sweep.py in .gpu/). Everything it keeps goes to $OUT.
#   phase 1: the centre sweep (health_sweep.py --variants centre, 10 epochs, time-limited);
#   phase 2: the sweep's pick at 40 epochs (the flagship budget) and, beside it, GMAE and MAE on
#            the dead-leaves stream (one pass over DL_N scenes), all time-limited.
set -u
source "$(dirname "$0")/gpu_env.sh"
mkdir -p $R/dl
T0=$(date +%s)
BUDGET=${BUDGET:-560}
python3 .gpu/health_sweep.py --out $R/centre --variants centre --epochs 10 --parallel 8 \
  --time-limit ${P1:-180} --data $D --device cuda --score-images 100 --set data.num_workers=1 \
  --set run.ckpt_every=100 --gmae-set model.render_backend=reference 2>&1 | grep -v "^recon\|it/s\]" | tail -n 14
echo "phase 1 took $(( $(date +%s) - T0 )) s"
LEFT=$(( BUDGET - ($(date +%s) - T0) - 50 ))
echo "phase 2 time limit $LEFT s"
DL_PIDS=()
if [ "${DL:-1}" = 1 ]; then  # dead leaves: one pass over DL_N new scenes, beside phase 2
  for m in gmae mae; do
    timeout -s TERM -k 20 $LEFT python3 -m gmae pretrain --config ${m}_tiny_deadleaves64 \
      --out $R/dl/$m --set data.spec=deadleaves:size=64,n=${DL_N:-98304} --set optim.epochs=1 \
      --set data.num_workers=${DL_WORKERS:-3} $( [ $m = gmae ] && echo --set model.render_backend=reference ) \
      > $R/dl/$m.log 2>&1 &
    DL_PIDS+=($!)
  done
fi
python3 .gpu/health_sweep.py --out $R/flag --pick $R/centre/sweep.json --epochs 40 --parallel 1 \
  --time-limit $LEFT --data $D --device cuda --score-images 100 --set data.num_workers=6 \
  --set run.ckpt_every=100 --gmae-set model.render_backend=reference 2>&1 | grep -v "^recon\|it/s\]" | tail -n 6
for p in "${DL_PIDS[@]}"; do wait $p; done
for m in gmae mae; do
  [ -f $R/dl/$m/last.pt ] && python3 -m gmae export checkpoint --ckpt $R/dl/$m/last.pt \
    --out $OUT/${m}_tiny_deadleaves64.safetensors --fp16
  tail -c 300 $R/dl/$m.log
done
echo "total $(( $(date +%s) - T0 )) s"
cd $R && tar czf $OUT/runs.tar.gz --exclude='*.pt' --exclude='*.safetensors' --exclude='tb' centre flag dl
for f in $R/flag/*/*.safetensors; do cp $f $OUT/; done
ls -la $OUT
