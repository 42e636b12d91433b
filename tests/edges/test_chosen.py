"""Scoring a chosen set of edges (`--edges FILE`, `--edges-top N`): the scores equal the whole graph's run on
those edges, the circuit is chosen among them, and a bad file is refused before anything is written."""

import json

import pytest
import torch

from circuitlab.edges import methods as edges_methods
from circuitlab.edges.batches import encode_pairs
from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.edges.config import METHODS, METRICS
from circuitlab.edges.graph import Graph
from circuitlab.edges.pairs import Pair
from circuitlab.models import load_model
from tests.helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = [Pair(f"{a} + {b} =", f"{a} - {b} =", f" {a + b}") for a, b in ((12, 5), (31, 40), (8, 9))]


def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"clean": p.clean, "corrupted": p.corrupted, "answer": p.answer}) + "\n"
                            for p in PAIRS))
    return path


def edges_cli(capsys, tmp_path, out, *extra):
    code, stdout, err = run_cli(capsys, "edges", "--model", "tiny-llama-gqa", "--pairs", pairs_file(tmp_path),
                                "--no-progress", "--out", out, *extra)
    assert code == 0, err
    return EdgeCircuit.load(out)


def test_exact_on_chosen_edges_equals_the_whole_graphs_exact_on_them(tmp_path, capsys):
    """An EAP-IG run's top 40 edges, then exact on those alone: the very scores a whole-graph exact run
    gives those edges (every other edge 0), and the circuit is those edges, pruned."""
    ig = edges_cli(capsys, tmp_path, tmp_path / "ig.json", "--method", "eap-ig", "--steps", "2")
    whole = edges_cli(capsys, tmp_path, tmp_path / "whole.json", "--method", "exact")
    some = edges_cli(capsys, tmp_path, tmp_path / "some.json", "--method", "exact", "--edges", tmp_path / "ig.json",
                     "--edges-top", "40")
    g = ig.graph
    mag = ig.scores.scores.abs().masked_fill(~g.edge_mask, -1).flatten()
    top = torch.zeros(mag.numel(), dtype=torch.bool)
    top[torch.argsort(-mag, stable=True)[:40]] = True
    top = top.view_as(g.edge_mask)
    assert torch.allclose(some.scores.scores[top], whole.scores.scores[top], rtol=1e-5, atol=1e-6)
    assert (some.scores.scores[~top] == 0).all() and (some.scores.scores[top] != 0).all()
    assert not (some.keep & ~top).any() and some.n_edges > 0
    assert some.rule["top_n"] == 40 and some.rule["edges"]  # the digest of the chosen set, not the file's path
    assert str(tmp_path) not in (tmp_path / "some.json").read_text()


def test_a_list_of_names_and_a_circuits_kept_edges_choose_the_same(tmp_path, capsys):
    ig = edges_cli(capsys, tmp_path, tmp_path / "ig.json", "--method", "eap", "--top-n", "30")
    names = sorted(ig.edges())
    (tmp_path / "names.txt").write_text("# the kept edges\n" + "\n".join(names) + "\n\n")
    a = edges_cli(capsys, tmp_path, tmp_path / "a.json", "--method", "eap", "--edges", tmp_path / "names.txt")
    b = edges_cli(capsys, tmp_path, tmp_path / "b.json", "--method", "eap", "--edges", tmp_path / "ig.json")
    assert torch.equal(a.scores.scores, b.scores.scores) and torch.equal(a.keep, b.keep)
    chosen = ig.keep
    assert torch.equal(a.scores.scores[chosen], ig.scores.scores[chosen]) and (a.scores.scores[~chosen] == 0).all()
    assert a.keep.equal(ig.keep)  # the same edges, scored the same, pruned the same


def test_a_batch_that_fits_less_memory_gives_the_same_scores(monkeypatch):
    """`exact` sizes its batch of edge copies from the free memory; fewer copies per forward, same scores."""
    m = load_model("tiny-llama-gqa")
    b, g = encode_pairs(m.tokenizer, PAIRS), Graph.of(m)
    only = g.edge_mask.nonzero().tolist()[::7]
    wide = METHODS["exact"].fn(m, b, METRICS["logprob"], None, only=only, edges_per_forward=64)
    seen = []
    real = edges_methods.edges_that_fit

    def small(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]
    monkeypatch.setattr(edges_methods, "free_memory", lambda device: 4 * 3 * _copy_bytes(m, g, b))
    monkeypatch.setattr(edges_methods, "edges_that_fit", small)
    narrow = METHODS["exact"].fn(m, b, METRICS["logprob"], None, only=only)
    assert seen == [3]  # a quarter of 12 copies' worth
    assert torch.allclose(narrow, wide, rtol=1e-5, atol=1e-6)


def _copy_bytes(m, g, b):
    """One edge copy's bytes, as `edges_that_fit` counts them, written out again."""
    pairs, pos = b.clean.shape
    return (2 * pairs * pos * g.n_writers * m.d_model * 4 + pairs * g.n_writers * g.n_readers
            + 12 * g.n_layers * pairs * pos * m.d_model * 4)


@pytest.mark.parametrize("content, extra, match", [
    ("input->a9.h0<q>\n", [], "not in the model's graph"),
    ("a0.h1 -> m0\n", [], "is not an edge name"),
    ("m0->m1\nm0->m1\n", [], "names 'm0->m1' twice"),
    ("# nothing\n", [], "chooses no edge"),
    ("m0->m1\n", ["--edges-top", "3"], "--edges-top needs an edge circuit's scores"),
    ("m0->m1\n", ["--curve", "2"], "only 1 edges are scored"),
])
def test_a_bad_edges_file_is_one_line_and_writes_nothing(content, extra, match, tmp_path, capsys):
    (tmp_path / "e.txt").write_text(content)
    out = tmp_path / "out" / "c.json"
    one_line_error(capsys, ["edges", "--model", "tiny-llama-gqa", "--pairs", str(pairs_file(tmp_path)), "--method",
                            "exact", "--edges", str(tmp_path / "e.txt"), *extra, "--out", str(out)], match)
    assert not out.parent.exists()


@pytest.mark.parametrize("placement, blocks", [
    (["--device-map", '{"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", '
                     '"model.layers.2": "disk", "model.layers.3": "disk", "model.norm": "cpu", '
                     '"model.rotary_emb": "cpu", "lm_head": "cpu"}'],
     "model.layers.2, model.layers.3 to disk"),  # refused before the model loads
    (["--device-map", "sequential", "--max-memory", "cpu=13MB"],
     "model.layers.1, model.layers.2, model.layers.3, model.norm to disk"),  # known once the map is made
])
def test_blocks_offloaded_to_disk_are_refused_in_one_line(placement, blocks, tmp_path, capsys):
    """Attribution reads each attention's weights outside its forward (TransformerLens's per-head q/k/v
    inputs), and a block accelerate offloads to disk holds them only while it runs (TransformerLens raises
    deep in the first forward otherwise)."""
    out = tmp_path / "out" / "c.json"
    one_line_error(capsys, ["edges", "--model", "tiny-llama", "--pairs", str(pairs_file(tmp_path)), "--method", "eap",
                            *placement, "--out", str(out)], f"offloads {blocks}")
    assert not out.parent.exists()
