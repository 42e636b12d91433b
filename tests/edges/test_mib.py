"""Edge circuits to and from EAP-IG / MIB graph JSON, and as head circuits for HeadMap."""

import json

import pytest
import torch

from circuitlab.circuits.circuit import Circuit, ModelInfo
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores
from circuitlab.edges.graph import Graph
from circuitlab.edges.mib import from_mib, head_circuit, load_any, mib_readers, save_mib, to_mib
from circuitlab.core.errors import CircuitlabError
from circuitlab.models.identity import ModelDims
from circuitlab.models.sources import tiny_config
from tests.helpers import one_line_error, run_cli

SHAPES = {"tiny-llama": (4, 4, 4), "tiny-llama-gqa": (4, 8, 2)}


def model_info(name: str) -> ModelInfo:
    d = ModelDims.of_config(tiny_config(name))
    assert (d.n_layers, d.n_heads, d.n_kv_heads) == SHAPES[name]
    return ModelInfo(name, name, None, "f" * 16, d.n_layers, d.n_heads, d.n_kv_heads, d.d_head, d.d_model)


def random_circuit(name: str, top_n: int = 80, seed: int = 0) -> EdgeCircuit:
    m = model_info(name)
    g = Graph(m.n_layers, m.n_heads, m.n_kv_heads)
    scores = torch.randn(g.n_writers, g.n_readers, generator=torch.Generator().manual_seed(seed)) * g.edge_mask
    return EdgeCircuit.select(EdgeScores(m, "add_sub", "eap-ig", "logprob", 5, 16, scores, ig_points="left"), top_n=top_n)


