"""Training on the tiny models: PEFT baselines, loss going down, accumulation, resuming, the table."""

import json

import pytest
import torch

from circuitlab.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.cli import main
from circuitlab.errors import CircuitlabError
from circuitlab.headmap import HeadMapConfig
from circuitlab.hf import load_adapter
from circuitlab.models import load_model
from circuitlab.tasks import load_docs
from circuitlab.train import (
    TrainConfig,
    build_adapters,
    choose_heads,
    encode_docs,
    param_groups,
    results_table,
    summed_loss,
    train_and_eval,
)

HEADS = {0: [0, 2], 1: [1, 3], 3: [0, 1]}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_circuit(model, tmp_path, heads=HEADS) -> str:
    c = Circuit(ModelInfo.of(model), TaskInfo("capitals", "train"), [], "hand-made", 2, heads)
    return str(c.save(tmp_path / "circuit.json"))


def cfg(**kw) -> TrainConfig:
    base = dict(model="tiny-llama", task="capitals", method="headmap-mha", rank=4, batch_size=4, epochs=2,
                warmup_steps=1, max_train=8, eval_limit=8, lr=1e-2)
    return TrainConfig(**{**base, **kw})


# -- PEFT baselines and combinations ---------------------------------------------------------------


def lora_count(model, names, r, dora=False) -> int:
    """r * (in + out) per targeted Linear, plus DoRA's magnitude vector (out) — from the config dims."""
    d, f = model.d_model, model.config.intermediate_size
    q, kv = model.n_heads * model.d_head, model.n_kv_heads * model.d_head
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "up_proj": (d, f), "down_proj": (f, d)}
    per_layer = sum(r * (shapes[n][0] + shapes[n][1]) + (shapes[n][1] if dora else 0) for n in names)
    return per_layer * model.n_layers


def headmap_count(model, heads, r) -> int:
    return sum((len(h) * model.d_head + 1) * r + (r + 1) * model.d_model for h in heads.values())


ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
VUD = ("v_proj", "up_proj", "down_proj")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
@pytest.mark.parametrize("method", ["lora", "dora", "headmap-mha", "headmap-hs+lora", "headmap-mha+dora"])
def test_methods_build_with_expected_parameter_counts(name, method):
    model = load_model(name)
    base = sum(p.numel() for p in model.hf_model.parameters())
    c = cfg(model=name, method=method, rank=8)
    adapters = build_adapters(model, c, HEADS if c.variant else None)
    want = headmap_count(model, HEADS, 8) if c.variant else 0
    if c.tuner:
        want += lora_count(model, VUD if c.variant else ALL, 8, dora=c.tuner == "dora")
    assert adapters.n_trainable == want
    assert adapters.base_params == base
    assert adapters.share == pytest.approx(100 * want / base)
    trainable = [n for n, p in model.hf_model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable) and len(trainable) == len(adapters.peft_params)
    if c.tuner:  # PEFT wrapped the real Linear layers inside the bridge's wrappers, and only the targets
        wrapped = {n.split("._original_component")[-2].rsplit(".", 1)[-1]
                   for n, _ in model.hf_model.named_modules() if n.endswith("lora_A")}
        assert wrapped == set(VUD if c.variant else ALL)
    groups = param_groups(adapters, c)
    assert [g["lr"] for g in groups] == ([c.headmap_lr] if c.variant else []) + ([c.peft_lr] if c.tuner else [])


def test_peft_layers_change_the_bridge_output_once_trained():
    model = load_model("tiny-llama")
    ids = torch.tensor([[3, 7, 11, 13, 17]])
    with torch.no_grad():
        before = model.hf_model(ids).logits
    adapters = build_adapters(model, cfg(method="lora"), None)
    with torch.no_grad():
        assert torch.equal(model.hf_model(ids).logits, before)  # LoRA B starts at zero
        for n, p in model.hf_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
        captured = []
        with model.bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: captured.append(z) or z)]):
            after = model.hf_model(ids).logits
    assert captured and (after - before).abs().max() > 1e-3
    assert adapters.n_trainable > 0


# -- heads ----------------------------------------------------------------------------------------


def test_random_and_redundant_heads(tmp_path):
    model = load_model("tiny-llama")
    circuit = Circuit.load(tiny_circuit(model, tmp_path, {layer: [0, 1] for layer in range(4)}))
    assert choose_heads(circuit, "circuit", None, 4, 0) == circuit.heads
    rnd = choose_heads(circuit, "random", None, 4, 0)
    assert rnd == choose_heads(circuit, "random", None, 4, 0) != choose_heads(circuit, "random", None, 4, 1)
    assert set(rnd) == set(range(4)) and all(len(h) == 2 for h in rnd.values())
    red = choose_heads(circuit, "redundant", None, 4, 5)
    assert all(set(red[layer]) == {2, 3} for layer in range(4))  # the only non-circuit heads
    with pytest.raises(CircuitlabError, match="fewer than 3"):
        choose_heads(circuit, "redundant", 3, 4, 0)


