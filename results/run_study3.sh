#!/usr/bin/env bash
# Study 3 (issue 24) on smollm2-135m: do the circuit's heads train better than heads that are not the circuit?
# The head set is the unit of replication: HeadMap-MHA on the circuit (5 training seeds) against 8 random draws,
# 4 redundant draws (random heads outside the circuit) and the anti-circuit (each layer's 2 lowest-scoring heads,
# 5 seeds), 2 heads per layer; LoRA as the reference. Arms are compared as groups on the same documents
# (`circuitlab stats --pairing none`: documents pair, runs do not), and paired by seed where both arms have it (a
# draw trains with its own seed: circuit seed i and draw i share data order and initialisation, so the pair differs
# only in its heads). Its detectable effect was stated before the runs (results/README.md, "Study 3").
#   circuits the tasks' circuits (sst2's is study 2's; the generated tasks' are located here, 64 samples of the
#            first 2,000 training documents, 2 heads per layer)
#   lr       HeadMap's learning rate from the paper's grid {1e-4, 2e-4, 4e-4, 8e-4, 1e-3} (its GLUE protocol), on the
#            circuit at seed 0, chosen by accuracy (exact match) on 500 held-out training documents (the ones after the
#            training documents; ties: the higher mean margin); the choice is written to $RUNS/$TASK/lr.json
#   train    the arms, in the order that builds the comparison first (circuit and random draws interleaved)
#   one      1 head per layer (the issue: "if the budget allows") on ONE_TASKS (default sequence, the task where the
#            circuit trained ahead of random draws at 2 per layer): the circuit located at 1 head per layer (same
#            samples and protocol), 3 seeds, against 8 random draws of 1 head per layer (arms `*-1pl`), interleaved;
#            the learning rate is the 2-per-layer choice (no second grid)
#   collect  every run's result.json (config, curve, per-document predictions and margins) into results/study3/
#   summary  the tables (results/study3.md) and the figure of each arm's difference from the circuit
# Run from the repository root:   bash results/run_study3.sh [circuits|lr|train|one|collect|summary]...  (default: all)
# Every step is resumable (finished runs are skipped, interrupted ones resume from their last checkpoint), so the
# study can be stopped and continued across sessions; runs collected into results/study3/ count as finished on a
# fresh machine. Float32 (this CPU has no bf16 matrix units: results/README.md).
# Sized to fit a CPU (the issue: fewer training documents before fewer head draws): TRAIN documents, 2 epochs.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/study3}
OUT=results/study3
TRAIN=${TRAIN:-384}                 # training documents (the first N of the train split): 48 steps of 16
read -r -a TASKS <<< "${TASKS:-sst2 add_sub sequence}"
GRID=(1e-4 2e-4 4e-4 8e-4 1e-3)     # the paper's grid (Section 6, GLUE)
CIRCUIT_SEEDS=(0 1 2 3 4); RANDOM_DRAWS=(0 1 2 3 4 5 6 7); REDUNDANT_DRAWS=(0 1 2 3); LORA_SEEDS=(0 1 2)
declare -A CIRCUIT=([sst2]=results/study2_runs/circuits/sst2.json   # located on sst2's first 2,000 training docs
                   [add_sub]=$OUT/circuits/add_sub.json [sequence]=$OUT/circuits/sequence.json)
# The generated tasks are scored by exact match on the 2,000 rows of `test_large` (disjoint from train and test).
declare -A OPTS=([sst2]="" [add_sub]="--eval-split test_large" [sequence]="--eval-split test_large")
COMMON=(--model smollm2-135m --data-dir "$DATA" --protocol paper --epochs 2 --batch-size 16 --micro-batch-size 16
        --warmup-steps 5 --max-train "$TRAIN" --mixed-precision no --no-progress)

kept() {  # FILE under $RUNS: restored from the collected copy in $OUT when missing (a fresh machine)
  [ -f "$RUNS/$1" ] || [ ! -f "$OUT/$1" ] || install -D -m 644 "$OUT/$1" "$RUNS/$1"
}
ft() {  # TASK NAME OPTIONS...: one run, skipped when finished (here, or on a machine whose runs were collected)
  local t=$1 name=$2; shift 2
  kept "$t/$name/result.json"  # the job sees it finished
  # shellcheck disable=SC2086
  circuitlab finetune "${COMMON[@]}" --task "$t" ${OPTS[$t]} "$@" --out "$RUNS/$t/$name"
}
headmap() { local t=$1 name=$2; shift 2; ft "$t" "$name" --method headmap-mha --circuit "${CIRCUIT[$t]}" "$@"; }

