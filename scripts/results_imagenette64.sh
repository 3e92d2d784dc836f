#!/usr/bin/env bash
# Reproduces the Imagenette-64 numbers in docs/results.md and docs/zeroshot.md from the
# committed checkpoints (or any pair given as G=... M=...). Each result is a JSON file under
# $OUT holding its own wall time ("seconds"). About 30-40 min on a 2-core CPU, plus about
# 17 min per fine-tune (parts ft-*).
#   bash scripts/results_imagenette64.sh                 # everything
#   bash scripts/results_imagenette64.sh mae random      # some parts: gmae mae random lmim zeroshot
#                                                        #   (= edges figure-ground stats order)
#                                                        #   ft-gmae ft-mae ft-random ft-lmim
#                                                        #   mae-pix (ablation, not in the default)
#                                                        #   gmae-e20 mae-e20 (budget, not in the default)
#   LIMIT=500 bash scripts/results_imagenette64.sh       # a quick smoke run on 500 images per split
set -euo pipefail
cd "$(dirname "$0")/.."
GMAE=${GMAE:-.venv/bin/gmae}
G=${G:-checkpoints/gmae_tiny_imagenette64.safetensors}
M=${M:-checkpoints/mae_tiny_imagenette64.safetensors}
L=${L:-checkpoints/lmim_tiny_imagenette64.safetensors}  # Latent MIM (part "lmim", not in the default set)
# Zero-shot uses the 20-epoch pair (parts gmae-e20 / mae-e20 train and publish it).
ZG=${ZG:-checkpoints/gmae_tiny_imagenette64_e20.safetensors}
ZM=${ZM:-checkpoints/mae_tiny_imagenette64_e20.safetensors}
OUT=${OUT:-results/imagenette64}
# ZT names a second zero-shot model's files in the same $OUT: boundaries_ZT_<method>.json,
# paired_ZT_*.json, figure_ground_ZT.json, stats_ZT.json, order_ZT.json (scripts/results_table.py
# --tag ZT).
ZT=${ZT:-}
LIMIT=${LIMIT:-0}
DATA=imagenette-128
mkdir -p "$OUT"
lim=()
[ "$LIMIT" != 0 ] && lim=(--limit "$LIMIT")

PARTS=("$@")
[ ${#PARTS[@]} = 0 ] && PARTS=(gmae mae random zeroshot ft-gmae ft-mae ft-random)
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

# The encoder to evaluate: sets the array ck.
encoder() {
    case $1 in
        gmae) ck=(--ckpt "$G") ;;
        mae) ck=(--ckpt "$M") ;;
        lmim) ck=(--ckpt "$L") ;;
        random) ck=(--ckpt random --config gmae_tiny_imagenette64) ;;
    esac
}

# Frozen-encoder protocols for one row: frozen ROW CKPT-ARGS... writes knn_ROW / linprobe_ROW;
# recon ROW CKPT-ARGS... writes recon_ROW (pixel models only).
frozen() {
    local row=$1
    shift
    "$GMAE" eval knn "$@" --data $DATA --img-size 64 "${lim[@]}" --json "$OUT/knn_$row.json"
    "$GMAE" eval linprobe "$@" --data $DATA --img-size 64 "${lim[@]}" \
        --json "$OUT/linprobe_$row.json"
}
recon() {
    local row=$1
    shift
    "$GMAE" eval recon "$@" --data $DATA --img-size 64 --num-images 1000 \
        --json "$OUT/recon_$row.json"
}

for name in gmae mae random lmim; do
    want $name || continue
    encoder $name
    frozen $name "${ck[@]}"
    if [ $name = gmae ] || [ $name = mae ]; then  # pixel reconstructions
        recon $name "${ck[@]}"
    fi
done

# End-to-end fine-tuning, the CPU preset (3 epochs, MAE's recipe otherwise; docs/evaluation.md).
for name in gmae mae random lmim; do
    want ft-$name || continue
    encoder $name
    "$GMAE" eval finetune "${ck[@]}" --data $DATA --img-size 64 --preset cpu --num-workers 1 \
        "${lim[@]}" --json "$OUT/finetune_$name.json"
done