# -- training ---------------------------------------------------------------------------------------


def mean_loss(model, seqs, active) -> float:
    with torch.no_grad(), active:
        return (summed_loss(model.hf_model, seqs, model.tokenizer.pad_token_id, "cpu") / sum(len(s) - 1 for s in seqs)).item()


@pytest.mark.parametrize("method", ["headmap-mha", "headmap-hs", "lora", "headmap-mha+lora"])
def test_loss_decreases(tmp_path, method):
    model = load_model("tiny-llama")
    docs = load_docs("capitals", "train", limit=8)
    seqs = encode_docs(model.tokenizer, docs, 512)
    before = mean_loss(model, seqs, torch.no_grad())
    lr = 1e-2 if method.startswith("headmap") else 3e-3  # LoRA overshoots at 1e-2 on this random model
    c = cfg(method=method, circuit=tiny_circuit(model, tmp_path), epochs=3, lr=lr, lr_peft=3e-3)
    result = train_and_eval(model, c, tmp_path / "run", progress=False)
    if c.variant:
        hm, _ = load_adapter(tmp_path / "run" / "adapter")
        after = mean_loss(model, seqs, hm.on_bridge(model.bridge))
    else:
        after = mean_loss(model, seqs, torch.no_grad())  # LoRA is in place
    assert after < before - 0.05
    assert result["train"]["steps"] == 6 and len(result["train"]["loss_curve"]) == 6
    assert result["trainable_params"] > 0 and 0 < result["trainable_share_pct"] < 100


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
        model = load_model("tiny-llama")
        c = cfg(method="headmap-mha+lora", circuit=tiny_circuit(model, tmp_path), epochs=1, micro_batch_size=micro)
        train_and_eval(model, c, tmp_path / f"run{micro}", progress=False)
        states.append((load_adapter(tmp_path / f"run{micro}" / "adapter")[0].state_dict(),
                       {n: p.detach().clone() for n, p in model.hf_model.named_parameters() if "lora_" in n}))
    (hm_a, lora_a), (hm_b, lora_b) = states
    for k in hm_a:
        torch.testing.assert_close(hm_a[k], hm_b[k], atol=1e-6, rtol=1e-5)
    for k in lora_a:
        torch.testing.assert_close(lora_a[k], lora_b[k], atol=1e-6, rtol=1e-5)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    def run(out, stop_at=None):
        model = load_model("tiny-llama")
        c = cfg(method="headmap-hs+lora", circuit=circuit, epochs=3, max_train=8)

        def on_step(step):
            if step == stop_at:
                raise Interrupt

        return train_and_eval(model, c, out, progress=False, on_step=on_step)

    circuit = tiny_circuit(load_model("tiny-llama"), tmp_path)
    straight = run(tmp_path / "straight")
    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", stop_at=5)  # mid epoch 3: resumes from the end of epoch 2
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and not (tmp_path / "resumed" / "result.json").exists()
    resumed = run(tmp_path / "resumed")
    assert resumed["train"]["loss_curve"] == straight["train"]["loss_curve"]
    assert resumed["eval"]["metrics"] == straight["eval"]["metrics"]
    a = load_adapter(tmp_path / "straight" / "adapter")[0].state_dict()
    b = load_adapter(tmp_path / "resumed" / "adapter")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import load_file

    ca = load_file(str(next((tmp_path / "straight" / "checkpoint").glob("*.trainable.safetensors"))))
    cb = load_file(str(next((tmp_path / "resumed" / "checkpoint").glob("*.trainable.safetensors"))))
    assert set(ca) == set(cb) and all(torch.equal(ca[k], cb[k]) for k in ca)


def test_run_directory_guards(tmp_path):
    model = load_model("tiny-llama")
    out = tmp_path / "run"
    first = train_and_eval(model, cfg(method="base", max_train=None), out, progress=False)
    assert first["trainable_params"] == 0 and first["train"]["steps"] == 0
    assert train_and_eval(model, cfg(method="base", max_train=None), out, progress=False) == first  # done: reused
    with pytest.raises(CircuitlabError, match="differs in: method"):
        train_and_eval(model, cfg(method="lora", max_train=None), out, progress=False)


def test_held_out_evaluation_when_training_on_the_eval_split(tmp_path):
    model = load_model("tiny-llama")
    c = cfg(method="headmap-mha", heads="random", heads_per_layer=1, train_split="validation", eval_limit=None, epochs=1)
    r = train_and_eval(model, c, tmp_path / "run", progress=False)
    n_val = len(load_docs("capitals", "validation"))
    assert r["eval"]["first_index"] == 8 and r["eval"]["n_docs"] == n_val - 8
    base = train_and_eval(model, TrainConfig(**{**c.to_dict(), "method": "base"}), tmp_path / "base", progress=False)
    assert base["eval"]["data_fingerprint"] == r["eval"]["data_fingerprint"]  # same held-out docs


