"""Edge scores against computations that share none of circuitlab.edges' hooks: a scalar coefficient that
patches one edge (its derivative is the EAP score; its value at 1 the exact score), the path integral
(EAP-IG's completeness), a writer's own gradient (its node score), and the clean and corrupted runs
(the evaluator with every edge, and with none)."""

from functools import lru_cache

import pytest
import torch

from circuitlab.edges.evaluate import circuit_metric
from circuitlab.edges.graph import Graph
from circuitlab.edges.config import IG_POINTS, METHODS, METRICS, EdgesConfig
from circuitlab.edges.batches import encode_pairs
from circuitlab.edges.pairs import Pair
from circuitlab.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = [Pair("12 + 5 =", "12 - 5 =", " 17", " 7"), Pair("31 + 40 =", "31 - 40 =", " 71", " 9"),
         Pair("8 + 9 =", "8 - 9 =", " 17", " -1")]
MODELS = ["tiny-llama", "tiny-llama-gqa"]


@lru_cache(maxsize=None)
def model_of(name):
    return load_model(name)


def batch_of(m):
    return encode_pairs(m.tokenizer, PAIRS)


# -- an independent patcher: TransformerLens's own flags and cache, one edge, one coefficient ------------

def split(bridge, on: bool):
    if on:
        bridge.set_use_attn_in(False)
    bridge.set_use_attn_result(on)
    bridge.set_use_split_qkv_input(on)
    bridge.set_use_hook_mlp_in(on)


def writer_value(cache, g: Graph, w: int):
    """Writer w's output [batch, pos, d_model] from a run_with_cache cache."""
    if w == 0:
        return cache["hook_embed"]
    layer, h = divmod(w - 1, g.n_heads + 1)
    return cache[f"blocks.{layer}.hook_mlp_out"] if h == g.n_heads else cache[f"blocks.{layer}.attn.hook_result"][:, :, h]


def reader_hook(g: Graph, r: int, delta):
    """(hook name, hook) adding `delta` [batch, pos, d_model] to reader r's input only."""
    if r == g.logits_reader:
        return "ln_final.hook_in", lambda x, hook=None: x + delta
    layer, off = divmod(r, g.readers_per_layer)
    if off == g.readers_per_layer - 1:
        return f"blocks.{layer}.hook_mlp_in", lambda x, hook=None: x + delta
    which, unit = ("q", off) if off < g.n_heads else (("k", off - g.n_heads) if off < g.n_heads + g.n_kv_heads
                                                     else ("v", off - g.n_heads - g.n_kv_heads))

    def hook(x, hook=None):
        add = torch.zeros_like(x)
        add[:, :, unit] = delta
        return x + add
    return f"blocks.{layer}.hook_{which}_input", hook


def metric_with(m, b, hooks, metric="logprob"):
    out = m.bridge.run_with_hooks(b.clean, attention_mask=b.attention_mask, fwd_hooks=hooks)
    return METRICS[metric](out, b).sum()


def some_edges(g: Graph):
    """Edges of every kind: input -> q, head -> k/v of a later layer, MLP -> MLP, head -> logits."""
    h = g.n_heads - 1
    return [(0, g.qkv_readers(1, "q").start + 2), (g.head_writer(0, h), g.qkv_readers(2, "k").stop - 1),
            (g.head_writer(1, 1), g.qkv_readers(3, "v").start), (g.mlp_writer(0), g.mlp_reader(2)),
            (g.head_writer(2, h), g.mlp_reader(2)), (g.head_writer(3, 1), g.logits_reader)]


