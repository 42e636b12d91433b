"""Training on the tiny models (the plain HF model, PEFT and the Trainer): loss going down, accumulation,
resuming, run directories, heads."""

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.finetune import TrainConfig, choose_heads, finetune
from circuitlab.finetune.data import encode_docs, summed_loss
from circuitlab.finetune.heads import heads_circuit
from circuitlab.headmap import register

from circuitlab.models import bridge_hf, load_hf, load_model, load_plain
from circuitlab.tasks import load_docs
from tests.finetune.common import cfg, read_by, tiny_circuit

pytestmark = pytest.mark.usefixtures("one_thread")


# -- heads ----------------------------------------------------------------------------------------


def test_random_and_redundant_heads(tmp_path):
    model = load_model("tiny-llama")
    circuit = Circuit.load(tiny_circuit(model, tmp_path, {layer: [0, 1] for layer in range(4)}))
    assert choose_heads(circuit, "circuit", None, 0) == circuit.heads
    rnd = choose_heads(circuit, "random", None, 0)
    assert rnd == choose_heads(circuit, "random", None, 0) != choose_heads(circuit, "random", None, 1)
    assert set(rnd) == set(range(4)) and all(len(h) == 2 for h in rnd.values())
    red = choose_heads(circuit, "redundant", None, 5)
    assert all(set(red[layer]) == {2, 3} for layer in range(4))  # the only non-circuit heads
    with pytest.raises(CircuitlabError, match="fewer than n=3"):
        choose_heads(circuit, "redundant", 3, 0)
    anti = Circuit.load(circuit.save(tmp_path / "c.json"))
    with pytest.raises(CircuitlabError, match="no score table"):
        choose_heads(anti, "anti", None, 0)
    anti.selected_by = "conditioned"
    anti.scores = {"conditioned": [[4.0, 3.0, float(h), 0.5] for h in range(4)]}  # layer l: head 2 scores l
    # each layer's two lowest: 0.5 (head 3) and min(l, 3.0) -> head 2 below 3.0, head 1 from layer 3 on (tie: index)
    assert choose_heads(anti, "anti", None, 7) == {0: [2, 3], 1: [2, 3], 2: [2, 3], 3: [1, 3]}
    assert choose_heads(anti, "anti", 1, 0) == {0: [2], 1: [3], 2: [3], 3: [3]}  # layer 0's head 2 scores 0
    assert heads_circuit(anti, choose_heads(anti, "anti", None, 7), "anti", 7).seed is None
    uneven = {0: [], 1: [2, 3], 2: [1], 3: []}  # an edge circuit's heads: layer 0 may hold none
    assert heads_circuit(circuit, uneven, "circuit", 0).n_per_layer == 2


# -- training ---------------------------------------------------------------------------------------


def mean_loss(hf, seqs) -> float:
    with torch.no_grad():
        return (summed_loss(hf, seqs, 0, "cpu") / sum(len(s) - 1 for s in seqs)).item()


@pytest.mark.parametrize("method", ["headmap-mha", "headmap-hs", "lora", "headmap-mha+lora"])
def test_loss_decreases(tmp_path, method):
    model = load_plain("tiny-llama")
    docs = load_docs("capitals", "train", limit=8)
    seqs = encode_docs(model.tokenizer, docs, 512)
    before = mean_loss(load_hf("tiny-llama")[0], seqs)
    lr = 1e-2 if method.startswith("headmap") else 3e-3  # LoRA overshoots at 1e-2 on this random model
    c = cfg(**read_by(method, tiny_circuit(model, tmp_path), lr_peft=3e-3), epochs=3, lr=lr)
    result = finetune(model, c, tmp_path / "run", progress=False)
    register()
    loaded = PeftModel.from_pretrained(load_hf("tiny-llama")[0], tmp_path / "run" / "adapter")
    after = mean_loss(loaded, seqs)
    assert after < before - 0.05
    if c.variant and not c.tuner:  # a bridge over the adapted model runs HeadMap through the same layers
        bridged = bridge_hf("tiny-llama", loaded.get_base_model(), model.tokenizer)
        assert mean_loss(bridged.hf_model, seqs) == pytest.approx(after, abs=1e-5)
    assert result.train.steps == 6 and len(result.train.loss_curve) == 6
    assert result.trainable_params > 0 and 0 < result.trainable_share_pct < 100


