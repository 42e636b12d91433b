"""How alike a study's located circuits are, against counts made by hand."""

import pytest

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.studies.agreement import agreement, table


def circuit(heads: dict, fingerprint: str = "f00d") -> Circuit:
    model = ModelInfo("tiny", "tiny", None, fingerprint, 2, 4, 4, 8, 32)  # 2 layers of 4 heads
    return Circuit(model=model, task=TaskInfo("t", "train"), samples=[], strategy="hand-made", n_per_layer=0,
                   heads=heads)


def test_shared_heads_and_chance_by_hand():
    a = circuit({0: [0, 1], 1: [0]})
    b = circuit({0: [1, 2], 1: [0]})
    c = circuit({0: [3], 1: [1, 2]})
    got = agreement("t", [a, b, c])
    # a and b share (0, 1) and (1, 0); c shares nothing. By chance, per layer (a's heads x b's heads) / 4 heads:
    # a, b: (2 x 2 + 1 x 1) / 4; a, c and b, c: (2 x 1 + 1 x 2) / 4
    assert got.shared == pytest.approx(2 / 3) and (got.shared_min, got.shared_max) == (0, 2)
    assert got.chance == pytest.approx((5 / 4 + 1 + 1) / 3)
    assert (got.circuits, got.heads, got.in_all, got.in_any) == (3, 3, 0, 7)
    assert table([got])[-1] == "| t | 3 | 3.0 | 0.7 (0–2) | 1.1 | 0 | 7 |"
    assert agreement("t", [a]) is None


def test_circuits_of_two_models_are_refused():
    with pytest.raises(CircuitlabError):
        agreement("t", [circuit({0: [0]}), circuit({0: [0]}, fingerprint="beef")])
