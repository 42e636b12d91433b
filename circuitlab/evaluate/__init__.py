"""Scoring and evaluation as lm-evaluation-harness does them: `scoring` (log-likelihoods of continuations),
`metrics` (acc, acc_norm, mcc, F1), `generation` (greedy decoding for exact match), `evaluate` (a task's
split scored, typed results), `lmeval` (lm-eval task files made from circuitlab's tasks)."""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "EvalConfig": "config", "EvalResult": "run", "Prediction": "run", "evaluate": "run", "evaluate_task": "job",
    "compute_metrics": "metrics", "matthews_corrcoef": "metrics", "f1_binary": "metrics",
})