def test_headmap_without_a_circuit_needs_one_or_random_heads(tmp_path):
    model = load_model("tiny-llama")
    r = train_and_eval(model, cfg(heads="random", heads_per_layer=2, epochs=1), tmp_path / "r", progress=False)
    assert len(r["heads"]) == 4 and all(len(h) == 2 for h in r["heads"].values())
    other = Circuit(ModelInfo.of(load_model("tiny-llama-gqa")), TaskInfo("capitals", "train"), [], "x", 1, {0: [0]})
    other.save(tmp_path / "gqa.json")
    with pytest.raises(CircuitlabError, match="circuit was located on tiny-llama-gqa"):
        train_and_eval(model, cfg(circuit=str(tmp_path / "gqa.json")), tmp_path / "bad", progress=False)


def test_headmap_locates_a_circuit_when_none_is_given(tmp_path):
    model = load_model("tiny-llama")
    r = train_and_eval(model, cfg(epochs=1, max_train=16), tmp_path / "run", progress=False)
    located = Circuit.load(tmp_path / "run" / "located_circuit.json")
    assert located.strategy == "layer-conditioned" and located.task.name == "capitals"
    assert r["heads"] == {str(k): v for k, v in located.heads.items()}
    assert r["circuit"]["strategy"] == "layer-conditioned"


# -- table and CLI ------------------------------------------------------------------------------------


def fake_result(path, method, task, acc, share, heads=None, mode="circuit", source=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    r = {"config": {"task": task, "heads": mode}, "method": method, "heads": heads, "trainable_share_pct": share,
         "train": {"seconds": 60.0}, "eval": {"metrics": {"acc": acc}}, "circuit": {"task": source or task}}
    path.write_text(json.dumps(r))
    return str(path)


def test_table(tmp_path, capsys):
    paths = [
        fake_result(tmp_path / "a/result.json", "base", "boolq", 0.5, 0.0),
        fake_result(tmp_path / "b/result.json", "base", "sst2", 0.7, 0.0),
        fake_result(tmp_path / "c/result.json", "headmap-mha", "boolq", 0.6, 0.5, {"0": [1, 2]}),
        fake_result(tmp_path / "d/result.json", "headmap-mha", "sst2", 0.9, 0.5, {"0": [1, 2]}),
        fake_result(tmp_path / "e/result.json", "headmap-mha", "sst2", 0.8, 0.5, {"0": [1, 2]}, mode="random"),
        fake_result(tmp_path / "f/result.json", "headmap-hs", "sst2", 0.85, 0.5, {"0": [1, 2]}, source="boolq"),
    ]
    t = results_table(paths)
    assert list(t.columns) == ["# Params (%)", "boolq", "sst2", "Avg.", "Train (min, total)"]
    assert t.loc["HeadMap-MHA [2/layer]", "Avg."] == 75.0
    assert t.loc["HeadMap-MHA (random) [2/layer]", "sst2"] == 80.0
    assert t.loc["HeadMap-HS (transfer from boolq) [2/layer]", "sst2"] == 85.0
    assert main(["table", *paths, "--csv", str(tmp_path / "t.csv")]) == 0
    assert "| Base (zero-shot)" in capsys.readouterr().out and (tmp_path / "t.csv").read_text().startswith("Method,")
    assert main(["table", paths[0], paths[0]]) == 2
    assert "two results" in capsys.readouterr().err


def test_cli_finetune_bad_input_is_one_line(tmp_path, capsys):
    assert main(["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "adapterx",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown method 'adapterx'" in err
    assert main(["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "headmap-mha",
                 "--out", str(tmp_path / "x"), "--circuit", str(tmp_path / "missing.json")]) == 2
    assert "circuit file not found" in capsys.readouterr().err


def test_cli_finetune_writes_result(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "headmap-hs", "--heads", "random",
            "--heads-per-layer", "1", "--rank", "4", "--max-train", "4", "--batch-size", "4", "--epochs", "1",
            "--limit", "4", "--out", str(out)]
    assert main(args) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["method"] == "headmap-hs" and r["eval"]["n_docs"] == 4 and set(r["eval"]["metrics"]) >= {"acc", "acc_norm"}
    assert (out / "adapter" / "adapter.safetensors").is_file() and (out / "circuit.json").is_file()
    assert HeadMapConfig.from_dict(json.loads((out / "adapter" / "headmap_config.json").read_text())).variant == "hs"
    assert "trainable" in capsys.readouterr().out