locate_circuit() {  # TASK OUT HEADS_PER_LAYER: the task's circuit on 64 samples of its first 2,000 training documents
  [ -f "$2" ] || circuitlab locate --model smollm2-135m --task "$1" --data-dir "$DATA" --protocol paper \
    --samples 64 --max-docs 2000 --heads-per-layer "$3" --out "$2"
}
circuits() { for t in "${TASKS[@]}"; do locate_circuit "$t" "${CIRCUIT[$t]}" 2; done; }
lr() {
  for t in "${TASKS[@]}"; do
    for x in "${GRID[@]}"; do
      headmap "$t" "lr/headmap-circuit-lr$x-s0" --lr "$x" --seed 0 --eval-split train --limit 500
    done
    python - "$RUNS/$t" "${GRID[@]}" <<'EOF'
import json, sys
from pathlib import Path
root, grid = Path(sys.argv[1]), sys.argv[2:]
scores = {}
for x in grid:
    e = json.loads((root / f"lr/headmap-circuit-lr{x}-s0/result.json").read_text())["eval"]
    metric = "exact_match" if "exact_match" in e["metrics"] else "acc"  # generated answers have no margins
    scores[x] = (e["metrics"][metric], sum(e["margins"]) / len(e["margins"]) if e.get("margins") else 0.0)
best = max(grid, key=lambda x: scores[x])
out = {"chosen": float(best), "by": "held-out accuracy, then mean margin",
       "held_out": {x: {"acc": a, "mean_margin": m} for x, (a, m) in scores.items()}}
(root / "lr.json").write_text(json.dumps(out, indent=1) + "\n")
print(f"{root.name}: lr {best} ({', '.join(f'{x}: {100 * a:.2f} %' for x, (a, _) in scores.items())})")
EOF
  done
}
chosen_lr() {  # TASK: the learning rate the lr step chose
  kept "$1/lr.json"
  [ -f "$RUNS/$1/lr.json" ] || { echo "no learning rate chosen for $1: run the lr step" >&2; exit 2; }
  python -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'])" "$RUNS/$1/lr.json"
}

train() {
  for t in "${TASKS[@]}"; do
    local rate; rate=$(chosen_lr "$t")
    for i in "${RANDOM_DRAWS[@]}"; do  # circuit seed i beside random draw i, so an interrupted study stays balanced
      [ "$i" -lt ${#CIRCUIT_SEEDS[@]} ] && headmap "$t" "headmap-circuit-s$i" --lr "$rate" --seed "$i"
      headmap "$t" "headmap-random-s$i" --heads random --lr "$rate" --seed "$i"
    done
    for s in "${CIRCUIT_SEEDS[@]}"; do headmap "$t" "headmap-anti-s$s" --heads anti --lr "$rate" --seed "$s"; done
    for s in "${REDUNDANT_DRAWS[@]}"; do headmap "$t" "headmap-redundant-s$s" --heads redundant --lr "$rate" --seed "$s"; done
    for s in "${LORA_SEEDS[@]}"; do ft "$t" "lora-s$s" --method lora --seed "$s"; done
  done
}
one() {
  local t c rate i
  for t in ${ONE_TASKS:-sequence}; do
    c=$OUT/circuits/$t-1pl.json; locate_circuit "$t" "$c" 1
    rate=$(chosen_lr "$t")
    for i in 0 1 2 3 4 5 6 7; do
      [ "$i" -lt 3 ] && ft "$t" "headmap-circuit-1pl-s$i" --method headmap-mha --circuit "$c" --lr "$rate" --seed "$i"
      ft "$t" "headmap-random-1pl-s$i" --method headmap-mha --circuit "$c" --heads random --lr "$rate" --seed "$i"
    done
  done
}
collect() {  # every finished run's result.json and the learning-rate choice, kept in git
  local f d
  for f in "$RUNS"/*/result.json "$RUNS"/*/*/result.json "$RUNS"/*/lr/*/result.json "$RUNS"/*/lr.json; do
    [ -f "$f" ] || continue
    d=$OUT/${f#"$RUNS"/}; mkdir -p "$(dirname "$d")"; cp "$f" "$d"
  done
}
summary() {  # from the collected files (the learning-rate runs are not arms)
  local arm args=()
  for arm in headmap-random headmap-redundant headmap-anti lora; do
    args+=(--groups "headmap-circuit:$arm" --compare "headmap-circuit:$arm")
  done
  args+=(--groups headmap-circuit-1pl:headmap-random-1pl --compare headmap-circuit-1pl:headmap-random-1pl)
  python results/study_summary.py "$OUT" --exclude lr --data-dir "$DATA" "${args[@]}" --md results/study3.md \
    --figures "$OUT/figures"
  rm -f "$OUT/figures/"*.html "$OUT/figures/plotly.min.js"  # the PNGs are kept
}
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(circuits lr train one collect summary)
for s in "${steps[@]}"; do "$s"; done
