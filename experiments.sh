#!/usr/bin/env bash
# Replays the thesis end to end: the seven training runs, the inference-side rescue
# (Table 6), the efficiency benchmark (Table 7), and results/summary.md with our numbers beside
# the thesis's.
#
#   bash experiments.sh --train-csv train.csv --val-csv val.csv [--data-root DIR] [--results DIR]
#   bash experiments.sh --demo            # built-in synthetic set, CPU, small images, ~8 min on 2 cores
#   bash experiments.sh ... --seeds 42,43,44   # every run once per seed, each seed in RESULTS/seed<N>/
#
# Every flag also reads from the environment (TRAIN_CSV, VAL_CSV, DATA_ROOT, RESULTS, EPOCHS,
# DEVICE, WORKERS, BATCH_SIZE, IMG_SIZE, WEIGHTS, SEEDS). WEIGHTS is imagenet (default), none, or a
# folder holding one torchvision state dict per backbone (resnet50.pt, convnext_tiny.pt); the demo
# makes such a folder itself (see below). Re-running is safe: finished runs are skipped,
# an interrupted run resumes from its last.pt (mid-epoch too), a finished run whose settings changed
# is an error, and a second experiments.sh on the same results folder refuses to start.
# AffectNet's full release (whole photos + face boxes): crop the faces once first, then train on the
# crops, e.g. python datasets.py prepare --csv data/train.csv --out data/train_224 (see the README).
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "experiments.sh: error: $*" >&2; exit 1; }

DEMO=0
TRAIN_CSV=${TRAIN_CSV:-}
VAL_CSV=${VAL_CSV:-}
DATA_ROOT=${DATA_ROOT:-}
RESULTS=${RESULTS:-}
EPOCHS=${EPOCHS:-}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-}
BATCH_SIZE=${BATCH_SIZE:-}
IMG_SIZE=${IMG_SIZE:-}
WEIGHTS=${WEIGHTS:-}
SEEDS=${SEEDS:-42}
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=1 ;;
    --train-csv) TRAIN_CSV=$2; shift ;;
    --val-csv) VAL_CSV=$2; shift ;;
    --data-root) DATA_ROOT=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --epochs) EPOCHS=$2; shift ;;
    --device) DEVICE=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --batch-size) BATCH_SIZE=$2; shift ;;
    --img-size) IMG_SIZE=$2; shift ;;
    --weights) WEIGHTS=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "experiments.sh: error: unknown flag '$1'" >&2; usage 2 ;;
  esac
  shift
