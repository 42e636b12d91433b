"""Pictures of edge circuits: which edges are drawn at each slider step, how, and what the change figure marks,
checked against the circuit's scores sorted independently."""

import shutil
import struct

import pytest
import torch

from circuitlab.cli import main
from circuitlab.circuits.circuit import ModelInfo
from circuitlab.edges.circuit import EdgeCircuit, EdgeScores
from circuitlab.edges.graph import Graph
from circuitlab.report.edge_graph import SIZES, edge_change_figure, edge_graph_figure, faithfulness_figure
from circuitlab.report.write import write_figures

MODEL = ModelInfo("tiny-llama-gqa", "tiny-llama-gqa", None, "f" * 16, 4, 8, 2, 8, 64)
G = Graph(4, 8, 2)


def circuit(seed: int, top_n: int = 300) -> EdgeCircuit:
    scores = torch.randn(G.n_writers, G.n_readers, generator=torch.Generator().manual_seed(seed)) * G.edge_mask
    return EdgeCircuit.select(EdgeScores(MODEL, "add_sub", "eap-ig", "logprob", 5, 8, scores), top_n=top_n)


def top_kept(c: EdgeCircuit, n: int) -> list[str]:
    """The n kept edges of largest |score|, by a route of its own: a dict of names sorted by value."""
    s = c.scores.scores
    kept = {G.edge_name(w, r): abs(s[w, r].item()) for w in range(G.n_writers) for r in range(G.n_readers)
            if c.keep[w, r]}
    return sorted(kept, key=lambda name: -kept[name])[:n]


def edge_traces(fig, visible=None, row_axis=None):
    """(edge name, trace) of the edge traces (those with a score in their hover text)."""
    out = []
    for t, v in zip(fig.data, visible if visible is not None else [t.visible for t in fig.data]):
        if isinstance(t.text, str) and "score" in t.text and v and (row_axis is None or t.yaxis == row_axis):
            out.append((t.text.split("<br>")[0], t))
    return out


def test_the_graph_draws_the_top_edges_with_width_by_score_and_colour_by_sign():
    c = circuit(0)
    fig = edge_graph_figure(c, top=50)
    drawn = edge_traces(fig)
    assert [name for name, _ in drawn] == top_kept(c, 50)
    s = {G.edge_name(w, r): s_.item() for (w, r), s_ in zip(c.keep.nonzero().tolist(), c.scores.scores[c.keep])}
    widths = [t.line.width for _, t in drawn]
    assert widths == sorted(widths, reverse=True) and widths[0] == pytest.approx(5.0)
    assert all((t.line.color == "#1f77b4") == (s[name] >= 0) for name, t in drawn)
    assert all(f"{s[name]:+.4g}" in t.text for name, t in drawn)  # hover shows the score


def test_each_slider_step_shows_the_top_n_and_their_nodes():
    c = circuit(1)
    fig = edge_graph_figure(c)
    steps = fig.layout.sliders[0].steps
    assert [int(st.label) for st in steps] == list(SIZES)
    for st, n in zip(steps, SIZES):
        visible = st.args[0]["visible"]
        drawn = [name for name, _ in edge_traces(fig, visible)]
        assert drawn == top_kept(c, n)
        nodes = {label for t, v in zip(fig.data, visible) if v and t.mode == "markers+text" for label in t.text}
        want = set()
        for name in drawn:
            w, r = name.split("->")
            want.add(w)
            want.update(G.reader_heads(G.reader_names.index(r)) or ["logits"])
        assert nodes == want


def test_the_change_figure_dashes_exactly_the_edges_one_circuit_keeps_and_counts_them():
    before = circuit(2)
    after = EdgeCircuit.select(EdgeScores(MODEL, "add_sub", "eap-ig", "logprob", 5, 8,
                                          before.scores.scores + 0.5 * torch.randn(G.n_writers, G.n_readers,
                                          generator=torch.Generator().manual_seed(9)) * G.edge_mask), top_n=250)
    fig = edge_change_figure(before, after, ("step 0", "step 50"), top=100)
    for axis, this, other in (("y", before, after), ("y2", after, before)):
        drawn = edge_traces(fig, row_axis=axis)
        assert [name for name, _ in drawn] == top_kept(this, 100)
        dashed = {name for name, t in drawn if t.line.dash == "dash"}
        assert dashed == {name for name, _ in drawn if name not in other.edges()} != set()
    added, removed = len(after.edges() - before.edges()), len(before.edges() - after.edges())
    assert f"{added:,} edges added and {removed:,} removed" in fig.layout.title.text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed")
