"""The metrics the paper's harness reports: acc, acc_norm, and mcc (CoLA) or F1 (MRPC) where a task has them."""

from __future__ import annotations

import math


def matthews_corrcoef(gold: list[int], pred: list[int]) -> float:
    """Binary MCC; 0 when a row or column of the confusion matrix is empty (as scikit-learn)."""
    tp = sum(g == 1 and p == 1 for g, p in zip(gold, pred))
    tn = sum(g == 0 and p == 0 for g, p in zip(gold, pred))
    fp = sum(g == 0 and p == 1 for g, p in zip(gold, pred))
    fn = sum(g == 1 and p == 0 for g, p in zip(gold, pred))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def f1_binary(gold: list[int], pred: list[int], positive: int) -> float:
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred))
    fp = sum(g != positive and p == positive for g, p in zip(gold, pred))
    fn = sum(g == positive and p != positive for g, p in zip(gold, pred))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def compute_metrics(task, scores) -> dict[str, float]:
    """`scores`: `DocScore`s (their gold, pred and pred_norm), `task`: the `Task` whose metrics to add."""
    n = len(scores)
    out = {
        "acc": sum(s.pred == s.gold for s in scores) / n,
        "acc_norm": sum(s.pred_norm == s.gold for s in scores) / n,
    }
    # cola and mrpc put " yes" (label 1) first: gold index 0 is the positive class.
    gold_label = [1 - s.gold for s in scores]
    pred_label = [1 - s.pred for s in scores]
    if "mcc" in task.metrics:
        out["mcc"] = matthews_corrcoef(gold_label, pred_label)
    if "f1" in task.metrics:
        out["f1"] = f1_binary(gold_label, pred_label, positive=1)
    return out
