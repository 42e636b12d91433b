"""How circuits differ along a fine-tuning run: one `Change` between two steps (node, edge and located-head
Jaccard, what was added and removed, the change per layer), and `Track`, everything `track.json` holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from circuitlab.circuits.heads import jaccard
from circuitlab.core.io import write_json_atomic
from circuitlab.edges.change import layer_change
from circuitlab.edges.circuit import EdgeCircuit

SCHEMA = "circuitlab.track/1"


def head_set(heads: dict) -> set[str]:
    return {f"a{int(layer)}.h{h}" for layer, hs in heads.items() for h in hs}


@dataclass
class Change:
    """From the circuit at step `before` to the one at step `after`."""

    before: int
    after: int
    node_jaccard: float
    edge_jaccard: float
    nodes_added: int
    nodes_removed: int
    edges_added: int
    edges_removed: int
    layer_change: list[float]
    head_jaccard: float | None = None  # with --heads: of the located head circuits

    @classmethod
    def of(cls, before: int, after: int, a: EdgeCircuit, b: EdgeCircuit, heads: tuple[dict, dict] | None = None
           ) -> "Change":
        na, nb, ea, eb = a.nodes(), b.nodes(), a.edges(), b.edges()
        hj = jaccard(head_set(heads[0]), head_set(heads[1])) if heads else None
        return cls(before, after, jaccard(na, nb), jaccard(ea, eb), len(nb - na), len(na - nb), len(eb - ea),
                   len(ea - eb), layer_change(a, b), hj)


@dataclass
class StepRecord:
    step: int
    checkpoint: str | None  # the adapter directory, relative to the run
    file: str  # the step's circuit JSON, relative to OUT_DIR
    n_edges: int
    n_nodes: int
    heads: dict[str, list[int]] | None = None  # with --heads: the located head circuit


@dataclass
class Track:
    """Everything `track.json` holds."""

    run: str
    model: str
    method: str
    task: str  # where the pairs came from: the task's name or the pairs file
    n_pairs: int
    settings: dict  # the EdgesConfig
    headmap: str | None
    steps: list[StepRecord]
    vs_previous: list[Change]  # step i-1 -> step i
    vs_start: list[Change]  # step 0 -> step i
    schema: str = SCHEMA
    located_heads: bool = False
    notes: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, asdict(self))


def compare(steps: list[int], circuits: list[EdgeCircuit], heads: list[dict] | None = None
            ) -> tuple[list[Change], list[Change]]:
    """(vs previous, vs start): one `Change` per step after the first."""
    h = heads or None
    prev = [Change.of(steps[i - 1], steps[i], circuits[i - 1], circuits[i], h and (h[i - 1], h[i]))
            for i in range(1, len(steps))]
    start = [Change.of(steps[0], steps[i], circuits[0], circuits[i], h and (h[0], h[i]))
             for i in range(1, len(steps))]
    return prev, start