def test_cli_plot_draws_an_edge_circuit_and_compare_refuses_one(tmp_path, capsys):
    c = circuit(3)
    c.save(tmp_path / "add_sub.json")
    assert main(["plot", str(tmp_path / "add_sub.json"), "--out", str(tmp_path / "figs")]) == 0
    png = (tmp_path / "figs" / "edges_add_sub.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (2 * 1600, 2 * fig_height(c))  # 1600 px wide at scale 1: legible there
    assert (tmp_path / "figs" / "edges_add_sub.html").is_file()
    assert main(["compare", str(tmp_path / "add_sub.json"), str(tmp_path / "add_sub.json"), "--out",
                 str(tmp_path / "cmp")]) == 2
    assert "is an edge circuit" in capsys.readouterr().err and not (tmp_path / "cmp").exists()


def fig_height(c):
    return edge_graph_figure(c).layout.height


def test_write_figures_renders_both_figures(tmp_path):
    pytest.importorskip("kaleido")
    if shutil.which("chromium") is None:
        pytest.skip("Chromium not installed")
    written = write_figures({"one": edge_graph_figure(circuit(4)), "two": edge_change_figure(circuit(4), circuit(5))},
                            tmp_path, scale=1)
    assert sorted(p.name for p in written if p.suffix == ".png") == ["one.png", "two.png"]


def test_a_circuit_with_a_curve_gets_its_faithfulness_figure(tmp_path):
    c = circuit(4)
    c.curve = {"ablation": "corrupted", "metric_full": -1.0, "metric_empty": -3.0,
               "points": [{"n_edges": 300, "metric": -1.2, "faithfulness": 0.9},
                          {"n_edges": 30, "metric": -2.0, "faithfulness": 0.5}]}
    fig = faithfulness_figure(c)
    assert list(fig.data[0].x) == [30, 300] and list(fig.data[0].y) == [0.5, 0.9]  # sorted by size
    assert fig.layout.xaxis.type == "log" and "corrupted ablation" in fig.layout.title.text
    c.save(tmp_path / "add_sub.json")
    assert main(["plot", str(tmp_path / "add_sub.json"), "--out", str(tmp_path / "figs"), "--no-png"]) == 0
    assert (tmp_path / "figs" / "edges_add_sub_faithfulness.html").is_file()


def test_an_edge_into_a_head_shows_whether_it_feeds_q_k_or_v():
    """Each input kind ends in its own marker, at its own point by the head; MLP and logits edges end in none."""
    fig = edge_graph_figure(circuit(2), top=200)
    symbols = {which: symbol for which, symbol in (("q", "circle"), ("k", "triangle-right"), ("v", "square"))}
    ends: dict[tuple[str, str], set] = {}
    kinds = set()
    for name, t in edge_traces(fig, visible=[True] * len(fig.data)):
        reader = name.split("->")[1]
        if reader.endswith(">"):
            which = reader[-2]
            kinds.add(which)
            assert t.marker.symbol[-1] == symbols[which] and t.marker.size[-1] > 0, name
            node = reader.split("<")[0]
            ends.setdefault((node, which), set()).add((round(t.x[-1], 6), round(t.y[-1], 6)))
        else:
            assert t.marker.size[-1] == 0, name  # an MLP's input or the logits: no input kind to show
    assert kinds == {"q", "k", "v"}
    assert all(len(points) == 1 for points in ends.values())  # one end point per input of a node
    for node in {n for n, _ in ends}:
        at = [next(iter(ends[(node, w)])) for w in "qkv" if (node, w) in ends]
        assert len(set(at)) == len(at), node  # a node's inputs never share an end point
    legend = [t.name for t in fig.data if t.showlegend is not False and t.name]
    assert {"into a head's q", "into a head's k", "into a head's v"} <= set(legend)
