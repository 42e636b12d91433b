"""The locating engine equals the plain algorithm (the paper's code), which equals Algorithm 1
written out by hand; the attribution estimate is the loss's first-order change."""

import pytest

from circuitlab.circuits.heads import HeadMask
from circuitlab.locate import Engine, LocateConfig, PlainEvaluator, default_heads_per_layer, locate
from circuitlab.locate.masking import hook_z_name
from circuitlab.evaluate.scoring import score_requests
from tests.helpers import SAMPLES, close

pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_attribution_is_the_first_order_change_of_the_loss(tiny_gqa, protocol):
    """The estimate's slope, checked by finite differences: scale head h's z by (1 - eps); under either
    protocol's loss (official: EOS-extended targets, token mean)."""
    base, layer, head, eps = HeadMask.of({0: [1]}), 1, 3, 1e-3
    engine = Engine(tiny_gqa, SAMPLES, protocol=protocol)
    loss, estimate = engine.attribution(layer, base)
    plain = PlainEvaluator(tiny_gqa, SAMPLES, protocol=protocol)
    assert loss == pytest.approx(plain.loss(base), rel=1e-5)

    def scaled(z, hook=None):
        z = z.clone()
        z[:, :, head] *= 1 - eps
        return z

    with tiny_gqa.bridge.hooks(fwd_hooks=[(hook_z_name(layer), scaled)]):
        nudged = plain.loss(base)
    slope = (nudged - loss) / eps  # d loss / d(fraction of z_h removed)
    assert estimate[head] - loss == pytest.approx(slope, rel=0.05, abs=1e-6)


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
    monkeypatch.setattr("circuitlab.locate.blocks.UNEMBED_TARGETS", chunk)
    base, heads = HeadMask.of({0: [1], 1: [2, 5]}), [None, 0, 3, 7]
    engine, plain = Engine(tiny_gqa, SAMPLES, max_batch_tokens=32), PlainEvaluator(tiny_gqa, SAMPLES)
    assert close(engine.losses(2, base, heads), plain.losses(2, base, heads))
    sel = base.plus(2, [4])
    assert close(engine.curve(sel, [0, 1, 2]), plain.curve(sel, [0, 1, 2]))



def test_the_last_block_at_targets_is_used_and_exact_after_plain_forwards(monkeypatch):
    """A plain forward wires the bridge's capture hooks into the last block; they must neither turn the
    target-only last block off nor change a loss. Past the last layer nothing more runs."""
    from circuitlab.locate import blocks
    from circuitlab.models import load_model

    model = load_model("tiny-llama-gqa")
    plain = PlainEvaluator(model, SAMPLES)
    plain.loss(HeadMask())  # runs every block whole
    calls = []
    real = blocks.llama_block_at
    monkeypatch.setattr(blocks, "llama_block_at", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = HeadMask.of({0: [1], 1: [2, 5], 2: [0], 3: [7]})
    engine = Engine(model, SAMPLES, max_batch_tokens=64)
    assert close(engine.losses(2, base.before(2), [None, 3]), plain.losses(2, base.before(2), [None, 3]))
    assert calls  # the fast path ran
    # The loss with every layer's heads masked: the trunk past the last block, no block applied twice.
    assert close(engine.losses(4, base, [None]), [plain.loss(base)])
    # A hook on a hook point of the last block (here a HeadMap-like reader) makes it run whole.
    calls.clear()
    with model.bridge.hooks(fwd_hooks=[("blocks.3.attn.hook_z", lambda z, hook: z)]):
        assert close(engine.losses(2, base.before(2), [3]), plain.losses(2, base.before(2), [3]))
    assert not calls


# ---------------------------------------------------------------- the official protocol

def official_loss_by_hand(model, samples):
    """The official locating.py's loss, nothing masked, written out with HF's own `labels` loss: the text
    prompt + target + EOS, the prompt's tokens labelled -100; one batch of all samples, so the mean
    over every labelled token of the set."""
    import torch

    tok, total, count = model.tokenizer, 0.0, 0
    for s in samples:
        prompt = tok(s.prompt).input_ids
        full = tok(s.prompt + s.target).input_ids + [tok.eos_token_id]
        labels = [-100] * len(prompt) + full[len(prompt):]
        with torch.no_grad():
            loss = model.hf_model(torch.tensor([full]), labels=torch.tensor([labels])).loss.item()
        n = len(full) - len(prompt)  # labelled tokens: the target's and EOS
        total, count = total + loss * n, count + n
    return total / count


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gqa"])
def test_official_loss_is_the_token_mean_over_targets_ending_with_eos(request, fixture):
    model = request.getfixturevalue(fixture)
    expected = official_loss_by_hand(model, SAMPLES)
    assert PlainEvaluator(model, SAMPLES, protocol="official").loss(HeadMask()) == pytest.approx(expected, rel=1e-5)
    assert Engine(model, SAMPLES, protocol="official").losses(0, HeadMask(), [None])[0] == pytest.approx(expected, rel=1e-5)
    assert PlainEvaluator(model, SAMPLES).loss(HeadMask()) != pytest.approx(expected, rel=2e-5)  # it matters


@pytest.mark.parametrize("fixture, strategy", [("tiny", "layer-conditioned"), ("tiny_gqa", "layer-conditioned"),
                                               ("tiny_gqa", "greedy")])
def test_engine_equals_plain_algorithm_under_the_official_protocol(request, fixture, strategy):
    model = request.getfixturevalue(fixture)
    fast = locate(model, SAMPLES, LocateConfig(strategy, max_batch_tokens=40, protocol="official"), progress=False)
    plain = locate(model, SAMPLES, LocateConfig(strategy, plain=True, protocol="official"), progress=False)
    assert fast.protocol == plain.protocol == "official"
    assert fast.heads == plain.heads
    assert fast.baseline_loss == pytest.approx(plain.baseline_loss, rel=1e-5)
    assert fast.baseline_loss == pytest.approx(official_loss_by_hand(model, SAMPLES), rel=1e-5)
    assert close(fast.loss_curve, plain.loss_curve)
    for name, table in plain.scores.items():
        assert all(close(r1, r2) for r1, r2 in zip(fast.scores[name], table))


@pytest.mark.parametrize("chunk", [1, 512])
def test_official_losses_and_curve_equal_plain(tiny_gqa, monkeypatch, chunk):
    """Token weights follow each row through packing and unembedding chunks (the attribution estimate
    under this loss: `test_attribution_is_the_first_order_change_of_the_loss`)."""
    monkeypatch.setattr("circuitlab.locate.blocks.UNEMBED_TARGETS", chunk)
    base, heads = HeadMask.of({0: [1], 1: [2, 5]}), [None, 0, 3, 7]
    engine = Engine(tiny_gqa, SAMPLES, max_batch_tokens=32, protocol="official")
    plain = PlainEvaluator(tiny_gqa, SAMPLES, protocol="official")
    assert all(e.targets[-1] == tiny_gqa.tokenizer.eos_token_id for e in engine.encoded)
    assert close(engine.losses(2, base, heads), plain.losses(2, base, heads))
    sel = base.plus(2, [4])
    assert close(engine.curve(sel, [0, 1, 2]), plain.curve(sel, [0, 1, 2]))

