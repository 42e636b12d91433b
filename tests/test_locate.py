"""The locating engine equals the plain algorithm; strategies, pre-screen and resume do what they say."""

import json
import math

import pytest

from circuitlab.circuit import Sample
from circuitlab.errors import CircuitlabError
from circuitlab.locate import (
    Engine, LocateConfig, PlainEvaluator, checkpoint_path, default_heads_per_layer, locate, parse_layers,
    random_heads, read_samples_file, top_heads,
)
from circuitlab.masking import HeadMask, hook_z_name
from circuitlab.scoring import score_requests

# Different lengths (padding inside a batch) and multi-token targets.
SAMPLES = [
    Sample("Question: What is the capital of France?\nAnswer:", " Paris", 0),
    Sample("The sky is", " blue", 1),
    Sample("One, two, three, four, five, six, seven, eight, nine,", " ten eleven", 2),
    Sample("Cats and dogs are", " animals that people keep", 3),
    Sample("2 + 2 =", " 4", None),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def close(a, b, rel=1e-5):
    return all((math.isnan(x) and math.isnan(y)) or abs(x - y) <= rel * abs(x) for x, y in zip(a, b))


def test_plain_loss_is_the_scoring_modules_target_nll(tiny):
    """Unmasked, the plain loss is the mean over samples of lm-eval-style continuation NLL per token."""
    scores = score_requests(tiny, [(s.prompt, s.target) for s in SAMPLES], progress=False)
    expected = sum(-sc.logprob / sc.n_tokens for sc in scores) / len(scores)
    assert PlainEvaluator(tiny, SAMPLES).loss(HeadMask()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fixture, strategy", [
    ("tiny", "layer-conditioned"), ("tiny_gqa", "layer-conditioned"), ("tiny_gqa", "greedy")])
def test_engine_equals_plain_algorithm(request, fixture, strategy):
    model = request.getfixturevalue(fixture)
    # 40 tokens per forward: several chunks per layer, rows of different lengths padded together.
    fast = locate(model, SAMPLES, LocateConfig(strategy, max_batch_tokens=40), progress=False)
    plain = locate(model, SAMPLES, LocateConfig(strategy, plain=True), progress=False)
    assert fast.heads == plain.heads
    assert all(len(hs) == default_heads_per_layer(model.n_heads) for hs in fast.heads.values())
    assert fast.baseline_loss == pytest.approx(plain.baseline_loss, rel=1e-5)
    assert close(fast.loss_curve, plain.loss_curve) and len(fast.loss_curve) == model.n_layers
    for name, table in plain.scores.items():
        assert all(close(r1, r2) for r1, r2 in zip(fast.scores[name], table))
    # Heads differ by far more than the tolerance, so a wrong head or layer would be caught.
    row = fast.scores[list(fast.scores)[0]][1]
    assert max(row) - min(row) > 10 * 1e-5 * max(row)


def test_layer_conditioned_is_algorithm_1_written_out(tiny):
    """Algorithm 1 by hand: every candidate set is one full plain forward; top-n by loss."""
    plain, n = PlainEvaluator(tiny, SAMPLES), 2
    chosen, curve = {}, []
    for layer in range(tiny.n_layers):
        base = HeadMask.of(chosen)
        losses = [plain.loss(base.plus(layer, [h])) for h in range(tiny.n_heads)]
        chosen[layer] = sorted(sorted(range(tiny.n_heads), key=lambda h: (-losses[h], h))[:n])
        curve.append(plain.loss(HeadMask.of(chosen)))
    found = locate(tiny, SAMPLES, LocateConfig(n_per_layer=n), progress=False)
    assert found.heads == chosen
    assert close(found.loss_curve, curve)
    assert found.baseline_loss == pytest.approx(plain.loss(HeadMask()), rel=1e-5)


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


def test_random_and_redundant_selections(tiny_gqa):
    a = locate(tiny_gqa, SAMPLES, LocateConfig("random", n_per_layer=2, seeds=(0, 1, 2)), progress=False)
    again = locate(tiny_gqa, SAMPLES, LocateConfig("random", n_per_layer=2, seeds=(0,)), progress=False)
    assert a.heads == again.heads and a.seed == 0
    assert set(a.curves) == {"seed 0", "seed 1", "seed 2"} and a.curves["seed 0"] == a.loss_curve
    assert len({json.dumps(s) for s in a.extra["selections"].values()}) == 3
    plain = PlainEvaluator(tiny_gqa, SAMPLES)
    sel1 = HeadMask.of(a.extra["selections"]["1"])
    assert a.curves["seed 1"][3] == pytest.approx(plain.loss(sel1), rel=1e-5)

    circuit = locate(tiny_gqa, SAMPLES, LocateConfig(n_per_layer=5), progress=False)
    red = locate(tiny_gqa, SAMPLES, LocateConfig("redundant", n_per_layer=3, circuit=circuit), progress=False)
    for layer, heads in red.heads.items():
        assert len(heads) == 3 and not set(heads) & set(circuit.heads[layer])
    with pytest.raises(CircuitlabError, match="fewer than n=4"):
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
    assert parse_layers("1-2", 4) == (1, 2) and parse_layers("3", 4) == (3, 3)
    for bad in ("2-1", "0-4", "x"):
        with pytest.raises(CircuitlabError):
            parse_layers(bad, 4)


