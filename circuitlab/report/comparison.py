"""How much tasks' circuits share: overlap rate, Jaccard similarity and head frequency.

Tables are pandas DataFrames indexed by circuit label (the task name), so they print, plot and save
as CSV as they are. Circuits of different models (other dimensions or other weights) share no
meaningful head indices, so comparing them is refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.heads import jaccard
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import write_text_atomic
from circuitlab.models.identity import check_same_model
from circuitlab.report import chance
from circuitlab.report.style import circuit_labels


def check_one_model(circuits: list[Circuit], labels: list[str] | None = None) -> None:
    """Refuse circuits located on models with other dimensions or other weights."""
    if not circuits:
        raise CircuitlabError("no circuits to compare")
    labels = labels or circuit_labels(circuits)
    first = circuits[0].model.identity()
    for circuit, label in zip(circuits[1:], labels[1:]):
        try:
            check_same_model(circuit.model.identity(), first, f"circuit {label}", made="located")
        except CircuitlabError as e:
            raise CircuitlabError(f"cannot compare circuits of different models: {e} ({labels[0]}'s model)") from None


def head_set(circuit: Circuit) -> frozenset[tuple[int, int]]:
    return frozenset(circuit.head_list)


def overlap_rate(a: Circuit, b: Circuit) -> float:
    """|A ∩ B| / |A|: the share of A's heads that B also chose (NaN when A is empty)."""
    A, B = head_set(a), head_set(b)
    return len(A & B) / len(A) if A else float("nan")


def circuit_jaccard(a: Circuit, b: Circuit) -> float:
    """The Jaccard similarity of two circuits' heads (`circuits.heads.jaccard`)."""
    return jaccard(head_set(a), head_set(b))


def pairwise(circuits: list[Circuit], metric, labels: list[str] | None = None) -> pd.DataFrame:
    """metric(row circuit, column circuit) for every pair, as a square table."""
    labels = labels or circuit_labels(circuits)
    rows = [[metric(a, b) for b in circuits] for a in circuits]
    return pd.DataFrame(rows, index=pd.Index(labels, name="circuit"), columns=pd.Index(labels, name="other"))


def shared_heads(a: Circuit, b: Circuit) -> int:
    return len(head_set(a) & head_set(b))


def head_frequency(circuits: list[Circuit]) -> pd.DataFrame:
    """Layers x heads table: in how many of the circuits each head appears."""
    check_one_model(circuits)
    m = circuits[0].model
    counts = Counter(h for c in circuits for h in head_set(c))
    rows = [[counts[(layer, h)] for h in range(m.n_heads)] for layer in range(m.n_layers)]
    return pd.DataFrame(rows, index=pd.Index(range(m.n_layers), name="layer"),
                        columns=pd.Index(range(m.n_heads), name="head"))


def frequency_distribution(frequency: pd.DataFrame, n_circuits: int) -> pd.Series:
    """How many heads were chosen by exactly k circuits, for k = 0..n_circuits (paper, Figure 2b)."""
    counts = Counter(int(x) for x in frequency.to_numpy().ravel())
    return pd.Series([counts[k] for k in range(n_circuits + 1)],
                     index=pd.Index(range(n_circuits + 1), name="n_tasks"), name="n_heads")


@dataclass
class Comparison:
    """Every table that says how a set of circuits (one model) relate."""

    labels: list[str]
    overlap: pd.DataFrame  # row A, column B: |A ∩ B| / |A|
    jaccard: pd.DataFrame
    shared: pd.DataFrame  # |A ∩ B|
    frequency: pd.DataFrame  # layers x heads: number of circuits containing the head
    distribution: pd.Series  # k -> number of heads in exactly k circuits
    chance_overlap: pd.DataFrame  # the same tables for random circuits of the same sizes (`report.chance`)
    chance_jaccard: pd.DataFrame
    chance_distribution: pd.Series

    def save_csv(self, out_dir: str | Path) -> list[Path]:
        out_dir = Path(out_dir)
        tables = {"overlap_rate": self.overlap, "jaccard": self.jaccard, "shared_heads": self.shared,
                  "head_frequency": self.frequency, "frequency_distribution": self.distribution,
                  "chance_overlap_rate": self.chance_overlap, "chance_jaccard": self.chance_jaccard,
                  "chance_frequency_distribution": self.chance_distribution}
        return [write_text_atomic(out_dir / f"{name}.csv", t.to_csv()) for name, t in tables.items()]


def compare(circuits: list[Circuit], labels: list[str] | None = None) -> Comparison:
    labels = labels or circuit_labels(circuits)
    if len(labels) != len(circuits) or len(set(labels)) != len(labels):
        raise CircuitlabError("each circuit needs its own distinct label")
    check_one_model(circuits, labels)
    frequency = head_frequency(circuits)
    return Comparison(
        labels=labels,
        overlap=pairwise(circuits, overlap_rate, labels),
        jaccard=pairwise(circuits, circuit_jaccard, labels),
        shared=pairwise(circuits, shared_heads, labels),
        frequency=frequency,
        distribution=frequency_distribution(frequency, len(circuits)),
        chance_overlap=pairwise(circuits, chance.chance_overlap, labels),
        chance_jaccard=pairwise(circuits, chance.chance_jaccard, labels),
        chance_distribution=chance.chance_distribution(circuits),
    )
