"""The exact circuit evaluator: run the model with every edge outside the circuit ablated.

An ablated edge w -> r gives reader r the writer's replacement output instead of the one it has in this
run: the corrupted run's output (`corrupted`, the default: the circuit must carry the clean behaviour
on its own), zero (`zero`), or the writer's mean output over a reference set of runs (`mean`). With
every edge in the circuit the run is the clean run (no reader is touched); with none it is the
corrupted (or ablated) run.

Normalised faithfulness = (metric(circuit) - metric(empty)) / (metric(full) - metric(empty)): 1 when the
circuit alone reproduces the model, 0 when it does no better than no circuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuitlab.edges.circuit import select
from circuitlab.edges.forward import new_acts, run, writer_outputs
from circuitlab.edges.graph import Graph
from circuitlab.edges.hooks import patch, record, split_graph
from circuitlab.edges.config import Metric
from circuitlab.edges.batches import PairBatch

@torch.no_grad()
def writer_means(model, batches: list[PairBatch]) -> Float[Tensor, "writer d_model"]:
    """Each writer's mean output over every real (unpadded) position of the batches' clean runs."""
    g = Graph.of(model)
    total = torch.zeros(g.n_writers, model.d_model, dtype=torch.float32, device=model.device)
    count = 0
    with split_graph(model.bridge):
        for b in batches:
            acts = writer_outputs(model, g, b.clean, b.attention_mask)
            real = b.attention_mask.to(acts.device).bool()
            total += acts[real].sum(0)
            count += int(real.sum())
    return total / count


@torch.no_grad()
def circuit_metric(model, batch: PairBatch, keep: Bool[Tensor, "writer reader"], metric: Metric, clean_lp=None,
                   ablation: str = "corrupted", means: Float[Tensor, "writer d_model"] | None = None
                   ) -> Float[Tensor, " batch"]:
    """The metric of each pair with only the edges in `keep` carrying this run's outputs."""
    g = Graph.of(model)
    missing = g.edge_mask.to(keep.device) & ~keep
    with split_graph(model.bridge):
        if ablation == "corrupted":
            replacement = writer_outputs(model, g, batch.corrupted, batch.attention_mask)
        elif ablation == "zero":
            replacement = torch.zeros(g.n_writers, model.d_model, device=model.device)
        else:
            if means is None:
                raise ValueError("mean ablation needs the writers' means (writer_means)")
            replacement = means
        current = new_acts(model, g, batch.clean)
        hooks = record(g, current) + patch(g, current, replacement, missing.to(model.device))
        logits = run(model, batch.clean, batch.attention_mask, hooks)
    return metric(logits, batch, clean_lp)


@dataclass
class Faithfulness:
    n_edges: int
    metric: float  # the circuit's mean metric
    faithfulness: float  # normalised, see the module docstring


@dataclass
class FaithfulnessCurve:
    ablation: str
    metric_full: float
    metric_empty: float
    points: list[Faithfulness]


def faithfulness_curve(model, batches: list[PairBatch], clean_lps: list, scores: Float[Tensor, "writer reader"],
                       sizes: list[int], metric: Metric, ablation: str = "corrupted",
                       means: Float[Tensor, "writer d_model"] | None = None) -> FaithfulnessCurve:
    """Faithfulness of the top-n circuit of `scores` for each n in `sizes`, over all pairs of `batches`."""
    g = Graph.of(model)
    n_pairs = sum(len(b) for b in batches)

    def mean_metric(keep) -> float:
        return float(sum(circuit_metric(model, b, keep, metric, lp, ablation, means).sum()
                         for b, lp in zip(batches, clean_lps))) / n_pairs

    full, empty = mean_metric(g.edge_mask), mean_metric(torch.zeros_like(g.edge_mask))
    points = []
    for n in sizes:
        keep = select(scores, g, top_n=n)
        m = mean_metric(keep)
        points.append(Faithfulness(int(keep.sum()), m, (m - empty) / (full - empty) if full != empty else float("nan")))
    return FaithfulnessCurve(ablation, full, empty, points)
