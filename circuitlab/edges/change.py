"""How an edge circuit changes between two checkpoints: every edge's change and its sum per layer.

The paper's rule (its code, raw scores): |s_after - s_before| for an edge in both circuits, the |score| of the
one circuit it is in otherwise, 0 for an edge in neither; summed by the edge's source (writer) layer, the
input embedding counting as layer 0. A fine-tuned circuit's scores can be far larger than the original's
(~48x in the paper's released graphs), so `normalise=True` first divides each circuit's scores by its total
|score| over its kept edges. `circuitlab track` reports it between checkpoints; CircuitLoRA ranks layers by it.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.core.errors import CircuitlabError

def check_same_shape(before: EdgeCircuit, after: EdgeCircuit) -> None:
    """Both circuits of one model's shape (their weights differ: the after-circuit is of the pilot model)."""
    b, a = before.scores.model, after.scores.model
    if b.dims != a.dims:
        raise CircuitlabError(f"the circuits are of models of different shapes: {b.name} ({b.dims}) before, "
                              f"{a.name} ({a.dims}) after")


def edge_change(before: EdgeCircuit, after: EdgeCircuit, normalise: bool = False) -> Float[Tensor, "writer reader"]:
    """Every edge's change (module docstring, step 1), in float64."""
    check_same_shape(before, after)
    sb, sa = (c.scores.scores.detach().double().cpu() for c in (before, after))
    kb, ka = before.keep.cpu(), after.keep.cpu()
    if normalise:
        sb, sa = sb / _total(sb, kb, "before"), sa / _total(sa, ka, "after")
    zero = torch.zeros_like(sb)
    return torch.where(kb & ka, (sa - sb).abs(), torch.where(kb, sb.abs(), torch.where(ka, sa.abs(), zero)))


def _total(scores: Tensor, keep: Tensor, which: str) -> float:
    total = float(scores[keep].abs().sum())
    if not total > 0:
        raise CircuitlabError(f"the circuit {which} has no kept edge with a nonzero score: cannot normalise it")
    return total


def layer_change(before: EdgeCircuit, after: EdgeCircuit, normalise: bool = False) -> list[float]:
    """The change per layer: each edge's change summed by its writer's layer (input = layer 0)."""
    g = before.graph
    per_writer = edge_change(before, after, normalise).sum(1)
    layers = torch.tensor([g.writer_layer(w) for w in range(g.n_writers)])
    return torch.zeros(g.n_layers, dtype=torch.float64).index_add_(0, layers, per_writer).tolist()
