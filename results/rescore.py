"""Re-evaluate finished finetune runs from their saved weights and add the predicted-class counts.

For runs that finished before `result.json` recorded `pred_counts`: rebuilds the model and the
adapters from the run's config.json, loads the final checkpoint's trainable tensors, scores the same
evaluation docs, checks the metrics equal the recorded ones, and writes pred/gold counts into the
result file. Usage: python results/rescore.py --data-dir ../shared/data runs/study/boolq/lora ...
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from circuitlab.io import write_json_atomic
from circuitlab.models import load_model
from circuitlab.tasks import get_task, load_docs
from circuitlab.finetune import TrainConfig, build_adapters
from circuitlab.finetune.run import _eval_docs, evaluate_docs

p = argparse.ArgumentParser()
p.add_argument("runs", nargs="+")
p.add_argument("--data-dir", required=True)
a = p.parse_args()
for run in map(Path, a.runs):
    result = json.loads((run / "result.json").read_text())
    if "pred_counts" in result["eval"]:
        print(f"{run}: already has pred_counts")
        continue
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    model = load_model(cfg.model)
    heads = {int(k): v for k, v in result["heads"].items()} if result["heads"] else None
    adapters = build_adapters(model, cfg, heads)
    if cfg.method != "base":
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        saved = load_file(str(run / "checkpoint" / f"{state['tag']}.trainable.safetensors"))
        named = adapters.named_trainable(model.hf_model)
        assert set(saved) == set(named), f"{run}: checkpoint tensors differ from the rebuilt adapters"
        with torch.no_grad():
            for k, param in named.items():
                param.copy_(saved[k])
    task = get_task(cfg.task)
    train_docs = load_docs(task, cfg.train_split, a.data_dir, limit=cfg.max_train) if cfg.method != "base" else []
    docs = _eval_docs(task, result["eval"]["split"], a.data_dir, cfg, train_docs)
    with adapters.active(model):
        ev = evaluate_docs(model, task, docs, result["eval"]["split"], progress=False)
    same = ev.metrics == result["eval"]["metrics"] and ev.data_fingerprint == result["eval"]["data_fingerprint"]
    print(f"{run}: metrics {'reproduced exactly' if same else 'DIFFER'}: {ev.metrics} vs {result['eval']['metrics']}; "
          f"pred_counts {ev.pred_counts} gold_counts {ev.gold_counts}")
    if same:
        result["eval"].update({k: getattr(ev, k) for k in ("pred_counts", "gold_counts", "preds")})
        result["eval"]["rescored"] = "results/rescore.py"
        write_json_atomic(run / "result.json", result)