# Ablation for the GMAE-MAE gap (docs/results.md): MAE with GMAE's target, plain pixels instead
# of per-patch normalised ones, pretrained at the same budget (about 45 min), then kNN, linear
# and reconstruction PSNR (no borrowed patch statistics: comparable with GMAE's).
if want mae-pix; then
    RUN=${RUNS:-runs}/mae_tiny_imagenette64_pix
    "$GMAE" pretrain --config mae_tiny_imagenette64 --set model.norm_pix_loss=false \
        --out "$RUN" --resume
    frozen mae_pix --ckpt "$RUN/last.pt"
    recon mae_pix --ckpt "$RUN/last.pt"
fi

# Budget: the GMAE / MAE pair pretrained twice as long (20 epochs, 1,460 steps; about 1.1 h each
# with one thread while both run), published to checkpoints/*_e20 and evaluated like the
# 10-epoch pair. A finished run (checkpoint-0020.pt present) is not touched again.
for name in gmae mae; do
    want $name-e20 || continue
    RUN=${RUNS:-runs}/${name}_tiny_imagenette64_e20
    CK=checkpoints/${name}_tiny_imagenette64_e20.safetensors
    if [ ! -f "$RUN/checkpoint-0020.pt" ]; then
        "$GMAE" pretrain --config ${name}_tiny_imagenette64 --set optim.epochs=20 --out "$RUN" --resume
    fi
    if [ ! -f "$CK" ]; then
        .venv/bin/python scripts/publish_checkpoint.py "$RUN" --command \
            "gmae pretrain --config ${name}_tiny_imagenette64 --set optim.epochs=20 --out $RUN"
    fi
    frozen ${name}_e20 --ckpt "$CK"
    recon ${name}_e20 --ckpt "$CK"
done

# Zero-shot (GMAE), parts edges figure-ground stats order (zeroshot = all four): BSDS500 val edges
# scored with our BSDS benchmark and paired against the two controls (shuffled photos, Gaussians
# grouped by brightness), Weizmann horse figure-ground, Gaussian statistics, and what the depth
# order is worth to the reconstruction (the same Gaussians composited in other orders).
zs() { want zeroshot || want "$1"; }
ZS="$OUT/zeroshot${ZT:+_$ZT}"
t=${ZT:+${ZT}_}  # file-name tag
zlim=()
[ "$LIMIT" != 0 ] && zlim=(--limit 10)
if zs edges; then
    BSDS=$(.venv/bin/python -c "from gmae.data import dataset_root; print(dataset_root('bsds500'))")
    "$GMAE" zeroshot edges --ckpt "$ZG" --images "$BSDS/images/val" --out "$ZS/edges" \
        --layers 4 8 16 32 --baselines canny sobel shuffled luminance_order "${zlim[@]}"
    for method in gmae_L4 gmae_L8 gmae_L16 gmae_L32 gmae_combined canny sobel shuffled \
        luminance_order; do
        "$GMAE" eval boundaries --pred "$ZS/edges/$method" --gt "$BSDS/groundTruth/val" \
            --workers 2 --json "$OUT/boundaries_$t$method.json"
    done
    for control in shuffled luminance_order; do
        .venv/bin/python scripts/paired_compare.py "$OUT/boundaries_${t}gmae_combined.json" \
            "$OUT/boundaries_$t$control.json" --json "$OUT/paired_${t}gmae_combined_vs_$control.json"
    done
fi
if zs figure-ground; then
    HORSE=$(.venv/bin/python -c "from gmae.data import dataset_root; print(dataset_root('weizmann-horse'))")
    "$GMAE" zeroshot figure-ground --ckpt "$ZG" --mae-ckpt "$ZM" --images "$HORSE/images" \
        --masks "$HORSE/masks" --out "$ZS/figure_ground" --json "$OUT/figure_ground${ZT:+_$ZT}.json"
fi
if zs stats; then
    # 500 images for the 10- and 20-epoch models' files, 256 for the 40-epoch ones (STATS_N=256).
    "$GMAE" zeroshot stats --ckpt "$ZG" --data $DATA --split val --num-images "${STATS_N:-500}" \
        --json "$OUT/stats${ZT:+_$ZT}.json"
fi
if zs order; then
    "$GMAE" zeroshot order --ckpt "$ZG" --data $DATA --split val --num-images "${ORDER_N:-256}" \
        --json "$OUT/order${ZT:+_$ZT}.json" --no-progress
fi
echo "results in $OUT"
