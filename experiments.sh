#!/usr/bin/env bash
# Replays the thesis end to end: the seven training runs, the inference-side rescue
# (Table 6), the efficiency benchmark (Table 7), and results/summary.md with our numbers beside
# the thesis's.
#
#   bash experiments.sh --train-csv train.csv --val-csv val.csv [--data-root DIR] [--results DIR]
#   bash experiments.sh --demo            # built-in synthetic set, CPU, small images, ~13 min on 2 cores
#   bash experiments.sh ... --seeds 42,43,44   # every run once per seed, each seed in RESULTS/seed<N>/
#
# Every flag also reads from the environment (TRAIN_CSV, VAL_CSV, DATA_ROOT, RESULTS, EPOCHS,
# DEVICE, WORKERS, BATCH_SIZE, IMG_SIZE, WEIGHTS, SEEDS). Re-running is safe: finished runs are skipped,
# an interrupted run resumes from its last.pt (mid-epoch too), a finished run whose settings changed
# is an error, and a second experiments.sh on the same results folder refuses to start.
# AffectNet's full release (whole photos + face boxes): crop the faces once first, then train on the
# crops, e.g. python data.py prepare --csv data/train.csv --out data/train_224 (see the README).
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
  EPOCHS=${EPOCHS:-4}
  DEVICE=cpu
  WORKERS=${WORKERS:-0}  # on 2 cores a loader process competes with the 2 compute threads
  BATCH_SIZE=${BATCH_SIZE:-16}
  IMG_SIZE=${IMG_SIZE:-32}
  WEIGHTS=${WEIGHTS:-none}
  # From random initialisation the thesis's fine-tuning learning rates barely move the weights in a
  # few epochs, so the demo scales every run's lr by the same factor (the ratios stay the thesis's)
  # and warms every run up over half an epoch (run 3 keeps its own one-epoch warmup).
  LR_SCALE=${LR_SCALE:-6}
  DEMO_TRAIN_ARGS=(--warmup-epochs 0.5)
  BENCH_ARGS=(--warmup 5 --iters 20 --mode eager)
else
  [ -n "$TRAIN_CSV" ] || die "no training CSV: pass --train-csv FILE or set TRAIN_CSV (or run with --demo)"
  [ -n "$VAL_CSV" ] || die "no validation CSV: pass --val-csv FILE or set VAL_CSV (or run with --demo)"
  RESULTS=${RESULTS:-results}
  EPOCHS=${EPOCHS:-30}
  BATCH_SIZE=${BATCH_SIZE:-128}
  IMG_SIZE=${IMG_SIZE:-224}
  WEIGHTS=${WEIGHTS:-imagenet}
  LR_SCALE=${LR_SCALE:-1}
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
  # Half the default size keeps the seven runs inside ~15 minutes on a 2-core laptop CPU.
  python data.py demo --out "$DEMO_DIR" --seed 42 --min-train-per-class 12 --val-per-class 20 --image-size 64
fi
[ -f "$TRAIN_CSV" ] || die "training CSV not found: $TRAIN_CSV"
[ -f "$VAL_CSV" ] || die "validation CSV not found: $VAL_CSV"

COMMON=(--train-csv "$TRAIN_CSV" --val-csv "$VAL_CSV" --epochs "$EPOCHS" --batch-size "$BATCH_SIZE"
        --img-size "$IMG_SIZE" --weights "$WEIGHTS" --device "$DEVICE" "${DEMO_TRAIN_ARGS[@]}")
[ -n "$DATA_ROOT" ] && COMMON+=(--data-root "$DATA_ROOT")
[ -n "$WORKERS" ] && COMMON+=(--workers "$WORKERS")
EVAL_DATA=(--val-csv "$VAL_CSV" --device "$DEVICE")
[ -n "$DATA_ROOT" ] && EVAL_DATA+=(--data-root "$DATA_ROOT")
[ -n "$WORKERS" ] && EVAL_DATA+=(--workers "$WORKERS")

lr() { python -c "print(f'{$1 * $LR_SCALE:g}')"; }

# One training run, once per seed: skipped when finished (train.py --resume says so and exits 0),
# resumed when interrupted, started fresh otherwise.
run() {
  local id=$1; shift
  local seed out resume status
  for seed in "${SEED_LIST[@]}"; do
    out="$(seed_dir "$seed")/$id" resume=() status=0
    [ -f "$out/last.pt" ] && resume=(--resume)
    echo
    echo "==> [$id, seed $seed] python train.py ${COMMON[*]} $* --seed $seed --experiment $id --out $out ${resume[*]}"
    python train.py "${COMMON[@]}" "$@" --seed "$seed" --experiment "$id" --out "$out" "${resume[@]}" || status=$?
    case $status in
      0) ;;
      130|143) die "training run $id stopped by a signal; $out/last.pt is consistent: re-run this script to resume it" ;;
      *) die "training run $id failed (see $out/train.log); re-run this script to resume it" ;;
    esac
  done
}

START=$(date +%s)
echo "==> results in $RESULTS (train: $TRAIN_CSV, val: $VAL_CSV, epochs: $EPOCHS, device: $DEVICE, seeds: $SEEDS)"

# 1. The seven thesis runs, in the thesis's order.
run baseline_resnet50_ce_run1                     --model resnet50 --loss ce --lr "$(lr 1e-4)"
run convnext_tiny_baseline_ce_run1                --model convnext_tiny --loss ce --lr "$(lr 1e-4)"
run convnext_tiny_transformer_ce_run1             --model convnext_tiny_transformer --blocks 1 --loss ce --lr "$(lr 1e-4)"
run convnext_tiny_transformer_focal_alpha_run1    --model convnext_tiny_transformer --blocks 1 --loss focal --alpha auto --lr "$(lr 1e-4)"
run convnext_tiny_baseline_focal_alpha_run1       --model convnext_tiny --loss focal --alpha auto --lr "$(lr 1e-4)"
run convnext_tiny_transformer_focal_alpha_run2    --model convnext_tiny_transformer --blocks 2 --loss focal --alpha auto --lr "$(lr 1e-4)"
run convnext_tiny_transformer_focal_alpha_ema_run3 --model convnext_tiny_transformer --blocks 2 --loss focal --alpha auto --lr "$(lr 5e-5)" \
    --ema --warmup-epochs 1 --clip-grad 1.0

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
