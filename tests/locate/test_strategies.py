"""Each strategy selects what it says: greedy is the top of the single-head table, random and
redundant draw seeded heads (redundant never from the circuit), a layer range stays in range,
the pre-screen evaluates only the attribution top K."""

import json
import math

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.heads import HeadMask, random_heads, top_heads
from circuitlab.locate import LocateConfig, PlainEvaluator, get_strategy, locate
from tests.helpers import SAMPLES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_greedy_is_the_top_of_the_single_head_table(tiny_gqa):
    found = locate(tiny_gqa, SAMPLES, LocateConfig("greedy", n_per_layer=3), progress=False)
    table = found.scores["single"]
    plain = PlainEvaluator(tiny_gqa, SAMPLES)
    assert table[2][5] == pytest.approx(plain.loss(HeadMask.of({2: [5]})), rel=1e-5)
    for layer, heads in found.heads.items():
        assert heads == top_heads(table[layer], 3)
        assert min(table[layer][h] for h in heads) >= max(x for h, x in enumerate(table[layer]) if h not in heads)
    # The curve masks the selected heads of layers 0..k.
    sel = HeadMask.of(found.heads)
    assert found.loss_curve[1] == pytest.approx(plain.loss(sel.before(2)), rel=1e-5)
    assert found.selected_by == "single"


def test_single_is_greedy_under_another_name(tiny):
    """`single` and `greedy` are resolved in one place: same run, same heads, same table."""
    assert get_strategy("single") is get_strategy("greedy")
    single = locate(tiny, SAMPLES[:2], LocateConfig("single", n_per_layer=1), progress=False)
    greedy = locate(tiny, SAMPLES[:2], LocateConfig("greedy", n_per_layer=1), progress=False)
    assert single.heads == greedy.heads and single.selected_by == greedy.selected_by == "single"


def test_random_and_redundant_selections(tiny_gqa):
    a = locate(tiny_gqa, SAMPLES, LocateConfig("random", n_per_layer=2, seeds=(0, 1, 2)), progress=False)
    again = locate(tiny_gqa, SAMPLES, LocateConfig("random", n_per_layer=2, seeds=(0,)), progress=False)
    assert a.heads == again.heads and a.seed == 0 and a.loss_curve == again.loss_curve
    assert [(s.strategy, s.seed) for s in a.selections] == [("random", 1), ("random", 2)]
    assert len({json.dumps(h) for h in [a.heads] + [s.heads for s in a.selections]}) == 3
    plain = PlainEvaluator(tiny_gqa, SAMPLES)
    sel1 = HeadMask.of(a.selections[0].heads)
    assert a.selections[0].loss_curve[3] == pytest.approx(plain.loss(sel1), rel=1e-5)

    circuit = locate(tiny_gqa, SAMPLES, LocateConfig(n_per_layer=5), progress=False)
    red = locate(tiny_gqa, SAMPLES, LocateConfig("redundant", n_per_layer=3, circuit=circuit), progress=False)
    for layer, heads in red.heads.items():
        assert len(heads) == 3 and not set(heads) & set(circuit.heads[layer])
    assert red.excluded.heads == circuit.heads
    with pytest.raises(CircuitlabError, match="layer 0 has only 3 heads outside the circuit"):
        locate(tiny_gqa, SAMPLES, LocateConfig("redundant", n_per_layer=4, circuit=circuit), progress=False)
    assert random_heads(5, [0, 1], 8, 2) == random_heads(5, [0, 1], 8, 2)


def test_redundant_refuses_a_circuit_from_another_model(tiny, tiny_gqa):
    other = locate(tiny_gqa, SAMPLES[:2], LocateConfig("random", n_per_layer=1), progress=False)
    with pytest.raises(CircuitlabError, match="located on tiny-llama-gqa"):
        locate(tiny, SAMPLES, LocateConfig("redundant", n_per_layer=1, circuit=other), progress=False)


def test_layer_range(tiny_gqa):
    found = locate(tiny_gqa, SAMPLES, LocateConfig(layers=(1, 2)), progress=False)
    assert sorted(found.heads) == [1, 2] and len(found.loss_curve) == 2
    assert all(math.isnan(x) for x in found.scores["conditioned"][0] + found.scores["conditioned"][3])
    plain = PlainEvaluator(tiny_gqa, SAMPLES)
    assert found.loss_curve[-1] == pytest.approx(plain.loss(HeadMask.of(found.heads)), rel=1e-5)


def test_prescreen_evaluates_only_the_top_k(tiny_gqa):
    k = 3
    found = locate(tiny_gqa, SAMPLES, LocateConfig(n_per_layer=2, prescreen=k), progress=False)
    exact, estimate = found.scores["conditioned"], found.scores["conditioned_estimate"]
    for layer in range(tiny_gqa.n_layers):
        evaluated = [h for h, x in enumerate(exact[layer]) if not math.isnan(x)]
        assert evaluated == sorted(sorted(range(8), key=lambda h: (-estimate[layer][h], h))[:k])
        assert set(found.heads[layer]) <= set(evaluated)
    full = locate(tiny_gqa, SAMPLES, LocateConfig(n_per_layer=2, prescreen=8), progress=False)
    assert full.heads == locate(tiny_gqa, SAMPLES, LocateConfig(n_per_layer=2), progress=False).heads


def test_finetune_draws_the_same_random_heads_as_locate(tiny_gqa):
    """One sampler: `finetune --heads random --seed S` maps the heads `locate --strategy random --seed S` draws."""
    from circuitlab.finetune.heads import choose_heads

    located = locate(tiny_gqa, SAMPLES[:2], LocateConfig("random", n_per_layer=3, seeds=(7,)), progress=False)
    circuit = locate(tiny_gqa, SAMPLES[:2], LocateConfig(n_per_layer=3), progress=False)
    assert choose_heads(circuit, "random", 3, seed=7) == located.heads
    redundant = locate(tiny_gqa, SAMPLES[:2], LocateConfig("redundant", n_per_layer=2, seeds=(4,), circuit=circuit),
                       progress=False)
    assert choose_heads(circuit, "redundant", 2, seed=4) == redundant.heads
