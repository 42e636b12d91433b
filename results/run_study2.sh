#!/usr/bin/env bash
# The study of issue 13 on smollm2-135m: can circuit heads be told from random and redundant heads?
# sst2, boolq (train = questions only) and piqa; base, LoRA, and HeadMap-MHA on the located circuit, on random heads
# and on redundant heads (outside the circuit); 3 seeds each; 2,000 training documents; the full evaluation split.
# Run from the repository root:
#   bash results/run_study2.sh [circuits|base|train|table]...   (default: all, in that order)
# Every step is resumable (run directories resume from their last checkpoint; finished runs are skipped), so it can be
# stopped and started again across sessions. Training autocasts to bf16 (`--mixed-precision bf16`; the official code
# trains with fp16 autocast and fp32 adapters), faster than fp32 on this project's 2-core CPU (AMX). 2 epochs of
# 2,000 documents = 250 steps of 16 documents a run; the measured times per run are in results/README.md (Budget).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/study2}           # run directories (ignored by git)
CIRC=${CIRC:-$RUNS/circuits}
TRAIN=${TRAIN:-2000}                # training documents (the first N of each train split)
read -r -a TASKS <<< "${TASKS:-sst2 boolq piqa}"
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
COMMON=(--model smollm2-135m --data-dir "$DATA" --protocol paper --epochs 2 --batch-size 16
        --warmup-steps 100 --max-train "$TRAIN" --mixed-precision bf16)
# Micro-batches only split the 16-document step (the loss is a token mean over the whole step: tests/finetune). The
# multiple-choice prompts are long-tailed (piqa's up to 2,225 characters) and a micro-batch pads to its longest
# document, so they use 2.
micro() { case $1 in sst2|boolq) echo 8 ;; *) echo 2 ;; esac; }

circuits() {  # rerun on the train splits (boolq's and hellaswag's are new): 64 samples of the first 2,000 docs
  for t in "${TASKS[@]}"; do
    [ -f "$CIRC/$t.json" ] || circuitlab locate --model smollm2-135m --task "$t" --data-dir "$DATA" --protocol paper \
      --samples 64 --max-docs "$TRAIN" --out "$CIRC/$t.json"
  done
}
ft() {
  local t=$1 name=$2; shift 2
  circuitlab finetune "${COMMON[@]}" --micro-batch-size "$(micro "$t")" --task "$t" "$@" --out "$RUNS/$t/$name"
}
base() { for t in "${TASKS[@]}"; do ft "$t" base --method base; done; }
train() {  # circuit and random heads first (the paired comparison the study is for), a task's seeds together
  for pair in "circuit random" "lora redundant"; do
    for t in "${TASKS[@]}"; do
      for s in "${SEEDS[@]}"; do
        for m in $pair; do
          case $m in
            lora) ft "$t" "lora-s$s" --method lora --seed "$s" ;;
            circuit) ft "$t" "headmap-circuit-s$s" --method headmap-mha --circuit "$CIRC/$t.json" --seed "$s" ;;
            *) ft "$t" "headmap-$m-s$s" --method headmap-mha --heads "$m" --circuit "$CIRC/$t.json" --seed "$s" ;;
          esac
        done
      done
    done
  done
}
table() { circuitlab table "$RUNS"/*/*/result.json --md results/study2_table.md --csv results/study2_table.csv; }
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(circuits base train table)
for s in "${steps[@]}"; do "$s"; done
