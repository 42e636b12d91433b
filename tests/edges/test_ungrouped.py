"""`--kv per-head`: one k and one v reader per query head (the EAP-IG library's ungrouped graph), against a
hand-written attention layer that gives one query head its own k or v input (no TransformerLens, no
ungrouped model), and against the grouped scores they split."""

import json

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from circuitlab.edges.batches import encode_pairs
from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.edges.config import METHODS, METRICS, EdgesConfig
from circuitlab.edges.graph import Graph
from circuitlab.edges.pairs import Pair
from circuitlab.edges.run import edges_identity
from circuitlab.models import load_hf, load_model
from circuitlab.models.ungroup import ungroup_kv_heads
from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
PAIR = Pair("12 + 5 =", "12 - 5 =", " 17", " 7")


def one_head_input(layer, head: int, which: str, delta):
    """Layer `layer`'s forward by hand, query head `head` reading `resid + delta` as its k (or v) input."""
    attn = layer.self_attn
    n_heads, n_kv, d = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim

    def per_head(proj, x, xd):
        b, p, _ = x.shape
        heads = proj(x).view(b, p, n_kv, d).repeat_interleave(n_heads // n_kv, dim=2)
        mine = proj(xd).view(b, p, n_kv, d)[:, :, head // (n_heads // n_kv)]
        return torch.stack([mine if h == head else heads[:, :, h] for h in range(n_heads)], dim=2)

    def forward(hidden_states, position_embeddings=None, **kwargs):
        resid = hidden_states
        x, xd = layer.input_layernorm(resid), layer.input_layernorm(resid + delta)
        b, p, _ = x.shape
        q = attn.q_proj(x).view(b, p, n_heads, d)
        k = per_head(attn.k_proj, x, xd if which == "k" else x)
        v = per_head(attn.v_proj, x, xd if which == "v" else x)
        q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), *position_embeddings)
        scores = q @ k.transpose(-1, -2) / d ** 0.5
        scores = scores.masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
        out = (scores.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2).reshape(b, p, n_heads * d)
        resid = resid + attn.o_proj(out)
        return resid + layer.mlp(layer.post_attention_layernorm(resid))
    return forward


def test_per_head_k_and_v_scores_equal_a_hand_computed_one_head_patch_derivative():
    m = load_model("tiny-llama-gqa", before_bridge=ungroup_kv_heads)
    g = Graph.of(m)
    assert (g.n_heads, g.n_kv_heads) == (8, 8)
    b = encode_pairs(m.tokenizer, [PAIR])
    eap = METHODS["eap"].fn(m, b, METRICS["logprob"], None)
    hf, _ = load_hf("tiny-llama-gqa")  # the grouped model itself, with no hooks
    with torch.no_grad():
        diff = hf.model.embed_tokens(b.corrupted) - hf.model.embed_tokens(b.clean)
    for layer, head, which in [(1, 0, "k"), (1, 1, "k"), (2, 5, "v"), (3, 7, "k")]:
        alpha = torch.zeros((), requires_grad=True)
        block = hf.model.layers[layer]
        block.forward = one_head_input(block, head, which, alpha * diff)
        try:
            value = METRICS["logprob"](hf(input_ids=b.clean, attention_mask=b.attention_mask).logits, b).sum()
        finally:
            del block.forward
        (d_alpha,) = torch.autograd.grad(value, alpha)
        reader = g.qkv_readers(layer, which).start + head
        assert eap[0, reader].item() == pytest.approx(-d_alpha.item(), rel=1e-3, abs=1e-6), (layer, head, which)


def test_per_head_scores_of_a_group_sum_to_its_grouped_score():
    """The gradient into a group's shared k/v input is the sum of its heads' (every method is linear in it)."""
    grouped, ungrouped = load_model("tiny-llama-gqa"), load_model("tiny-llama-gqa", before_bridge=ungroup_kv_heads)
    b = encode_pairs(grouped.tokenizer, [PAIR])
    gg, gu = Graph.of(grouped), Graph.of(ungrouped)
    sg = METHODS["eap"].fn(grouped, b, METRICS["logprob"], None)
    su = METHODS["eap"].fn(ungrouped, b, METRICS["logprob"], None)
    for layer in range(gg.n_layers):
        for which in ("k", "v"):
            per_head = su[:, gu.qkv_readers(layer, which)].double()
            summed = per_head.unflatten(1, (gg.n_kv_heads, -1)).sum(-1)
            assert torch.allclose(summed.float(), sg[:, gg.qkv_readers(layer, which)], atol=1e-6, rtol=1e-4)
        assert torch.allclose(su[:, gu.qkv_readers(layer, "q")], sg[:, gg.qkv_readers(layer, "q")], atol=1e-6)


def test_edges_kv_per_head_writes_the_ungrouped_graph(tmp_path, capsys):
    """The command runs the multi-head equivalent: its circuit's scores are the ungrouped model's, on the
    library's graph (8 k and 8 v readers per layer), and the run records the choice."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"clean": PAIR.clean, "corrupted": PAIR.corrupted, "answer": PAIR.answer}) + "\n")
    code, _, err = run_cli(capsys, "edges", "--model", "tiny-llama-gqa", "--pairs", pairs, "--method", "eap",
                           "--kv", "per-head", "--out", tmp_path / "e.json")
    assert code == 0, err
    circuit = EdgeCircuit.load(tmp_path / "e.json")
    m = load_model("tiny-llama-gqa", before_bridge=ungroup_kv_heads)
    want = METHODS["eap"].fn(m, encode_pairs(m.tokenizer, [PAIR]), METRICS["logprob"], None)
    assert circuit.graph == Graph(4, 8, 8) and circuit.made_from["kv"] == "per-head"
    assert torch.allclose(circuit.scores.scores, want, atol=1e-7)


def test_the_identity_names_kv_only_when_per_head():
    """A circuit made before `--kv` existed records no `kv`; with the default it is still that identity."""
    m = load_model("tiny-llama-gqa")
    assert "kv" not in edges_identity(m, [PAIR], EdgesConfig())
    assert edges_identity(m, [PAIR], EdgesConfig(kv="per-head"))["kv"] == "per-head"