done
[[ "$SEEDS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--seeds wants comma-separated integers such as 42,43,44, not '$SEEDS'"
IFS=, read -r -a SEED_LIST <<< "$SEEDS"
[ "$(printf '%s\n' "${SEED_LIST[@]}" | sort -u | wc -l)" -eq "${#SEED_LIST[@]}" ] || die "--seeds lists a seed twice: $SEEDS"
# One seed: the runs go straight into RESULTS, as before. Several: each seed is a full results tree
# RESULTS/seed<N>/ (runs and rescue); the benchmark (seed-independent) and the summary stay in RESULTS.
seed_dir() { if [ "${#SEED_LIST[@]}" -gt 1 ]; then echo "$RESULTS/seed$1"; else echo "$RESULTS"; fi; }

# Settings that differ between the demo and a real run. Everything else is the thesis recipe.
BENCH_ARGS=()
DEMO_TRAIN_ARGS=()
if [ "$DEMO" = 1 ]; then
  DEMO_DIR=${DEMO_DIR:-demo_data}
  TRAIN_CSV=${TRAIN_CSV:-$DEMO_DIR/train.csv}
  VAL_CSV=${VAL_CSV:-$DEMO_DIR/val.csv}
  RESULTS=${RESULTS:-results/demo}
  EPOCHS=${EPOCHS:-2}
  DEVICE=cpu
  WORKERS=${WORKERS:-0}  # on 2 cores a loader process competes with the 2 compute threads
  BATCH_SIZE=${BATCH_SIZE:-32}
  IMG_SIZE=${IMG_SIZE:-32}
  # A miniature of the thesis's setting: the seven runs fine-tune pretrained backbones with the thesis's own
  # learning rates, warmup, EMA and clipping. Their "ImageNet" is a separate, larger and balanced synthetic set
  # (its own seed, none of the demo's images) that each backbone is first trained on from random init.
  PRETRAIN_DIR=${PRETRAIN_DIR:-$DEMO_DIR/pretrain}
  PRETRAIN_PER_CLASS=${PRETRAIN_PER_CLASS:-1000}
  PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3}
  WEIGHTS=${WEIGHTS:-$PRETRAIN_DIR/backbones}
  BENCH_ARGS=(--warmup 5 --iters 20 --mode eager)
else
  [ -n "$TRAIN_CSV" ] || die "no training CSV: pass --train-csv FILE or set TRAIN_CSV (or run with --demo)"
  [ -n "$VAL_CSV" ] || die "no validation CSV: pass --val-csv FILE or set VAL_CSV (or run with --demo)"
  RESULTS=${RESULTS:-results}
  EPOCHS=${EPOCHS:-30}
  BATCH_SIZE=${BATCH_SIZE:-128}
  IMG_SIZE=${IMG_SIZE:-224}
  WEIGHTS=${WEIGHTS:-imagenet}
  BENCH_ARGS=(--mode both)
fi

# One experiments.sh per results folder: two would train the same runs into the same files. flock(1) holds the
# lock on fd 9 until this script and the runs it started end (the kernel drops it if they are killed).
mkdir -p "$RESULTS" || die "cannot create the results folder $RESULTS"
LOCK="$RESULTS/.experiments.lock"
if command -v flock > /dev/null; then
  exec 9>> "$LOCK" || die "cannot write $LOCK"
  if ! flock -n 9; then
    die "another experiments.sh is running on $RESULTS ($(cat "$LOCK" 2> /dev/null || echo 'pid unknown')); wait for it to end, or pass --results DIR"
  fi
  echo "pid $$ on $(hostname), started $(date '+%Y-%m-%d %H:%M:%S')" > "$LOCK"
else
  echo "experiments.sh: note: flock(1) not found, so a second experiments.sh on $RESULTS is not refused" >&2
fi

if [ "$DEMO" = 1 ] && { [ ! -f "$DEMO_DIR/train.csv" ] || [ ! -f "$DEMO_DIR/val.csv" ]; }; then
  echo "==> building the demo set in $DEMO_DIR"
  # Half the default size: 12 images each of disgust and contempt, in Table 2's proportions, 160 to validate.
  python datasets.py demo --out "$DEMO_DIR" --seed 42 --min-train-per-class 12 --val-per-class 20 --img-size 64
fi
[ -f "$TRAIN_CSV" ] || die "training CSV not found: $TRAIN_CSV"
[ -f "$VAL_CSV" ] || die "validation CSV not found: $VAL_CSV"

COMMON=(--train-csv "$TRAIN_CSV" --val-csv "$VAL_CSV" --epochs "$EPOCHS" --batch-size "$BATCH_SIZE"
        --img-size "$IMG_SIZE" --device "$DEVICE")
[ -n "$DATA_ROOT" ] && COMMON+=(--data-root "$DATA_ROOT")
[ -n "$WORKERS" ] && COMMON+=(--workers "$WORKERS")
EVAL_DATA=(--val-csv "$VAL_CSV" --device "$DEVICE")
[ -n "$DATA_ROOT" ] && EVAL_DATA+=(--data-root "$DATA_ROOT")
[ -n "$WORKERS" ] && EVAL_DATA+=(--workers "$WORKERS")

# --weights for a backbone: imagenet / none as they are, or that backbone's file in the WEIGHTS folder.
case $WEIGHTS in
  imagenet|none) weights() { echo "$WEIGHTS"; } ;;
  *) [ ! -f "$WEIGHTS" ] || die "--weights wants imagenet, none or a folder holding resnet50.pt and convnext_tiny.pt (torchvision state dicts), not the file $WEIGHTS"
     weights() { echo "$WEIGHTS/$1.pt"; } ;;
esac

# One train.py run into a folder: skipped when finished (train.py --resume says so and exits 0), resumed
# when interrupted, started fresh otherwise. $1 = what to call it in messages, $2 = the folder.
train() {
  local name=$1 out=$2; shift 2
  local resume=() status=0
  [ -f "$out/last.pt" ] && resume=(--resume)
  echo
  echo "==> [$name] python train.py $* --out $out ${resume[*]}"
  python train.py "$@" --out "$out" "${resume[@]}" || status=$?
  case $status in
    0) ;;
    130|143) die "training run $name stopped by a signal; $out/last.pt is consistent: re-run this script to resume it" ;;
    *) die "training run $name failed (see $out/train.log); re-run this script to resume it" ;;
  esac
}

# One thesis run, once per seed.
run() {
  local id=$1; shift
  local seed
  for seed in "${SEED_LIST[@]}"; do
    train "$id, seed $seed" "$(seed_dir "$seed")/$id" "${COMMON[@]}" "$@" --seed "$seed" --experiment "$id"
  done
}

START=$(date +%s)

