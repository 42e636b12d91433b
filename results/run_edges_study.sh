#!/usr/bin/env bash
# The study of issue 14 on smollm2-135m, add_sub (addition/subtraction within 100):
# 1. a LoRA run (2 epochs of the 2,000 training rows, a checkpoint every 50 of its 250 steps) and the edge circuit
#    (EAP-IG, 5 steps, 64 test pairs, top 5 %) at the base model and at each of its 5 checkpoints: do nodes stay while
#    edges change? (`circuitlab track`: node/edge Jaccard, edges added/removed, change per layer, figures)
# 2. CircuitLoRA against LoRA at the same parameter count (--match-lora-rank 32), critical layers from the circuit
#    before and after that LoRA run (raw, the paper's rule), seeds 0 1 2 each; exact match on the 500 test rows.
# 3. the base model's exact match, and the faithfulness of its circuits of several sizes (64 pairs, corrupted ablation).
# Run from the repository root:   bash results/run_edges_study.sh [pilot|track|train|base|summary|faith]...
# Every step is resumable (finished runs are skipped; a run directory resumes from its last checkpoint; track reuses
# finished steps). Budget on this project's 2-core CPU: ~20 min a training run, ~6 min a checkpoint's circuit, so
# about 2 CPU-hours in all (measured: ~8 min a training run + 2.2 min of evaluation, ~4.5 min a checkpoint's circuit).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RUNS=${RUNS:-runs/edges_study}
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
COMMON=(--model smollm2-135m --task add_sub --epochs 2 --batch-size 16 --micro-batch-size 8 --warmup-steps 100
        --max-train 2000 --mixed-precision bf16)
EDGES=(--method eap-ig --steps 5 --ig-points right --max-pairs 64 --batch-size 8)  # k = 1..m: the paper's code

pilot() { circuitlab finetune "${COMMON[@]}" --method lora --seed 0 --save-every 50 --out "$RUNS/lora-s0"; }
track() { circuitlab track "$RUNS/lora-s0" "${EDGES[@]}" --out "$RUNS/lora-s0/track"; }
faith() {
  [ -f "$RUNS/faithfulness.json" ] || circuitlab edges --model smollm2-135m --task add_sub "${EDGES[@]}" \
    --curve 353,707,1766,3533,7065,14130,35326 --out "$RUNS/faithfulness.json"
}
train() {
  local before="$RUNS/lora-s0/track/step-0.json" after="$RUNS/lora-s0/track/step-250.json"
  for s in "${SEEDS[@]}"; do
    [ "$s" = 0 ] || circuitlab finetune "${COMMON[@]}" --method lora --seed "$s" --out "$RUNS/lora-s$s"
    circuitlab finetune "${COMMON[@]}" --method circuit-lora --circuit-before "$before" --circuit-after "$after" \
      --match-lora-rank 32 --seed "$s" --out "$RUNS/circuit-lora-s$s"
  done
}
base() {
  [ -f results/edges_study_base_eval.json ] || circuitlab eval --model smollm2-135m --task add_sub \
    --out results/edges_study_base_eval.json
}
summary() {
  python results/study_summary.py "$RUNS" --compare circuit-lora:lora --md results/edges_study.md \
    --figures results/edges_study_figures
  mkdir -p results/edges_study_figures
  cp "$RUNS/lora-s0/track/track.json" "$RUNS"/lora-s0/track/track_*.png results/edges_study_figures/ 2>/dev/null || true
}
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(pilot track train base summary faith)
for s in "${steps[@]}"; do "$s"; done
