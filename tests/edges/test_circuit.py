"""Selection, pruning, files and resuming of edge circuits, against hand-built graphs and an uninterrupted run."""

import pytest
import torch

from circuitlab.circuits.circuit import ModelInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.edges import methods as edges_methods
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores, prune, select
from circuitlab.edges.graph import Graph
from circuitlab.edges.pairs import Pair
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.run import attribute, edges_to
from circuitlab.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
G = Graph(3, 4, 2)


def test_graph_counts_and_names():
    """Every writer feeds every later reader: an attention input of layer l sees 1 + l (H + 1) writers, an MLP
    H more, the logits all."""
    assert G.readers_per_layer == 4 + 2 + 2 + 1  # q per head, k and v per KV group, the MLP
    assert G.n_writers == 1 + 3 * (4 + 1) and G.n_readers == 3 * 9 + 1
    want = sum(8 * (1 + 5 * layer) + (1 + 5 * layer + 4) for layer in range(3)) + G.n_writers
    assert G.n_edges == want
    assert G.edge_name(G.head_writer(0, 3), G.qkv_readers(2, "k").start + 1) == "a0.h3->a2.g1<k>"
    assert G.reader_heads(G.qkv_readers(1, "v").start + 1) == ["a1.h2", "a1.h3"]
    assert G.writer_layer(0) == 0 and G.writer_layer(G.mlp_writer(2)) == 2


def keep_of(*edges):
    keep = torch.zeros(G.n_writers, G.n_readers, dtype=torch.bool)
    names = {G.edge_name(w, r): (w, r) for w, r in G.edge_mask.nonzero().tolist()}
    for e in edges:
        keep[names[e]] = True
    return keep


def names(keep):
    return {G.edge_name(w, r) for w, r in keep.nonzero().tolist()}


def test_pruning_drops_nodes_with_nothing_in_or_nothing_out():
    # a0.h1 has no edge in: its edge out goes; then m1 has nothing in and goes too
    assert names(prune(keep_of("a0.h1->m1", "m1->logits"), G)) == set()
    # fed through its KV group's k input, a head lives; a chain input -> a0.h1 -> a1.h0 -> logits stays
    chain = {"input->a0.g0<k>", "a0.h1->a1.h0<q>", "a1.h0->logits"}
    assert names(prune(keep_of(*chain), G)) == chain
    # a head fed but reaching nothing: its incoming edge goes (the group's other head does not save it)
    assert names(prune(keep_of(*chain, "input->a2.h3<q>"), G)) == chain
    # the group reader a0.g0<k> lives while either head of group 0 writes on
    assert names(prune(keep_of("input->a0.g0<k>", "a0.h0->logits"), G)) == {"input->a0.g0<k>", "a0.h0->logits"}


def test_select_top_n_takes_the_largest_magnitudes_then_prunes():
    torch.manual_seed(0)
    scores = torch.randn(G.n_writers, G.n_readers) * G.edge_mask
    keep = select(scores, G, top_n=30)
    order = scores.abs().flatten().argsort(descending=True)[:30]
    top = torch.zeros(G.n_writers * G.n_readers, dtype=torch.bool)
    top[order] = True
    assert torch.equal(keep, prune(top.view_as(keep), G)) and keep.sum() <= 30
    thr = select(scores, G, threshold=1.0)
    assert torch.equal(thr, prune((scores.abs() >= 1.0) & G.edge_mask, G))


def test_save_and_load_round_trip(tmp_path):
    info = ModelInfo("tiny", "x/y", None, "f" * 16, 3, 4, 2, 8, 32)
    scores = EdgeScores(info, "t", "eap", "logprob", None, 3, torch.randn(G.n_writers, G.n_readers) * G.edge_mask)
    c = EdgeCircuit.select(scores, top_n=40)
    c.save(tmp_path / "c.json")
    back = EdgeCircuit.load(tmp_path / "c.json")
    assert torch.equal(back.keep, c.keep) and torch.equal(back.scores.scores, scores.scores)
    assert back.edges() == c.edges() and back.nodes() == c.nodes() and back.rule == {"top_n": 40}
    assert all(name.startswith("a") for name in [f"a{layer}.h{h}" for layer, hs in back.heads().items() for h in hs])


PAIRS = [Pair(f"{a} + {b} =", f"{a} - {b} =", f" {a + b}") for a, b in ((12, 5), (31, 40), (8, 9), (23, 11), (7, 6))]


def test_an_interrupted_run_resumes_to_the_same_scores(tmp_path, monkeypatch):
    m = load_model("tiny-llama-gqa")
    cfg = EdgesConfig(method="eap-ig", steps=2, batch_size=2, top_n=50)
    whole = attribute(m, PAIRS, cfg, progress=False)
    calls = {"n": 0}
    real = edges_methods.integrated

    def fail_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(edges_methods, "integrated", fail_on_third)  # what the registry's "eap-ig" names
    with pytest.raises(KeyboardInterrupt):
        edges_to(tmp_path / "e.json", m, PAIRS, cfg, progress=False)
    assert (tmp_path / "e.json.partial" / "state.json").is_file() and not (tmp_path / "e.json").exists()
    with pytest.raises(CircuitlabError, match="unfinished edge circuit with other settings .differs in: steps"):
        edges_to(tmp_path / "e.json", m, PAIRS, EdgesConfig(**{**cfg.__dict__, "steps": 3}), progress=False)
    monkeypatch.setattr(edges_methods, "integrated", real)
    resumed = edges_to(tmp_path / "e.json", m, PAIRS, cfg, progress=False)
    assert torch.allclose(resumed.scores.scores, whole.scores, atol=1e-7)
    assert not (tmp_path / "e.json.partial").exists()
    assert edges_to(tmp_path / "e.json", m, PAIRS, cfg, progress=False).made_from == resumed.made_from  # reused
    assert torch.equal(resumed.keep, EdgeCircuit.select(whole, top_n=50).keep)
