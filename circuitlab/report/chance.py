"""Chance levels for the overlap figures: what the same tables would show for circuits drawn at random.

A circuit picks heads per layer, so the null model is: for every layer, each circuit draws as many heads as it
really has there, uniformly and independently of the other circuits. Under it the number of heads two circuits
share in a layer is hypergeometric, and the shared total is the convolution of the layers' distributions; the
expected overlap rate and Jaccard similarity follow exactly from that distribution (no sampling). A head's
number of circuits is a sum of independent Bernoullis (one per circuit, p = its heads in that layer / heads per
layer), which gives the expected Figure 2b histogram. The tables next to the chance levels are then read as
"more (or less) shared than random circuits of these sizes would be".
"""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd

from circuitlab.circuits.circuit import Circuit


def _sizes(c: Circuit) -> list[int]:
    return [len(set(c.heads.get(layer, []))) for layer in range(c.model.n_layers)]


def shared_distribution(a: Circuit, b: Circuit) -> np.ndarray:
    """P(|A ∩ B| = k), k = 0.., for random circuits with a's and b's heads per layer."""
    n = a.model.n_heads
    total = np.ones(1)
    for na, nb in zip(_sizes(a), _sizes(b)):
        layer = np.array([comb(na, k) * comb(n - na, nb - k) for k in range(min(na, nb) + 1)], float) / comb(n, nb)
        total = np.convolve(total, layer)
    return total


def expected_shared(a: Circuit, b: Circuit) -> float:
    """E |A ∩ B| under the null model: the sum over layers of a's heads x b's heads / heads per layer."""
    return float(np.arange(len(p := shared_distribution(a, b))) @ p)


def chance_overlap(a: Circuit, b: Circuit) -> float:
    """E |A ∩ B| / |A| under the null model (NaN when A is empty)."""
    size = sum(_sizes(a))
    return expected_shared(a, b) / size if size else float("nan")


def chance_jaccard(a: Circuit, b: Circuit) -> float:
    """E |A ∩ B| / |A ∪ B| under the null model (1.0 for two empty circuits, as `circuits.heads.jaccard`)."""
    size = sum(_sizes(a)) + sum(_sizes(b))
    if size == 0:
        return 1.0
    p = shared_distribution(a, b)
    k = np.arange(len(p))
    return float(p @ (k / (size - k)))


def chance_distribution(circuits: list[Circuit]) -> pd.Series:
    """The expected number of heads chosen by exactly k of the circuits, k = 0..len(circuits)."""
    m = circuits[0].model
    expected = np.zeros(len(circuits) + 1)
    for layer in range(m.n_layers):
        p = np.ones(1)
        for c in circuits:
            q = len(set(c.heads.get(layer, []))) / m.n_heads
            p = np.convolve(p, [1 - q, q])
        expected += m.n_heads * p
    return pd.Series(expected, index=pd.Index(range(len(circuits) + 1), name="n_tasks"), name="chance_n_heads")
