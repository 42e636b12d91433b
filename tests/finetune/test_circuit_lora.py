"""CircuitLoRA: edge change by layer, critical layers, the rank pattern PEFT really applies, an equal
parameter budget, and `finetune --method circuit-lora`."""

import json
import re

import pytest
import torch

from circuitlab.circuits.circuit import ModelInfo
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores
from circuitlab.edges.graph import Graph
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.edges.change import layer_change
from circuitlab.finetune.circuit_lora import (CircuitChange, check_patterns, critical_layers, layer_key, layer_ranks, lora_config, lora_param_count, matched_ranks,
                                              target_names)
from circuitlab.finetune.config import PEFT_TARGETS
from circuitlab.models.identity import ModelDims
from circuitlab.models.sources import tiny_config
from tests.helpers import one_line_error, run_cli


def info(name: str) -> ModelInfo:
    d = ModelDims.of_config(tiny_config(name))
    return ModelInfo(name, name, None, "0" * 16, d.n_layers, d.n_heads, d.n_kv_heads, d.d_head, d.d_model)


def circuit(name: str, seed: int, top_n: int = 300, scale: float = 1.0, moved: int | None = None) -> EdgeCircuit:
    """Random scores (seed), then, for an after-circuit, moved by noise (seed `moved`) and scaled: the two
    circuits share some edges and differ in others."""
    m = info(name)
    g = Graph(m.n_layers, m.n_heads, m.n_kv_heads)
    scores = torch.randn(g.n_writers, g.n_readers, generator=torch.Generator().manual_seed(seed))
    if moved is not None:
        scores = scores + 0.7 * torch.randn(scores.shape, generator=torch.Generator().manual_seed(moved))
    scores = scores * g.edge_mask * scale
    return EdgeCircuit.select(EdgeScores(m, "add_sub", "eap-ig", "logprob", 5, 8, scores), top_n=top_n)


def by_name(c: EdgeCircuit, total: float = 1.0) -> dict[str, float]:
    g = c.graph
    return {g.edge_name(w, r): float(c.scores.scores[w, r]) / total for w, r in c.keep.nonzero().tolist()}


def layer_of(edge: str) -> int:
    writer = edge.split("->")[0]
    return 0 if writer == "input" else int(re.match(r"[am](\d+)", writer).group(1))


def reference_change(before: EdgeCircuit, after: EdgeCircuit, normalise: bool) -> list[float]:
    """The paper's rule over edge names, written without tensors."""
    tb = sum(abs(v) for v in by_name(before).values()) if normalise else 1.0
    ta = sum(abs(v) for v in by_name(after).values()) if normalise else 1.0
    b, a = by_name(before, tb), by_name(after, ta)
    out = [0.0] * before.graph.n_layers
    for edge in set(b) | set(a):
        out[layer_of(edge)] += abs(a[edge] - b[edge]) if edge in a and edge in b else abs(a.get(edge, b.get(edge)))
    return out


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
@pytest.mark.parametrize("normalise", [False, True])
def test_layer_change_is_the_papers_rule(name, normalise):
    before, after = circuit(name, 0), circuit(name, 0, scale=48.0, moved=1)
    assert len(before.edges() & after.edges()) > 0 and len(before.edges() ^ after.edges()) > 0  # both cases occur
    got = layer_change(before, after, normalise)
    assert got == pytest.approx(reference_change(before, after, normalise), rel=1e-9)


def test_normalised_change_ignores_each_circuits_scale():
    before, after = circuit("tiny-llama", 0), circuit("tiny-llama", 0, moved=1)
    scaled = circuit("tiny-llama", 0, scale=48.0, moved=1)
    assert layer_change(before, scaled, True) == pytest.approx(layer_change(before, after, True), rel=1e-6)
    assert layer_change(before, scaled) != pytest.approx(layer_change(before, after))


def test_identical_circuits_do_not_change():
    c = circuit("tiny-llama", 0)
    assert layer_change(c, c) == [0.0] * 4


def test_critical_layers_top_k_ties_by_lower_layer():
    assert critical_layers([1.0, 5.0, 3.0, 5.0, 0.0], 3) == [1, 3, 2]
    assert critical_layers([2.0, 2.0, 2.0], 2) == [0, 1]
    with pytest.raises(ConfigError, match="between 1 and the model's 4 layers"):
        critical_layers([0.0] * 4, 5)