def test_attribution_is_the_first_order_change_of_the_loss(tiny_gqa):
    """The estimate's slope, checked by finite differences: scale head h's z by (1 - eps)."""
    base, layer, head, eps = HeadMask.of({0: [1]}), 1, 3, 1e-3
    engine = Engine(tiny_gqa, SAMPLES)
    loss, estimate = engine.attribution(layer, base)
    plain = PlainEvaluator(tiny_gqa, SAMPLES)
    assert loss == pytest.approx(plain.loss(base), rel=1e-5)

    def scaled(z, hook=None):
        z = z.clone()
        z[:, :, head] *= 1 - eps
        return z

    with tiny_gqa.bridge.hooks(fwd_hooks=[(hook_z_name(layer), scaled)]):
        nudged = plain.loss(base)
    slope = (nudged - loss) / eps  # d loss / d(fraction of z_h removed)
    assert estimate[head] - loss == pytest.approx(slope, rel=0.05, abs=1e-6)


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


def test_resume_after_an_interruption_gives_the_same_circuit(tiny_gqa, tmp_path):
    ckpt = checkpoint_path(tmp_path / "c.json")
    config = LocateConfig(n_per_layer=2, max_batch_tokens=64)
    whole = locate(tiny_gqa, SAMPLES, config, progress=False)

    class Stop(Exception):
        pass

    def stop_after_layer_1(step):
        if step == "conditioned/1":
            raise Stop

    with pytest.raises(Stop):
        locate(tiny_gqa, SAMPLES, config, checkpoint=ckpt, progress=False, on_step=stop_after_layer_1)
    assert set(json.loads(ckpt.read_text())["done"]) == {"conditioned/0", "conditioned/1"}
    resumed = locate(tiny_gqa, SAMPLES, config, checkpoint=ckpt, progress=False)
    assert resumed.extra["resumed_steps"] == 2
    assert resumed.heads == whole.heads and resumed.loss_curve == whole.loss_curve
    assert resumed.to_dict()["scores"] == whole.to_dict()["scores"]

    # Another setting does not reuse the checkpoint.
    other = locate(tiny_gqa, SAMPLES, LocateConfig(n_per_layer=1, max_batch_tokens=64), checkpoint=ckpt, progress=False)
    assert other.extra["resumed_steps"] == 0


def test_bad_settings_are_one_line_errors(tiny):
    for config, message in [
        (LocateConfig(n_per_layer=5), "out of range"),
        (LocateConfig(n_per_layer=0), "out of range"),
        (LocateConfig(strategy="best"), "unknown strategy"),
        (LocateConfig(layers=(2, 9)), "out of range"),
        (LocateConfig(prescreen=9), "--prescreen"),
        (LocateConfig(strategy="redundant"), "--circuit"),
    ]:
        with pytest.raises(CircuitlabError, match=message):
            locate(tiny, SAMPLES, config, progress=False)


def test_defaults_and_samples_file(tmp_path):
    assert [default_heads_per_layer(h) for h in (32, 9, 4, 2, 1, 40)] == [8, 2, 1, 1, 1, 10]
    good = tmp_path / "s.jsonl"
    good.write_text('{"prompt": "a", "target": " b"}\n\n{"prompt": "c", "target": " d", "index": 7}\n')
    assert read_samples_file(good) == [Sample("a", " b", None), Sample("c", " d", 7)]
    for text in ['{"prompt": "a"}', "[1]", "{bad", '{"prompt": 1, "target": "x"}', ""]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(CircuitlabError):
            read_samples_file(bad)


@pytest.mark.parametrize("layers", [[0, 1, 2, 3], [1, 2], [3]])
def test_batched_curve_equals_its_steps_one_by_one(tiny_gqa, layers):
    """All steps of a curve share forwards; each must still be the plain loss of its own mask."""
    sel = HeadMask.of({la: [la % 8, (3 * la + 1) % 8] for la in layers})
    fast = Engine(tiny_gqa, SAMPLES, max_batch_tokens=48).curve(sel, layers)
    plain = PlainEvaluator(tiny_gqa, SAMPLES)
    assert close(fast, [plain.loss(sel.before(k + 1)) for k in layers])


@pytest.mark.parametrize("chunk", [1, 3, 512])
def test_unembedding_in_chunks_keeps_each_rows_targets(tiny_gqa, monkeypatch, chunk):
    """All forwards' targets go through the unembedding together, in chunks that may split a
    multi-token target; every row must still get the NLL of its own sample's tokens."""
    monkeypatch.setattr("circuitlab.locate.UNEMBED_TARGETS", chunk)
    base, heads = HeadMask.of({0: [1], 1: [2, 5]}), [None, 0, 3, 7]
    engine, plain = Engine(tiny_gqa, SAMPLES, max_batch_tokens=32), PlainEvaluator(tiny_gqa, SAMPLES)
    assert close(engine.losses(2, base, heads), plain.losses(2, base, heads))
    sel = base.plus(2, [4])
    assert close(engine.curve(sel, [0, 1, 2]), plain.curve(sel, [0, 1, 2]))
