#!/usr/bin/env bash
# CircuitLoRA on the paper's recipe (issue 24), smollm2-135m, add_sub, following the authors' code
# (../shared/papers/circuit-analysis-of-finetuning-code-notes.md): training text `prompt + "\n" + answer`, loss on
# the answer's tokens only, max length 32, batch 32, weight decay 0.01, alpha = 2r.
# 1. pilot: LoRA r = 2 for 2 epochs (lr 2e-4, the authors' pilot notebook);
# 2. track: the edge circuit (EAP-IG, 5 steps, 64 test pairs written as the pilot's texts, top 5 %) before and
#    after the pilot, whose change per layer picks the 5 critical layers;
# 3. train, for each seed: LoRA r = 32 (the paper's reference), CircuitLoRA 64 on critical layers / 16 elsewhere
#    (the paper's "similar size": here 75 % of LoRA's parameters) and CircuitLoRA at LoRA's parameter count
#    (--match-lora-rank 32); 4 epochs, lr 3e-4, evaluated on the 2,000 rows of add_sub's `test_large` split
#    (disjoint from the training rows and from the circuit's test rows);
# 4. collect (result.json of every run and the two circuits into results/circuitlora_recipe/) and summary
#    (`circuitlab stats` paired by document and seed, and the tables in results/circuitlora_recipe.md).
# Run from the repository root:   bash results/run_circuitlora_recipe.sh [pilot|track|train|collect|summary]...
# Every step is resumable (finished runs are skipped; a run directory resumes from its last checkpoint; track
# reuses finished circuits). Float32: on a CPU without bf16 matrix units (AVX2 only) bf16 autocast takes a naive
# kernel and is ~20x slower. Budget: results/README.md.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RUNS=${RUNS:-runs/circuitlora_recipe}
OUT=results/circuitlora_recipe
TRAIN=${TRAIN:-500}                 # training rows (the first N of add_sub's train split)
read -r -a SEEDS <<< "${SEEDS:-0 1 2 3 4}"
read -r -a ARMS <<< "${ARMS:-lora circuit-lora circuit-lora-equal}"
COMMON=(--model smollm2-135m --task add_sub --separator newline --loss-on answer --max-len 32 --batch-size 32
        --micro-batch-size 32 --weight-decay 0.01 --max-train "$TRAIN" --mixed-precision no --no-progress)
EDGES=(--method eap-ig --steps 5 --ig-points right --max-pairs 64 --batch-size 8)  # k = 1..m: the authors' code

last_step() { ls "$RUNS/pilot/track" | sed -n 's/^step-\([0-9]*\)\.json$/\1/p' | sort -n | tail -1; }

pilot() {
  circuitlab finetune "${COMMON[@]}" --method lora --rank 2 --lora-alpha 4 --epochs 2 --lr 2e-4 --warmup-steps 3 \
    --seed 0 --limit 100 --save-every 32 --out "$RUNS/pilot"
}
track() { circuitlab track "$RUNS/pilot" "${EDGES[@]}" --no-progress --out "$RUNS/pilot/track"; }
train() {
  local before="$RUNS/pilot/track/step-0.json" after
  after="$RUNS/pilot/track/step-$(last_step).json"
  [ -f "$after" ] && [ "$after" != "$before" ] || { echo "no circuit after the pilot: run the track step" >&2; exit 2; }
  local recipe=(--epochs 4 --lr 3e-4 --warmup-steps 6 --eval-split test_large)
  for s in "${SEEDS[@]}"; do
    for arm in "${ARMS[@]}"; do
      case $arm in
        lora) circuitlab finetune "${COMMON[@]}" "${recipe[@]}" --method lora --rank 32 --lora-alpha 64 --seed "$s" \
                --out "$RUNS/lora-s$s" ;;
        circuit-lora) circuitlab finetune "${COMMON[@]}" "${recipe[@]}" --method circuit-lora --circuit-before "$before" \
                --circuit-after "$after" --rank-critical 64 --rank-other 16 --seed "$s" --out "$RUNS/circuit-lora-s$s" ;;
        circuit-lora-equal) circuitlab finetune "${COMMON[@]}" "${recipe[@]}" --method circuit-lora \
                --circuit-before "$before" --circuit-after "$after" --match-lora-rank 32 --seed "$s" \
                --out "$RUNS/circuit-lora-equal-s$s" ;;
      esac
    done
  done
}
collect() {  # every run's result.json (config, training curve, per-document predictions) and the circuits, kept in git
  local f d
  for f in "$RUNS"/*/result.json; do
    d=$OUT/runs/${f#"$RUNS"/}; mkdir -p "$(dirname "$d")"; cp "$f" "$d"
  done
  mkdir -p "$OUT/circuits" "$OUT/figures"; cp "$RUNS"/pilot/track/step-*.json "$RUNS"/pilot/track/step-*.safetensors \
    "$RUNS/pilot/track/track.json" "$OUT/circuits/"
  cp "$RUNS"/pilot/track/track_*.png "$OUT/figures/"
}
summary() {  # from the collected files
  python results/study_summary.py "$OUT/runs" --compare circuit-lora:lora --compare circuit-lora-equal:lora \
    --compare circuit-lora:circuit-lora-equal --md results/circuitlora_recipe.md --figures "$OUT/figures"
}
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(pilot track train collect summary)
for s in "${steps[@]}"; do "$s"; done