def eap_ig_edges(n_layers: int, n_heads: int) -> list[str]:
    """The edge names EAP-IG's `Graph.from_model` builds (sequential attention and MLP), written out
    independently of circuitlab's graph."""
    edges, stream = [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        edges += [f"{p}->{h}<{x}>" for p in stream for h in heads for x in "qkv"]
        stream += heads
        edges += [f"{p}->m{layer}" for p in stream]
        stream.append(f"m{layer}")
    return edges + [f"{p}->logits" for p in stream]


@pytest.mark.parametrize("name", list(SHAPES))
def test_export_names_exactly_eap_igs_edges_and_nodes(name):
    c = random_circuit(name)
    d = to_mib(c)
    n_layers, n_heads, _ = SHAPES[name]
    expected = eap_ig_edges(n_layers, n_heads)
    assert len(d["edges"]) == len(expected) and set(d["edges"]) == set(expected)  # from_json looks each one up
    assert {k: d["cfg"][k] for k in ("n_layers", "n_heads", "parallel_attn_mlp")} == \
        {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": False}
    assert "d_model" in d["cfg"]  # Graph.from_model(neuron_level=True) reads it
    assert set(d["nodes"]) == {"input", "logits", *(f"m{layer}" for layer in range(n_layers)),
                               *(f"a{layer}.h{h}" for layer in range(n_layers) for h in range(n_heads))}
    assert {n for n, v in d["nodes"].items() if v["in_graph"]} == c.nodes() | {"logits"}
    assert all(isinstance(v["in_graph"], bool) and isinstance(v["score"], float) for v in d["edges"].values())


def test_gqa_group_edge_is_shared_among_the_heads_of_its_group():
    """Each query head gets score / 4 of its KV group's edge, so the export's per-group sums are circuitlab's
    group scores (the score mass EAP-IG sees is the true one), and every head carries the group's in_graph."""
    c = random_circuit("tiny-llama-gqa", top_n=200)
    g, s = c.graph, c.scores.scores
    d = to_mib(c)
    per = g.n_heads // g.n_kv_heads  # 4 query heads share a KV group
    for w in (0, g.head_writer(1, 3), g.mlp_writer(0)):
        for which in "kv":
            for h in range(g.n_heads):
                r = g.qkv_readers(2, which).start + h // per
                edge = d["edges"][f"{g.writer_name(w)}->a2.h{h}<{which}>"]
                assert edge == {"score": float(s[w, r]) / per, "in_graph": bool(c.keep[w, r])}
    for w in range(g.n_writers):  # every group of every layer: the four shares sum to the group's score
        for layer in range(g.n_layers):
            for which in "kv":
                for group in range(g.n_kv_heads):
                    r = g.qkv_readers(layer, which).start + group
                    names = [f"{g.writer_name(w)}->a{layer}.h{h}<{which}>" for h in range(group * per, (group + 1) * per)]
                    if all(n in d["edges"] for n in names):
                        assert sum(d["edges"][n]["score"] for n in names) == pytest.approx(float(s[w, r]), abs=1e-12)
    total = sum(e["score"] for e in d["edges"].values())
    assert total == pytest.approx(float(s[g.edge_mask].double().sum()), abs=1e-9)  # no mass added or lost
    kept_mib = sum(e["in_graph"] for e in d["edges"].values())
    kv_kept = sum(int(c.keep[:, g.qkv_readers(layer, x)].sum()) for layer in range(g.n_layers) for x in "kv")
    assert kept_mib == c.n_edges + (per - 1) * kv_kept


@pytest.mark.parametrize("name", list(SHAPES))
def test_export_import_round_trips_exactly(name, tmp_path):
    c = random_circuit(name, top_n=150, seed=3)
    c.curve = {"sizes": [10, 20], "faithfulness": [0.5, 0.75]}
    path = save_mib(c, tmp_path / "mib.json")
    back = load_any(path)  # the circuitlab block names the model
    assert torch.equal(back.scores.scores, c.scores.scores) and back.scores.scores.dtype == torch.float32
    assert torch.equal(back.keep, c.keep) and back.rule == c.rule and back.curve == c.curve
    assert (back.scores.model, back.scores.task, back.scores.method, back.scores.steps, back.scores.ig_points) == \
        (c.scores.model, "add_sub", "eap-ig", 5, c.scores.ig_points)
    assert back.edges() == c.edges() and back.nodes() == c.nodes()


def test_import_of_a_foreign_file_sums_kv_heads_and_ors_in_graph():
    """A file as EAP-IG itself writes it (no circuitlab block, per-head k/v scores that differ): a group's
    score is the sum of its heads' (the gradient into a shared input is the sum of its readers')."""
    m = model_info("tiny-llama-gqa")
    d = to_mib(random_circuit("tiny-llama-gqa"))
    del d["circuitlab"]
    del d["cfg"]["n_key_value_heads"]
    for h, score in zip(range(4, 8), (1.0, 2.0, 3.0, 6.0)):  # group 1 of layer 3, input's k edges
        d["edges"][f"input->a3.h{h}<k>"] = {"score": score, "in_graph": h == 6}
    with pytest.raises(CircuitlabError, match="names no model"):
        from_mib(d)
    c = from_mib(d, m)
    g = c.graph
    r = g.qkv_readers(3, "k").start + 1
    assert c.scores.scores[0, r] == 12.0 and bool(c.keep[0, r])
    assert c.rule == {"from": "mib"}


def test_a_file_of_the_first_block_version_copied_kv_scores_and_is_read_with_the_mean():
    c = random_circuit("tiny-llama-gqa", top_n=150, seed=5)
    d = to_mib(c)
    g = c.graph
    names, ours = mib_readers(g)
    for name, j in zip(names, ours.tolist()):  # as version 1 wrote it: the group's score on every head
        for w, parent in enumerate(g.writer_names):
            if f"{parent}->{name}" in d["edges"]:
                d["edges"][f"{parent}->{name}"]["score"] = float(c.scores.scores[w, j])
    d["circuitlab"]["schema"] = "circuitlab.edges.mib/1"
    del d["circuitlab"]["ig_points"]
    back = from_mib(d)
    assert torch.equal(back.scores.scores, c.scores.scores) and torch.equal(back.keep, c.keep)
    assert back.scores.ig_points == "right"  # eap-ig before the choice: k = 1..m


def test_import_of_another_shape_is_one_clear_error(tmp_path):
    path = save_mib(random_circuit("tiny-llama"), tmp_path / "mib.json")
    with pytest.raises(CircuitlabError, match=r"graph of 4 layers x 4 heads \(4 KV heads\), not of tiny-llama-gqa"):
        load_any(path, model_info("tiny-llama-gqa"))
    d = json.loads(path.read_text())
    d["edges"]["a3.h0->a1.h0<q>"] = {"score": 0.0, "in_graph": False}  # backwards: no such edge
    with pytest.raises(CircuitlabError, match="is not in the graph"):
        from_mib(d)


def test_head_circuit_lists_every_layer_and_feeds_headmap(tmp_path):
    from circuitlab.finetune.heads import choose_heads, heads_circuit
    from circuitlab.headmap import HeadMapConfig

    c = random_circuit("tiny-llama-gqa", top_n=60)
    hc = head_circuit(c)
    assert set(hc.heads) == set(range(4)) and {k: v for k, v in hc.heads.items() if v} == c.heads()
    assert any(not hs for hs in hc.heads.values())  # this circuit has a layer without heads: an empty list
    loaded = Circuit.load(hc.save(tmp_path / "heads.json"))
    assert loaded.heads == hc.heads and loaded.model == c.scores.model
    heads = choose_heads(loaded, "circuit", None, 0)
    assert HeadMapConfig(variant="mha", heads=heads, r=2).heads == c.heads()
    recorded = heads_circuit(loaded, heads, "circuit", 0)  # what a run's circuit.json says
    assert recorded.heads == hc.heads and recorded.n_per_layer == max(len(hs) for hs in c.heads().values()) > 0


def test_cli_converts_both_ways_and_to_heads(tmp_path, capsys):
    c = random_circuit("tiny-llama-gqa", top_n=120)
    c.save(tmp_path / "edges.json")
    code, out, _ = run_cli(capsys, "edges-convert", tmp_path / "edges.json", "--to", "mib", "--out", tmp_path / "m.json")
    assert code == 0 and "wrote" in out
    foreign = json.loads((tmp_path / "m.json").read_text())
    del foreign["circuitlab"]
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    assert run_cli(capsys, "edges-convert", tmp_path / "foreign.json", "--to", "edges", "--model-of",
                   tmp_path / "edges.json", "--out", tmp_path / "back.json")[0] == 0
    back = EdgeCircuit.load(tmp_path / "back.json")
    assert torch.equal(back.scores.scores, c.scores.scores) and torch.equal(back.keep, c.keep)
    assert run_cli(capsys, "edges-convert", tmp_path / "m.json", "--to", "heads", "--out", tmp_path / "h.json")[0] == 0
    assert {k: v for k, v in Circuit.load(tmp_path / "h.json").heads.items() if v} == c.heads()


@pytest.mark.parametrize("argv, match", [
    (["{d}/missing.json", "--to", "mib"], "not found"),
    (["{d}/array.json", "--to", "mib"], "expected a JSON object"),
    (["{d}/schema.json", "--to", "mib"], "not a circuitlab edge circuit"),
    (["{d}/foreign.json", "--to", "edges"], "names no model"),
    (["{d}/foreign.json", "--to", "edges", "--model-of", "{d}/other.json"], "not of tiny-llama:"),
    (["{d}/edges.json", "--to", "mib", "--model-of", "{d}/other.json"], "edges.json is a circuitlab edge circuit, "
                                                                         "which names its model: --model-of is for"),
    (["{d}/edges.json", "--to", "csv"], "invalid choice: 'csv'"),
    (["{d}/no_scores.json", "--to", "mib"], "scores file no_scores.safetensors is missing"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(argv, match, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    random_circuit("tiny-llama-gqa").save(d / "edges.json")
    random_circuit("tiny-llama").save(d / "other.json")
    foreign = to_mib(random_circuit("tiny-llama-gqa"))
    del foreign["circuitlab"]
    (d / "foreign.json").write_text(json.dumps(foreign))
    (d / "array.json").write_text("[1]")
    (d / "schema.json").write_text('{"schema": "x"}')
    (d / "no_scores.json").write_text((d / "edges.json").read_text())
    before = sorted(d.iterdir())
    out = tmp_path / "out" / "o.json"
    one_line_error(capsys, ["edges-convert", *(a.format(d=d) for a in argv), "--out", str(out)], match)
    assert not out.parent.exists() and sorted(d.iterdir()) == before


@pytest.mark.usefixtures("one_thread")
def test_finetune_headmap_on_a_derived_head_circuit(tmp_path, capsys):
    c = random_circuit("tiny-llama", top_n=200)
    c.save(tmp_path / "edges.json")
    assert run_cli(capsys, "edges-convert", tmp_path / "edges.json", "--to", "heads", "--out",
                   tmp_path / "heads.json")[0] == 0
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "headmap-mha",
                           "--circuit", tmp_path / "heads.json", "--rank", "2", "--max-train", "2", "--batch-size", "2",
                           "--epochs", "1", "--warmup-steps", "0", "--limit", "2", "--out", out)
    assert code == 0, err
    r = json.loads((out / "result.json").read_text())
    assert {int(k): v for k, v in r["heads"].items() if v} == c.heads()