# 0. Demo only (unless --weights names other weights): pretrain each backbone the seven runs use, once
# (skipped when its file exists).
if [ "$DEMO" = 1 ] && [ "$WEIGHTS" = "$PRETRAIN_DIR/backbones" ]; then
  if [ ! -f "$PRETRAIN_DIR/train.csv" ] || [ ! -f "$PRETRAIN_DIR/val.csv" ]; then
    echo "==> building the pretraining set in $PRETRAIN_DIR"
    python datasets.py demo --out "$PRETRAIN_DIR" --seed 7 --balanced --min-train-per-class "$PRETRAIN_PER_CLASS" \
      --val-per-class 20 --img-size 64
  fi
  for backbone in resnet50 convnext_tiny; do
    if [ -f "$(weights "$backbone")" ]; then echo "==> pretrained $backbone: $(weights "$backbone")"; continue; fi
    # Random init, so a from-scratch rate (2e-3) and a short warmup; batch 64 fills the CPU better than 32.
    train "pretrain $backbone" "$PRETRAIN_DIR/runs/$backbone" --train-csv "$PRETRAIN_DIR/train.csv" \
      --val-csv "$PRETRAIN_DIR/val.csv" --model "$backbone" --weights none --epochs "$PRETRAIN_EPOCHS" \
      --batch-size 64 --lr 2e-3 --warmup-epochs 0.3 --img-size "$IMG_SIZE" --device cpu --workers "$WORKERS" \
      --seed 7 --experiment "pretrain_$backbone"
    python export.py --ckpt "$PRETRAIN_DIR/runs/$backbone/best.pt" --backbone-out "$(weights "$backbone")" \
      || die "could not write the pretrained $backbone backbone"
    # The backbone file is all the seven runs read; the pretraining run's checkpoints would keep ~0.4 GB more.
    rm -f "$PRETRAIN_DIR/runs/$backbone/last.pt" "$PRETRAIN_DIR/runs/$backbone/best.pt"
  done
fi

echo "==> results in $RESULTS (train: $TRAIN_CSV, val: $VAL_CSV, epochs: $EPOCHS, device: $DEVICE, seeds: $SEEDS)"

# 1. The seven thesis runs, in the thesis's order, with the thesis's learning rates.
run baseline_resnet50_ce_run1                     --model resnet50 --weights "$(weights resnet50)" --loss ce --lr 1e-4
run convnext_tiny_baseline_ce_run1                --model convnext_tiny --weights "$(weights convnext_tiny)" --loss ce \
    --lr 1e-4
run convnext_tiny_transformer_ce_run1             --model convnext_tiny_transformer --weights "$(weights convnext_tiny)" \
    --blocks 1 --loss ce --lr 1e-4
run convnext_tiny_transformer_focal_alpha_run1    --model convnext_tiny_transformer --weights "$(weights convnext_tiny)" \
    --blocks 1 --loss focal --alpha auto --lr 1e-4
run convnext_tiny_baseline_focal_alpha_run1       --model convnext_tiny --weights "$(weights convnext_tiny)" \
    --loss focal --alpha auto --lr 1e-4
run convnext_tiny_transformer_focal_alpha_run2    --model convnext_tiny_transformer --weights "$(weights convnext_tiny)" \
    --blocks 2 --loss focal --alpha auto --lr 1e-4
run convnext_tiny_transformer_focal_alpha_ema_run3 --model convnext_tiny_transformer --weights "$(weights convnext_tiny)" \
    --blocks 2 --loss focal --alpha auto --lr 5e-5 --ema --warmup-epochs 1 --clip-grad 1.0

RUN_IDS=(baseline_resnet50_ce_run1 convnext_tiny_baseline_ce_run1 convnext_tiny_transformer_ce_run1
         convnext_tiny_transformer_focal_alpha_run1 convnext_tiny_baseline_focal_alpha_run1
         convnext_tiny_transformer_focal_alpha_run2 convnext_tiny_transformer_focal_alpha_ema_run3)

# 2. Inference-side rescue (Table 6): ensemble and flip TTA on the two strongest hybrids, and the
# single checkpoint with logit adjustment (tau 1, the textbook value), for every seed.
for seed in "${SEED_LIST[@]}"; do
  SEED_RESULTS=$(seed_dir "$seed")
  echo
  echo "==> rescue evaluation (Table 6), seed $seed"
  # The first checkpoint is the "single best hybrid" of Table 6: the EMA run.
  python ensemble_tta.py --ckpt "$SEED_RESULTS/convnext_tiny_transformer_focal_alpha_ema_run3/best.pt" \
    "$SEED_RESULTS/convnext_tiny_transformer_focal_alpha_run2/best.pt" "${EVAL_DATA[@]}" \
    --table --logit-adjust 1 --out "$SEED_RESULTS/rescue" || die "rescue evaluation failed"
done

# 3. Efficiency benchmark (Table 7) over the seven best checkpoints (of the first seed: the
# architectures, and so the timings, are the same for every seed).
echo
echo "==> benchmark (Table 7)"
BEST=()
for id in "${RUN_IDS[@]}"; do BEST+=("$(seed_dir "${SEED_LIST[0]}")/$id/best.pt"); done
python benchmark.py --ckpt "${BEST[@]}" --device "$DEVICE" "${BENCH_ARGS[@]}" --out "$RESULTS/benchmark" \
  || die "benchmark failed"

# 4. The thesis's tables with our numbers beside them.
echo
echo "==> summary"
python summarize.py --results "$RESULTS" || die "summary failed"
echo "==> done in $(( $(date +%s) - START )) s: $RESULTS/summary.md"