@pytest.mark.parametrize("name", MODELS)
def test_eap_is_the_derivative_of_a_one_edge_patch_and_exact_its_value(name):
    m = model_of(name)
    b, g = batch_of(m), Graph.of(m)
    eap = METHODS["eap"].fn(m, b, METRICS["logprob"], None)
    exact = METHODS["exact"].fn(m, b, METRICS["logprob"], None, only=some_edges(g))
    split(m.bridge, True)
    try:
        with torch.no_grad():
            _, clean = m.bridge.run_with_cache(b.clean, attention_mask=b.attention_mask)
            _, corr = m.bridge.run_with_cache(b.corrupted, attention_mask=b.attention_mask)
            base = metric_with(m, b, [])
        for w, r in some_edges(g):
            diff = (writer_value(corr, g, w) - writer_value(clean, g, w)).detach()
            alpha = torch.zeros((), requires_grad=True)
            value = metric_with(m, b, [reader_hook(g, r, alpha * diff)])
            (d_alpha,) = torch.autograd.grad(value, alpha)
            assert eap[w, r].item() == pytest.approx(-d_alpha.item(), rel=1e-3, abs=1e-6), g.edge_name(w, r)
            with torch.no_grad():
                patched = metric_with(m, b, [reader_hook(g, r, diff)])
            assert exact[w, r].item() == pytest.approx((base - patched).item(), rel=1e-3, abs=1e-5), g.edge_name(w, r)
    finally:
        split(m.bridge, False)
    assert not g.edge_mask.logical_not().logical_and(eap != 0).any()  # no score off the graph's edges


@pytest.mark.parametrize("points", IG_POINTS)
def test_eap_ig_is_a_riemann_sum_of_one_edge_patch_derivatives(points):
    """EAP-IG at m steps, left (k = 0..m-1, the default) or right (k = 1..m): for each edge the mean over the
    points a = k/m of -d metric / d alpha, where the input embedding is corrupted + a (clean - corrupted) and
    the reader gets alpha (corrupted[w] - clean[w]) added, taken with TransformerLens's own cache and hooks."""
    m = model_of("tiny-llama-gqa")
    b, g, steps = batch_of(m), Graph.of(m), 3
    cfg = EdgesConfig(method="eap-ig", steps=steps, ig_points=points)
    assert EdgesConfig(method="eap-ig").ig_points == "left"
    got = METHODS["eap-ig"].fn(m, b, METRICS["logprob"], None, cfg.alphas())
    ks = range(steps) if points == "left" else range(1, steps + 1)
    split(m.bridge, True)
    try:
        with torch.no_grad():
            _, clean = m.bridge.run_with_cache(b.clean, attention_mask=b.attention_mask)
            _, corr = m.bridge.run_with_cache(b.corrupted, attention_mask=b.attention_mask)
        e_clean, e_corr = clean["hook_embed"], corr["hook_embed"]
        for w, r in some_edges(g):
            diff = (writer_value(corr, g, w) - writer_value(clean, g, w)).detach()
            total = 0.0
            for k in ks:
                emb = e_corr + (k / steps) * (e_clean - e_corr)
                alpha = torch.zeros((), requires_grad=True)
                value = metric_with(m, b, [("hook_embed", lambda x, hook=None, emb=emb: emb),
                                           reader_hook(g, r, alpha * diff)])
                (d_alpha,) = torch.autograd.grad(value, alpha)
                total += -d_alpha.item() / steps
            assert got[w, r].item() == pytest.approx(total, rel=1e-3, abs=1e-6), (points, g.edge_name(w, r))
    finally:
        split(m.bridge, False)
    other = METHODS["eap-ig"].fn(m, b, METRICS["logprob"], None,
                                 EdgesConfig(method="eap-ig", steps=steps, ig_points="right" if points == "left" else "left").alphas())
    assert not torch.allclose(got, other, atol=1e-4)  # the two sums differ: the choice matters


@pytest.mark.parametrize("points", IG_POINTS)
def test_eap_ig_input_edges_sum_to_the_metric_difference(points):
    """Completeness: sum over the input's edges -> metric(clean) - metric(corrupted) as steps grow (either
    Riemann sum: error ~1/m; 1.04 % at 400 steps here for the right one, so 700)."""
    m = model_of("tiny-llama-gqa")
    b = encode_pairs(m.tokenizer, PAIRS[:1])
    with torch.no_grad():
        want = (metric_with(m, b, []) - METRICS["logprob"](
            m.bridge(b.corrupted, attention_mask=b.attention_mask), b).sum()).item()
    alphas = EdgesConfig(method="eap-ig", steps=700, ig_points=points).alphas()
    got = METHODS["eap-ig"].fn(m, b, METRICS["logprob"], None, alphas)[0].sum().item()
    assert abs(want) > 1e-2 and got == pytest.approx(want, rel=0.01)


