#!/usr/bin/env bash
# Reproduces the CIFAR-10 table in docs/results.md: a GMAE / MAE pair pretrained at one CPU budget
# (the *_tiny_cifar10 presets shortened to the Imagenette-64 CPU settings: 2 epochs, batch 128,
# base lr 1e-3, 0.5 warmup epoch, decoder 128 wide with 4 heads), then kNN, linear probe,
# reconstruction and fine-tuning for both and for a random encoder. Each result is a JSON file
# under $OUT holding its own wall time ("seconds").
#   bash scripts/results_cifar10.sh                          # everything (about 4 h on 2 cores:
#                  pretraining about 45 min per method, each kNN / linear probe about 15-20 min)
#   bash scripts/results_cifar10.sh pretrain-gmae gmae       # some parts: pretrain-gmae
#                 pretrain-mae gmae mae random ft-gmae ft-mae ft-random
# Fine-tuning uses the CPU preset on a seeded 10,000-image subset of the training set (the full
# test set is still the evaluation set): the full 50,000 would take about 80 min per encoder here.
set -euo pipefail
cd "$(dirname "$0")/.."
GMAE=${GMAE:-.venv/bin/gmae}
RUNS=${RUNS:-runs}
OUT=${OUT:-results/cifar10}
G=${G:-$RUNS/gmae_tiny_cifar10_cpu/last.pt}
M=${M:-$RUNS/mae_tiny_cifar10_cpu/last.pt}
mkdir -p "$OUT" "$RUNS"

PARTS=("$@")
[ ${#PARTS[@]} = 0 ] && PARTS=(pretrain-gmae pretrain-mae gmae mae random ft-gmae ft-mae ft-random)
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

# The CPU budget, identical for both methods.
CPU=(optim.epochs=2 optim.batch_size=128 optim.base_lr=1.0e-3 optim.warmup_epochs=0.5
     model.decoder_dim=128 model.decoder_num_heads=4 data.num_workers=1 run.ckpt_every=1)
for name in gmae mae; do
    want pretrain-$name || continue
    "$GMAE" pretrain --config ${name}_tiny_cifar10 --set "${CPU[@]}" \
        --out "$RUNS/${name}_tiny_cifar10_cpu" --resume
done

encoder() {  # sets the array ck
    case $1 in
        gmae) ck=(--ckpt "$G") ;;
        mae) ck=(--ckpt "$M") ;;
        random) ck=(--ckpt random --config gmae_tiny_cifar10) ;;
    esac
}

for name in gmae mae random; do
    want $name || continue
    encoder $name
    "$GMAE" eval knn "${ck[@]}" --data cifar10 --json "$OUT/knn_$name.json"
    "$GMAE" eval linprobe "${ck[@]}" --data cifar10 --json "$OUT/linprobe_$name.json"
    if [ $name != random ]; then
        "$GMAE" eval recon "${ck[@]}" --data cifar10 --num-images 1000 --json "$OUT/recon_$name.json"
    fi
done

for name in gmae mae random; do
    want ft-$name || continue
    encoder $name
    "$GMAE" eval finetune "${ck[@]}" --data cifar10 --preset cpu --num-workers 1 --limit 10000 \
        --json "$OUT/finetune_$name.json"
done
echo "results in $OUT"
