#!/usr/bin/env bash
# The small-scale HeadMap study on smollm2-135m, CPU only. Run from the repository root:
#   bash results/run_study.sh [circuits|base|lora|headmap|table]...   (default: all, in that order)
# Every step is resumable: rerunning skips finished runs and resumes interrupted ones.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # on a shared 2-core machine one thread is much faster
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/study}            # checkpoints and adapters (ignored by git)
CIRC=${CIRC:-$RUNS/circuits}
COMMON=(--model smollm2-135m --data-dir "$DATA" --epochs 2 --batch-size 16 --warmup-steps 3 --max-train 256 --seed 0)
# task -> extra options (later options win): boolq has no local train split, so it trains on validation[0:256] and is
# evaluated on the following validation docs.
declare -A OPTS=(
  [boolq]="--train-split validation --limit 300"
  [sst2]="--limit 300"
  [arc_easy]="--max-train 128 --limit 150"   # 2.5x longer texts: half the docs
)
declare -A LOCATE_SPLIT=([boolq]=validation [sst2]=train [arc_easy]=train)
declare -A LOCATE_DOCS=([boolq]=256 [sst2]=256 [arc_easy]=128)   # locate on the docs each task trains on
read -r -a TASKS <<< "${TASKS:-boolq sst2 arc_easy}"   # e.g. TASKS="boolq sst2" to run a subset

circuits() {
  for t in "${TASKS[@]}"; do
    [ -f "$CIRC/$t.json" ] || python results/locate_circuit.py --task "$t" --split "${LOCATE_SPLIT[$t]}" \
      --max-docs "${LOCATE_DOCS[$t]}" --samples 16 --data-dir "$DATA" --out "$CIRC/$t.json"
  done
}
ft() { local t=$1 name=$2; shift 2; circuitlab finetune "${COMMON[@]}" --task "$t" ${OPTS[$t]} "$@" --out "$RUNS/$t/$name"; }
base()    { for t in "${TASKS[@]}"; do ft "$t" base --method base; done; }
lora()    { for t in "${TASKS[@]}"; do ft "$t" lora --method lora; done; }
headmap() {
  for t in "${TASKS[@]}"; do
    ft "$t" headmap-mha --method headmap-mha --circuit "$CIRC/$t.json"
    ft "$t" headmap-hs --method headmap-hs --circuit "$CIRC/$t.json"
    ft "$t" headmap-mha-random --method headmap-mha --heads random --circuit "$CIRC/$t.json"
  done
}
table() {
  circuitlab table "$RUNS"/*/*/result.json --md results/table.md --csv results/table.csv
  mkdir -p results/finetune results/circuits   # not results/runs: .gitignore ignores every runs/
  for f in "$RUNS"/*/*/result.json; do t=$(basename "$(dirname "$(dirname "$f")")"); n=$(basename "$(dirname "$f")"); cp "$f" "results/finetune/$t--$n.json"; done
  cp "$CIRC"/*.json results/circuits/
}
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(circuits base lora headmap table)
for s in "${steps[@]}"; do "$s"; done