@pytest.mark.parametrize("name", MODELS)
def test_a_writers_edge_scores_sum_to_its_node_score(name):
    """A node's score: (clean - corrupted) . d metric / d(its own output), taken by autograd at the writer."""
    m = model_of(name)
    b, g = batch_of(m), Graph.of(m)
    eap = METHODS["eap"].fn(m, b, METRICS["logprob"], None)
    split(m.bridge, True)
    try:
        with torch.no_grad():
            _, clean = m.bridge.run_with_cache(b.clean, attention_mask=b.attention_mask)
            _, corr = m.bridge.run_with_cache(b.corrupted, attention_mask=b.attention_mask)
        for w in (0, g.head_writer(1, 4), g.mlp_writer(2)):
            layer, h = divmod(w - 1, g.n_heads + 1)
            name_ = "hook_embed" if w == 0 else (f"blocks.{layer}.hook_mlp_out" if h == g.n_heads
                                                 else f"blocks.{layer}.attn.hook_result")
            seen = {}

            def keep(x, hook=None):
                x = x.detach().requires_grad_(True)
                seen["x"] = x
                return x
            value = metric_with(m, b, [(name_, keep)])
            (grad,) = torch.autograd.grad(value, seen["x"])
            grad = grad[:, :, h] if name_.endswith("hook_result") else grad
            node = ((writer_value(clean, g, w) - writer_value(corr, g, w)) * grad).sum().item()
            assert eap[w].sum().item() == pytest.approx(node, rel=1e-3, abs=1e-6), g.writer_name(w)
    finally:
        split(m.bridge, False)


@pytest.mark.parametrize("name", MODELS)
def test_the_evaluator_with_every_edge_is_the_clean_run_and_with_none_the_corrupted_run(name):
    m = model_of(name)
    b, g = batch_of(m), Graph.of(m)
    met = METRICS["logprob"]
    with torch.no_grad():
        clean = met(m.hf_model(b.clean, attention_mask=b.attention_mask).logits, b)
        corrupted = met(m.hf_model(b.corrupted, attention_mask=b.attention_mask).logits, b)
    full = circuit_metric(m, b, g.edge_mask, met)
    empty = circuit_metric(m, b, torch.zeros_like(g.edge_mask), met)
    assert torch.allclose(full, clean, atol=1e-4) and torch.allclose(empty, corrupted, atol=1e-4)
    assert not torch.allclose(clean, corrupted, atol=1e-3)
    zero = circuit_metric(m, b, torch.zeros_like(g.edge_mask), met, ablation="zero")
    assert not torch.allclose(zero, corrupted, atol=1e-3)  # another ablation, another run


def test_metrics_against_hand_computations():
    m = model_of("tiny-llama")
    b = batch_of(m)
    with torch.no_grad():
        logits = m.hf_model(b.clean, attention_mask=b.attention_mask).logits
    lp = torch.log_softmax(logits.float(), -1)
    for i, p in enumerate(PAIRS):
        ctx = m.tokenizer(p.clean).input_ids
        ans = m.tokenizer(p.clean + p.answer).input_ids[len(ctx):]
        want = sum(lp[i, len(ctx) - 1 + k, t].item() for k, t in enumerate(ans))
        assert METRICS["logprob"](logits, b)[i].item() == pytest.approx(want, abs=1e-4)
        wrong = m.tokenizer(p.clean + p.corrupted_answer).input_ids[len(ctx):]
        k = next(k for k, (x, y) in enumerate(zip(ans, wrong)) if x != y)
        pos = len(ctx) - 1 + k
        assert METRICS["logit-diff"](logits, b)[i].item() == pytest.approx(
            (logits[i, pos, ans[k]] - logits[i, pos, wrong[k]]).item(), abs=1e-4)
    clean_lp = lp[b.answer_mask]
    assert METRICS["kl"](logits, b, clean_lp).abs().max().item() < 1e-5  # KL of a run to itself