def test_loss_covers_the_whole_text_and_ignores_padding():
    model = load_model("tiny-llama")
    a, b = [5, 6, 7, 8, 9], [10, 11, 12]
    hf = model.hf_model
    with torch.no_grad():
        batched = summed_loss(hf, [a, b], model.tokenizer.pad_token_id, "cpu")
        alone = sum(summed_loss(hf, [s], 0, "cpu") for s in (a, b))
        logits = hf(torch.tensor([a])).logits[0]
        by_hand = -torch.log_softmax(logits[:-1], -1)[torch.arange(4), torch.tensor(a[1:])].sum()
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(summed_loss(hf, [a], 0, "cpu"), by_hand, atol=1e-4, rtol=1e-5)


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    states = []
    for micro in (None, 1):
        model = load_plain("tiny-llama")
        c = cfg(method="headmap-mha+lora", circuit=tiny_circuit(model, tmp_path), epochs=1, micro_batch_size=micro)
        finetune(model, c, tmp_path / f"run{micro}", progress=False)
        states.append(load_file(str(tmp_path / f"run{micro}" / "adapter" / "adapter_model.safetensors")))
    a, b = states
    assert a.keys() == b.keys() and any("lora_" in k for k in a) and any("headmap_" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    def run(out, stop_at=None):
        model = load_plain("tiny-llama")
        c = cfg(method="headmap-hs+lora", circuit=circuit, epochs=3, max_train=8)

        def on_step(step):
            if step == stop_at:
                raise Interrupt

        return finetune(model, c, out, progress=False, on_step=on_step)

    circuit = tiny_circuit(load_plain("tiny-llama"), tmp_path)
    straight = run(tmp_path / "straight")
    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", stop_at=5)  # mid epoch 3: resumes from the end of epoch 2
    kept = [p.name for p in (tmp_path / "resumed" / "checkpoint").glob("checkpoint-*")]
    assert kept == ["checkpoint-4"] and not (tmp_path / "resumed" / "result.json").exists()
    resumed = run(tmp_path / "resumed")
    assert resumed.train.loss_curve == straight.train.loss_curve
    assert resumed.eval.metrics == straight.eval.metrics
    ca, cb = (load_file(str(tmp_path / run / "adapter" / "adapter_model.safetensors")) for run in ("straight", "resumed"))
    assert set(ca) == set(cb) and any("lora_" in k for k in ca) and all(torch.equal(ca[k], cb[k]) for k in ca)
    for name in ("straight", "resumed"):  # done: the resume state is gone, the adapter is the run's one copy
        assert [p.relative_to(tmp_path / name).as_posix() for p in (tmp_path / name).rglob("*.safetensors")] == [
            "adapter/adapter_model.safetensors"]


def test_run_directory_guards(tmp_path):
    model = load_model("tiny-llama")
    out = tmp_path / "run"
    first = finetune(model, cfg(method="base", max_train=None), out, progress=False)
    assert first.trainable_params == 0 and first.train.steps == 0
    assert finetune(model, cfg(method="base", max_train=None), out, progress=False) == first  # done: reused
    with pytest.raises(CircuitlabError, match="differs in: method"):
        finetune(model, cfg(method="lora", max_train=None), out, progress=False)


def test_held_out_evaluation_when_training_on_the_eval_split(tmp_path):
    model = load_model("tiny-llama")
    c = cfg(method="headmap-mha", heads="random", heads_per_layer=1, train_split="validation", eval_limit=None, epochs=1)
    r = finetune(model, c, tmp_path / "run", progress=False)
    n_val = len(load_docs("capitals", "validation"))
    assert r.eval.first_index == 8 and r.eval.n_docs == n_val - 8
    zero_shot = {**c.to_dict(), "method": "base", "heads": "circuit", "heads_per_layer": None}  # base maps no heads
    base = finetune(model, TrainConfig(**zero_shot), tmp_path / "base", progress=False)
    assert base.eval.data_fingerprint == r.eval.data_fingerprint  # same held-out docs


def test_random_heads_need_no_circuit_and_a_circuit_of_another_model_is_refused(tmp_path):
    model = load_model("tiny-llama")
    r = finetune(model, cfg(heads="random", heads_per_layer=2, epochs=1), tmp_path / "r", progress=False)
    assert len(r.heads) == 4 and all(len(h) == 2 for h in r.heads.values())
    other = Circuit(ModelInfo.of(load_model("tiny-llama-gqa")), TaskInfo("capitals", "train"), [], "x", 1, {0: [0]})
    other.save(tmp_path / "gqa.json")
    with pytest.raises(CircuitlabError, match="circuit was located on tiny-llama-gqa"):
        finetune(model, cfg(circuit=str(tmp_path / "gqa.json")), tmp_path / "bad", progress=False)


def test_headmap_locates_a_circuit_when_none_is_given(tmp_path):
    model = load_model("tiny-llama")
    r = finetune(model, cfg(epochs=1, max_train=16), tmp_path / "run", progress=False)
    located = Circuit.load(tmp_path / "run" / "located_circuit.json")
    assert located.strategy == "layer-conditioned" and located.task.name == "capitals"
    assert r.heads == {str(k): v for k, v in located.heads.items()}
    assert r.circuit["strategy"] == "layer-conditioned"


def test_a_run_records_each_documents_gold_and_margin():
    """What `circuitlab stats` pairs: per document the gold answer, and the gold log-likelihood minus the best
    other choice's, taken from the evaluation's own per-choice log-likelihoods (positive exactly where `acc`
    counts the document right, barring ties)."""
    from circuitlab.evaluate.run import evaluate
    from circuitlab.finetune.run import evaluate_docs

    model = load_plain("tiny-llama")
    docs = load_docs("capitals", "validation", limit=12)
    record = evaluate_docs(model, "capitals", docs, "validation", progress=False)
    preds = evaluate(model, "capitals", split="validation", progress=False, docs=docs).predictions
    assert record.golds == [d.gold for d in docs] and len(record.margins) == len(docs)
    for m, p in zip(record.margins, preds):
        others = [lp for i, lp in enumerate(p.logprobs) if i != p.gold]
        assert m == pytest.approx(p.logprobs[p.gold] - max(others)) and (m > 0) == (p.pred == p.gold)


def test_heads_seed_draws_the_heads_and_leaves_the_training_seed(tmp_path):
    """Two head sets that train with one seed (a study's balanced seeds) differ only in `heads_seed`."""
    from circuitlab.circuits.circuit import Circuit
    from circuitlab.finetune.heads import choose_heads

    model = load_plain("tiny-llama")
    a = finetune(model, cfg(heads="random", heads_per_layer=1, seed=0, heads_seed=5, epochs=1), tmp_path / "a",
                 progress=False)
    drawn = Circuit.load(tmp_path / "a" / "circuit.json").heads
    stand_in = Circuit.load(tmp_path / "a" / "circuit.json")
    assert drawn == choose_heads(stand_in, "random", 1, 5) != choose_heads(stand_in, "random", 1, 0)
    assert a.config["seed"] == 0 and a.config["heads_seed"] == 5
    with pytest.raises(CircuitlabError, match="heads_seed seeds a random head draw"):
        cfg(heads_seed=5)
