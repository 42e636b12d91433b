"""The chance levels against brute force: every random circuit of the given sizes per layer, enumerated."""

import itertools
import math

import numpy as np
import pytest

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.report import chance
from circuitlab.report.comparison import compare

L, H = 3, 4
SIZES = {"a": [2, 0, 1], "b": [1, 3, 2], "c": [4, 1, 0]}  # heads per layer; a layer may be empty or full


def circuit(task: str, sizes: list[int]) -> Circuit:
    model = ModelInfo("tiny", "tiny", None, "f00d", L, H, H, 8, 32)
    heads = {layer: list(range(n)) for layer, n in enumerate(sizes) if n}
    return Circuit(model=model, task=TaskInfo(task, "train"), samples=[], strategy="hand-made", n_per_layer=0,
                   heads=heads)


def every_circuit(sizes: list[int]):
    """Every head set with `sizes[layer]` heads in each layer, as sets of (layer, head)."""
    per_layer = [[{(layer, h) for h in combo} for combo in itertools.combinations(range(H), n)]
                 for layer, n in enumerate(sizes)]
    for choice in itertools.product(*per_layer):
        yield set().union(*choice)


def test_overlap_and_jaccard_are_the_means_over_every_pair_of_random_circuits():
    for x, y in itertools.permutations(SIZES, 2):
        pairs = [(A, B) for A in every_circuit(SIZES[x]) for B in every_circuit(SIZES[y])]
        overlap = np.mean([len(A & B) / len(A) for A, B in pairs])
        jac = np.mean([len(A & B) / len(A | B) for A, B in pairs])
        a, b = circuit(x, SIZES[x]), circuit(y, SIZES[y])
        assert chance.chance_overlap(a, b) == pytest.approx(overlap, abs=1e-12)
        assert chance.chance_jaccard(a, b) == pytest.approx(jac, abs=1e-12)
    empty = circuit("e", [0, 0, 0])
    assert math.isnan(chance.chance_overlap(empty, circuit("a", SIZES["a"])))
    assert chance.chance_jaccard(empty, empty) == 1.0


def test_frequency_distribution_is_the_mean_histogram_over_every_draw():
    names = list(SIZES)
    hist = np.zeros(len(names) + 1)
    draws = list(itertools.product(*(list(every_circuit(SIZES[n])) for n in names)))
    for sets in draws:
        counts = [sum((layer, h) in s for s in sets) for layer in range(L) for h in range(H)]
        hist += np.bincount(counts, minlength=len(names) + 1)
    got = chance.chance_distribution([circuit(n, SIZES[n]) for n in names])
    np.testing.assert_allclose(got.to_numpy(), hist / len(draws), atol=1e-12)
    assert got.sum() == pytest.approx(L * H)


def test_the_comparison_and_its_figures_carry_the_chance_level(tmp_path):
    from circuitlab.report import comparison_figures as cf

    result = compare([circuit(n, s) for n, s in SIZES.items()])
    assert result.chance_overlap.loc["a", "b"] == pytest.approx(chance.chance_overlap(circuit("a", SIZES["a"]),
                                                                                      circuit("b", SIZES["b"])))
    fig = cf.overlap_heatmap(result)
    assert "chance level" in fig.layout.title.text and "chance" in fig.data[0].hovertemplate
    np.testing.assert_allclose(np.array(fig.data[0].customdata, float), result.chance_overlap.to_numpy())
    bars = cf.frequency_distribution_bar(result)
    assert [t.type for t in bars.data] == ["bar", "scatter"]
    np.testing.assert_allclose(bars.data[1].y, result.chance_distribution.to_numpy())
    names = {p.name for p in result.save_csv(tmp_path)}
    assert {"chance_overlap_rate.csv", "chance_jaccard.csv", "chance_frequency_distribution.csv"} <= names