def test_circuits_of_other_shapes_are_refused():
    with pytest.raises(CircuitlabError, match="different shapes"):
        CircuitChange.of(circuit("tiny-llama", 0), circuit("tiny-llama-gqa", 1), k=2)


# -- ranks and the PEFT config ---------------------------------------------------------------------------------


def injected_ranks(peft_model) -> dict[str, tuple[int, float]]:
    """Module name -> (rank, scaling) as PEFT built them, rank read from lora_A's shape."""
    out = {}
    for name, m in peft_model.named_modules():
        if hasattr(m, "lora_A") and "default" in m.lora_A:
            assert m.r["default"] == m.lora_A["default"].weight.shape[0] == m.lora_B["default"].weight.shape[1]
            out[name] = (m.r["default"], m.scaling["default"])
    return out


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
def test_ranks_read_back_from_the_injected_modules(name):
    from peft import get_peft_model

    from circuitlab.models import load_hf

    hf = load_hf(name)[0]
    ranks = layer_ranks(4, [2, 0], 12, 3)
    pm = get_peft_model(hf, lora_config(hf, ranks, alpha_ratio=2.0))
    got = injected_ranks(pm)
    assert len(got) == 4 * len(PEFT_TARGETS)
    for module, (r, scaling) in got.items():
        layer = int(re.search(r"layers\.(\d+)\.", module).group(1))
        assert r == ranks[layer] and scaling == pytest.approx(2.0)  # alpha / r with alpha = 2r
    assert {m.rsplit(".", 1)[-1] for m in got} == set(PEFT_TARGETS)


