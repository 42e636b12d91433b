"""Scoring and evaluation as lm-evaluation-harness does them: `scoring` (log-likelihoods of continuations),
`metrics` (acc, acc_norm, mcc, F1), `generation` (greedy decoding for exact match), `run` (a task's split scored),
`results` (typed results, read without torch), `job` (evaluate_task), `lmeval` (lm-eval task files made from
circuitlab's tasks)."""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "EvalConfig": "config", "EvalResult": "results", "Prediction": "results", "evaluate": "run", "evaluate_task": "job",
    "compute_metrics": "metrics", "matthews_corrcoef": "metrics", "f1_binary": "metrics",
})
