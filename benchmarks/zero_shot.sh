#!/usr/bin/env bash
# Zero-shot accuracy of a model on the 13 tasks' evaluation splits (first LIMIT docs each).
# Usage: bash benchmarks/zero_shot.sh [MODEL] [LIMIT] [DATA_DIR]
set -euo pipefail
model=${1:-smollm2-135m}; limit=${2:-200}; data=${3:-../shared/data}
out=results/zero-shot/$model; mkdir -p "$out"
for task in boolq piqa siqa hellaswag winogrande arc_easy arc_challenge openbookqa cola mrpc rte sst2 wnli; do
  [ -f "$out/$task.json" ] || circuitlab eval --model "$model" --task "$task" --data-dir "$data" --limit "$limit" --out "$out/$task.json"
done
python - "$out" <<'PY'
import json, sys, pathlib
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
print("| task | split | docs | acc | acc_norm | other | docs/s |\n|---|---|---|---|---|---|---|")
for r in rows:
    m = r["metrics"]; other = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k not in ("acc", "acc_norm"))
    print(f"| {r['task']} | {r['split']} | {r['n_docs']} | {m['acc']:.3f} | {m['acc_norm']:.3f} | {other} | {r['n_docs']/r['seconds']:.1f} |")
PY