def test_layer_keys_are_anchored_layer_1_is_not_layer_10():
    """On a 12-layer model PEFT gives layers 10 and 11 the default rank when only layer 1 is critical."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=12,
                                      num_attention_heads=2, num_key_value_heads=2))
    ranks = layer_ranks(12, [1], 8, 2)
    names = target_names(hf)
    assert sum(bool(re.match(rf"(.*\.)?({layer_key(1)})$", n)) for n in names) == len(PEFT_TARGETS)
    got = injected_ranks(get_peft_model(hf, lora_config(hf, ranks)))
    for module, (r, _) in got.items():
        layer = int(re.search(r"layers\.(\d+)\.", module).group(1))
        assert r == (8 if layer == 1 else 2), module
    assert len(got) == 12 * len(PEFT_TARGETS)


def test_a_pattern_key_that_matches_no_module_is_refused():
    names = ["model.layers.0.self_attn.q_proj", "model.layers.10.self_attn.q_proj"]
    check_patterns(names, {layer_key(0): 4, layer_key(10): 4})
    with pytest.raises(CircuitlabError, match="matches no target module"):
        check_patterns(names, {layer_key(1): 4})
    with pytest.raises(CircuitlabError, match="matches no target module"):
        check_patterns(["transformer.h.1.attn.c_attn"], {layer_key(1): 4})


@pytest.mark.parametrize("n_layers, critical, r", [(4, [3, 1], 8), (4, [0], 1), (24, [5, 0, 9, 2, 11], 32),
                                                   (7, [6, 2, 4], 5), (4, [0, 1, 2, 3], 4)])
def test_matched_ranks_spend_exactly_plain_loras_budget(n_layers, critical, r):
    ranks = matched_ranks(n_layers, critical, r)
    assert sum(ranks) == n_layers * r and min(ranks) >= 1
    others = [ranks[i] for i in range(n_layers) if i not in critical]
    crit = [ranks[i] for i in critical]
    assert len(set(others)) <= 1 and max(crit) - min(crit) <= 1
    assert crit == sorted(crit, reverse=True)  # the remainder goes to the most changed first
    assert not others or min(crit) >= others[0]


def test_matched_ranks_give_plain_loras_trainable_parameter_count():
    from peft import LoraConfig, get_peft_model

    from circuitlab.models import load_hf

    r = 8
    ranks = matched_ranks(4, [2, 3], r)
    assert ranks != [r] * 4  # really different ranks
    counts = []
    for config in (lambda hf: lora_config(hf, ranks),
                   lambda hf: LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=2 * r, target_modules=list(PEFT_TARGETS))):
        hf = load_hf("tiny-llama")[0]
        pm = get_peft_model(hf, config(hf))
        counts.append(sum(p.numel() for p in pm.parameters() if p.requires_grad))
    assert counts[0] == counts[1] == lora_param_count(load_hf("tiny-llama")[0], ranks)


# -- finetune --method circuit-lora ----------------------------------------------------------------------------


@pytest.fixture
def circuits(tmp_path):
    d = tmp_path / "circuits"
    circuit("tiny-llama", 0).save(d / "before.json")
    circuit("tiny-llama", 0, scale=48.0, moved=1).save(d / "after.json")
    circuit("tiny-llama-gqa", 1).save(d / "gqa.json")
    return d


FINETUNE = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--out", "{out}/run"]
CL = FINETUNE + ["--method", "circuit-lora"]


@pytest.mark.usefixtures("one_thread")
def test_finetune_circuit_lora_trains_the_planned_ranks(circuits, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, *FINETUNE[:-1], out, "--method", "circuit-lora", "--circuit-before",
                                circuits / "before.json", "--circuit-after", circuits / "after.json",
                                "--critical-layers", "2", "--match-lora-rank", "4", "--max-train", "4",
                                "--batch-size", "2", "--epochs", "1", "--warmup-steps", "0", "--limit", "4")
    assert code == 0, err
    r = json.loads((out / "result.json").read_text())
    cl = r["circuit_lora"]
    before, after = (EdgeCircuit.load(circuits / f) for f in ("before.json", "after.json"))
    change = CircuitChange.of(before, after, 2)
    assert cl["per_layer"] == pytest.approx(change.per_layer) and cl["critical"] == change.critical
    assert cl["ranks"] == matched_ranks(4, change.critical, 4) and sum(cl["ranks"]) == 16
    assert r["trainable_params"] == cl["lora_params"] and r["train"]["steps"] == 2
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["rank_pattern"] == {layer_key(i): cl["ranks"][i] for i in range(4) if cl["ranks"][i] != adapter["r"]}
    assert "critical layers" in stdout


CASES = [
    (CL, "--circuit-before is required by --method circuit-lora"),
    (CL + ["--circuit-before", "{c}/before.json"], "--circuit-after is required"),
    (CL + ["--circuit-before", "{c}/missing.json", "--circuit-after", "{c}/after.json"],
     "--circuit-before {c}/missing.json: edge circuit not found"),
    (CL + ["--circuit-before", "{c}/gqa.json", "--circuit-after", "{c}/after.json"], "different shapes"),
    (CL + ["--circuit-before", "{c}/gqa.json", "--circuit-after", "{c}/gqa.json"], "not of tiny-llama"),
    (CL + ["--circuit-before", "{c}/before.json", "--circuit-after", "{c}/after.json", "--critical-layers", "5"],
     "--critical-layers must be between 1 and the model's 4 layers"),
    (CL + ["--circuit-before", "{c}/before.json", "--circuit-after", "{c}/after.json", "--match-lora-rank", "8",
           "--rank-critical", "16"], "--match-lora-rank chooses the ranks itself"),
    (FINETUNE + ["--method", "lora", "--circuit-before", "{c}/before.json"], "--circuit-before is for --method "
                                                                             "circuit-lora only"),
    (FINETUNE + ["--method", "lora", "--normalise-change"], "--normalise-change is for --method circuit-lora"),
]


@pytest.mark.parametrize("argv, match", CASES, ids=lambda x: x if isinstance(x, str) else " ".join(x[-2:]))
def test_bad_input_is_one_line_decided_before_loading(argv, match, circuits, tmp_path, capsys, monkeypatch):
    import circuitlab.models
    import circuitlab.models.loaded

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    for module, name in ((circuitlab.models, "load_model"), (circuitlab.models.loaded, "load_model"),
                         (circuitlab.models, "load_hf")):
        monkeypatch.setattr(module, name, no_loading)
    before = sorted(circuits.rglob("*"))
    fill = {"c": circuits, "out": tmp_path / "out"}
    one_line_error(capsys, [a.format(**fill) for a in argv], match.format(**fill))
    assert not (tmp_path / "out").exists() and sorted(circuits.rglob("*")) == before


def test_config_json_of_older_runs_still_matches():
    """A run directory written before these fields existed holds a config without them: the defaults."""
    from circuitlab.finetune import TrainConfig
    from circuitlab.finetune.config import CIRCUIT_LORA_FIELDS

    cfg = TrainConfig(model="tiny-llama", task="capitals", method="lora")
    old = {k: v for k, v in cfg.to_dict().items() if k not in CIRCUIT_LORA_FIELDS}
    assert {**TrainConfig.defaults(), **old} == cfg.to_dict()
