"""Exact McNemar test between two runs' per-document predictions (same evaluation docs).

    python results/mcnemar.py --data-dir ../shared/data results/finetune/sst2--lora.json results/finetune/sst2--headmap-mha.json
"""
import argparse
import json

from scipy.stats import binomtest

from circuitlab.finetune import TrainConfig
from circuitlab.finetune.splits import eval_docs
from circuitlab.tasks import get_task, load_docs

p = argparse.ArgumentParser()
p.add_argument("a")
p.add_argument("b")
p.add_argument("--data-dir", required=True)
args = p.parse_args()
ra, rb = (json.load(open(f)) for f in (args.a, args.b))
if ra["eval"]["data_fingerprint"] != rb["eval"]["data_fingerprint"]:
    raise SystemExit("the two runs were evaluated on different documents")
cfg = TrainConfig.from_dict(ra["config"])
task = get_task(cfg.task)
train = load_docs(task, cfg.train_split, args.data_dir, limit=cfg.max_train) if cfg.method != "base" else []
gold = [d.gold for d in eval_docs(task, ra["eval"]["split"], args.data_dir, cfg, train)]
right_a = [p == g for p, g in zip(ra["eval"]["preds"], gold)]
right_b = [p == g for p, g in zip(rb["eval"]["preds"], gold)]
only_a = sum(x and not y for x, y in zip(right_a, right_b))
only_b = sum(y and not x for x, y in zip(right_a, right_b))
pvalue = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
print(f"acc {sum(right_a) / len(gold):.4f} vs {sum(right_b) / len(gold):.4f}; right only in A: {only_a}, "
      f"only in B: {only_b}; exact McNemar p = {pvalue:.4f}")
