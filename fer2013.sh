#!/usr/bin/env bash
# FER2013 from random initialisation on a CPU: the released model, and the imbalance comparison.
#
#   python datasets.py fer2013 --root FER2013_DIR --out data/fer2013    # train/ + test/ (or publictest/) JPEG folders
#   bash fer2013.sh release [INDEX_DIR] [RESULTS]   # the released model: 30 epochs, then pretrained/ (.pt, .onnx)
#   bash fer2013.sh compare [INDEX_DIR] [RESULTS]   # CE / focal + alpha / balanced sampler / logit adjustment, 2 seeds
#
# INDEX_DIR (default data/fer2013) holds train.csv, val.csv (PublicTest) and classes.txt; RESULTS defaults to
# results/fer2013. Runs resume where they stopped when the command is given again. TRAIN_ARGS adds train.py flags
# (e.g. TRAIN_ARGS="--device cuda --workers 8" on a GPU box); WORKERS sets the loader processes (default 1).
set -euo pipefail
cd "$(dirname "$0")"
die() { echo "fer2013.sh: error: $*" >&2; exit 1; }

MODE=${1:-}
INDEX=${2:-data/fer2013}
RESULTS=${3:-results/fer2013}
case "$MODE" in release|compare) ;; -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "first argument: release or compare (see --help), not '${MODE}'" ;; esac
for f in train.csv val.csv classes.txt; do
  [ -f "$INDEX/$f" ] || die "$INDEX/$f not found; make it with: python datasets.py fer2013 --root FER2013_DIR --out $INDEX"
done

# The released model's recipe. Not the thesis's (224 px, ImageNet weights, 30 epochs of AdamW at 1e-4): FER2013 is
# 48 px grayscale and no ImageNet weights can be had offline, so a small VGG-style net trains from random init with
# the augmentation such nets need (random affine and erasing) and a higher learning rate; bfloat16 autocast runs on
# CPUs with AVX-512 BF16 / AMX and on GPUs (elsewhere on a CPU, float32 at about half the speed).
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
RECIPE=(--model vgg_face48 --weights none --img-size 48 --grayscale --batch-size 64 --lr 2e-3 --weight-decay 0.05
        --warmup-epochs 1 --jitter 0.2,0.2,0,0 --affine 10,0.1,0.1 --erase 0.25 --amp-dtype bfloat16 --channels-last
        --workers "${WORKERS:-1}" --log-interval-s 30)

train() {  # train OUT EPOCHS FLAGS...: one run, resumed when its last.pt exists, skipped when it finished
  local out=$1 epochs=$2; shift 2
  local resume=(); [ -f "$out/last.pt" ] && resume=(--resume)
  python train.py --train-csv "$INDEX/train.csv" --val-csv "$INDEX/val.csv" "${RECIPE[@]}" --epochs "$epochs" \
    --patience "$epochs" --out "$out" "$@" "${resume[@]}" "${EXTRA[@]}"
}

evaluate() {  # evaluate CKPT OUT FLAGS...: PublicTest metrics with intervals, confusion matrix, predictions.csv
  local ckpt=$1 out=$2; shift 2
  python evaluate.py --ckpt "$ckpt" --val-csv "$INDEX/val.csv" --workers 0 --out "$out" "$@" > "$out.txt"
  tail -n 3 "$out.txt"
}

if [ "$MODE" = release ]; then
  train "$RESULTS/release" 30
  mkdir -p pretrained
  cp "$RESULTS/release/best.pt" pretrained/fer2013.pt.tmp && mv pretrained/fer2013.pt.tmp pretrained/fer2013.pt
  evaluate pretrained/fer2013.pt "$RESULTS/release/eval"
  python export.py --ckpt pretrained/fer2013.pt --out pretrained/fer2013.onnx --val-csv "$INDEX/val.csv"
  cp "$RESULTS/release/eval/confusion_matrix_normalized.png" pretrained/confusion_matrix.png
  exit 0
fi

# The comparison: the release recipe on a 5-epoch schedule (a run takes ~5 min on 2 cores instead of ~30), two
# seeds; logit adjustment is post-hoc, so it scores the cross-entropy runs again (tau 1).
EPOCHS=${EPOCHS:-5}
for seed in 42 43; do
  train "$RESULTS/ce_seed$seed" "$EPOCHS" --seed "$seed" --experiment "ce_seed$seed"
  train "$RESULTS/focal_seed$seed" "$EPOCHS" --seed "$seed" --loss focal --alpha auto --experiment "focal_seed$seed"
  train "$RESULTS/balanced_seed$seed" "$EPOCHS" --seed "$seed" --sampler balanced --experiment "balanced_seed$seed"
done
for seed in 42 43; do
  for config in ce focal balanced; do
    evaluate "$RESULTS/${config}_seed$seed/best.pt" "$RESULTS/eval_${config}_seed$seed"
  done
  evaluate "$RESULTS/ce_seed$seed/best.pt" "$RESULTS/eval_logit_adjust_seed$seed" --logit-adjust 1
  for config in focal balanced logit_adjust; do  # paired test on the same PublicTest images: config - CE
    python evaluate.py --predictions "$RESULTS/eval_${config}_seed$seed/predictions.csv" \
      --compare "$RESULTS/eval_ce_seed$seed/predictions.csv" --out "$RESULTS/compare_${config}_seed$seed" \
      > "$RESULTS/compare_${config}_seed$seed.txt"
    echo "$config vs ce, seed $seed:"; tail -n 4 "$RESULTS/compare_${config}_seed$seed.txt"
  done
done
