#!/usr/bin/env bash
# The study of issue 13 on smollm2-135m: can circuit heads be told from random and redundant heads?
# sst2 and boolq (train = questions only); base, LoRA, and HeadMap-MHA on the located circuit, on random heads and on
# redundant heads (outside the circuit); 3 seeds each; 2,000 training documents; the full evaluation split.
# `probe` asks first whether a multiple-choice task can be learned at all in these settings (LoRA, seed 0): piqa,
# openbookqa and arc_easy could not (results/README.md), so no multiple-choice task is in TASKS.
# Run from the repository root:
#   bash results/run_study2.sh [probe|circuits|base|train|collect|summary]...   (default: all but probe, in that order)
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
read -r -a TASKS <<< "${TASKS:-sst2 boolq}"
MC=(piqa openbookqa arc_easy)      # the multiple-choice tasks probed
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
COMMON=(--model smollm2-135m --data-dir "$DATA" --protocol paper --epochs 2 --batch-size 16
        --warmup-steps 100 --max-train "$TRAIN" --mixed-precision bf16)
# Micro-batches only split the 16-document step (the loss is a token mean over the whole step: tests/finetune). The
# multiple-choice prompts are long-tailed (piqa's up to 2,225 characters) and a micro-batch pads to its longest
# document, so they use 2.
micro() { case $1 in sst2|boolq) echo 8 ;; *) echo 2 ;; esac; }

circuits() {  # rerun on the train splits (boolq's and hellaswag's are new): 64 samples of the first 2,000 docs
  [ $# -eq 0 ] && set -- "${TASKS[@]}"
  for t in "$@"; do
    [ -f "$CIRC/$t.json" ] || circuitlab locate --model smollm2-135m --task "$t" --data-dir "$DATA" --protocol paper \
      --samples 64 --max-docs "$TRAIN" --out "$CIRC/$t.json"
  done
}
ft() {
  local t=$1 name=$2; shift 2
  circuitlab finetune "${COMMON[@]}" --micro-batch-size "$(micro "$t")" --task "$t" "$@" --out "$RUNS/$t/$name"
}
base() { for t in "${TASKS[@]}"; do ft "$t" base --method base; done; }
probe() {  # can a multiple-choice task be learned in 250 steps? base and LoRA at seed 0; piqa also its circuit
  circuits piqa
  ft piqa headmap-circuit-s0 --method headmap-mha --circuit "$CIRC/piqa.json" --seed 0
  for t in "${MC[@]}"; do  # piqa's base run is from before micro(): evaluation does not depend on it
    [ -f "$RUNS/$t/base/result.json" ] || ft "$t" base --method base
    ft "$t" lora-s0 --method lora --seed 0
  done
}
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
collect() {  # every run's result.json (config, curves, per-document predictions) and the circuits, kept in git
  local out=results/study2_runs f d
  for f in "$RUNS"/*/*/result.json; do
    d=$out/${f#"$RUNS"/}; mkdir -p "$(dirname "$d")"; cp "$f" "$d"
  done
  mkdir -p "$out/circuits"; cp "$CIRC"/*.json "$out/circuits/"
}
summary() {  # the tables (results/study2.md) and the training curves, from the collected files
  python results/study_summary.py results/study2_runs --data-dir "$DATA" --compare headmap-circuit:headmap-random \
    --compare headmap-circuit:headmap-redundant --compare headmap-circuit:lora --md results/study2.md \
    --figures results/study2_figures
  rm -f results/study2_figures/training_curves.html  # the PNG is kept
}
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(circuits base train collect summary)
for s in "${steps[@]}"; do "$s"; done
