"""Figures of a circuit over fine-tuning (`circuitlab track`): similarity to the start and to the previous
checkpoint, change per layer, and the first and last circuits drawn as graphs."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.studies.changes import Track
from circuitlab.report.style import LAYER_AXIS, PALETTE, ticks

TOP_EDGES = 60  # edges drawn per circuit graph: more is a hairball


def similarity_figure(t: Track) -> go.Figure:
    """Node and edge Jaccard over training, against the start and against the previous checkpoint (and the
    located heads' Jaccard with --heads)."""
    fig = go.Figure()
    lines = [("node", "node_jaccard", PALETTE[0]), ("edge", "edge_jaccard", PALETTE[1])]
    if t.located_heads:
        lines.append(("head (located)", "head_jaccard", PALETTE[2]))
    for label, key, color in lines:
        for changes, what, dash in ((t.vs_start, "vs start", "solid"), (t.vs_previous, "vs previous", "dot")):
            fig.add_trace(go.Scatter(
                x=[c.after for c in changes], y=[getattr(c, key) for c in changes], mode="lines+markers",
                name=f"{label} Jaccard {what}", line=dict(color=color, dash=dash),
                hovertemplate=f"step %{{x}}<br>{label} Jaccard {what}: %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(title_text="training step (checkpoint)")
    fig.update_yaxes(title_text="Jaccard |A ∩ B| / |A ∪ B|", range=[0, 1.05])
    fig.update_layout(title=f"How the {t.task} circuit changes over {t.method} fine-tuning<br>"
                            f"<sup>{t.model}, {t.settings['method']} edges, {t.n_pairs} pairs</sup>",
                      height=460, width=760)
    return fig


def layer_change_figure(t: Track) -> go.Figure:
    """Layer x checkpoint: the change from the previous checkpoint per source layer (CircuitLoRA's rule)."""
    z = [list(col) for col in zip(*[c.layer_change for c in t.vs_previous])]  # [layer][checkpoint]
    steps = [f"{c.before}→{c.after}" for c in t.vs_previous]
    fig = go.Figure(go.Heatmap(
        z=z, x=steps, y=list(range(len(z))), colorscale="Reds", colorbar=dict(title=dict(text="Σ |Δ score|",
                                                                                         side="right")),
        hovertemplate="layer %{y}, steps %{x}<br>change %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS, **ticks(len(z)))
    fig.update_xaxes(title_text="checkpoint step (from → to)", type="category")
    fig.update_layout(title="Change per layer between consecutive checkpoints<br><sup>sum over edges from the layer "
                            "of |s_after - s_before| (in both circuits), else |score|</sup>",
                      height=max(380, 22 * len(z) + 200), width=max(520, 60 * len(steps) + 260))
    return fig


def _node_xy(name: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """Nodes placed by layer: heads at (layer, head); a row below them the input (x -1), each MLP (just
    after its layer's heads) and the logits (x n_layers)."""
    if name == "input":
        return -1.0, float(n_heads)
    if name == "logits":
        return float(n_layers), float(n_heads)
    if name.startswith("m"):
        return int(name[1:]) + 0.5, float(n_heads)
    layer, head = name[1:].split(".h")
    return float(layer), float(head)


def _reader_xy(g, r: int) -> tuple[float, float]:
    """Where an edge ends: its reader's node (a KV group's k/v reader: the middle of the group's heads)."""
    if r == g.logits_reader:
        return _node_xy("logits", g.n_layers, g.n_heads)
    points = [_node_xy(n, g.n_layers, g.n_heads) for n in g.reader_heads(r)]
    return points[0][0], sum(p[1] for p in points) / len(points)


def _graph_traces(circuit: EdgeCircuit, top: int) -> list[go.Scatter]:
    g, s = circuit.graph, circuit.scores.scores
    kept = sorted(circuit.keep.nonzero().tolist(), key=lambda wr: -abs(float(s[wr[0], wr[1]])))[:top]
    traces, nodes = [], set()
    biggest = max((abs(float(s[w, r])) for w, r in kept), default=1.0) or 1.0
    for w, r in kept:
        (x0, y0), (x1, y1) = _node_xy(g.writer_name(w), g.n_layers, g.n_heads), _reader_xy(g, r)
        v = float(s[w, r])
        traces.append(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text",
                                 text=f"{g.edge_name(w, r)}: {v:.3g}", opacity=0.7,
                                 line=dict(width=0.5 + 3.5 * abs(v) / biggest,
                                           color="#1f77b4" if v >= 0 else "#d62728")))
        nodes.add(g.writer_name(w))
        nodes.update(g.reader_heads(r) or ["logits"])
    names = sorted(nodes)
    xy = [_node_xy(n, g.n_layers, g.n_heads) for n in names]
    traces.append(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=names,
                             textposition="top center", textfont=dict(size=9),
                             marker=dict(size=8, color="#333333"), showlegend=False,
                             hovertemplate="%{text}<extra></extra>"))
    return traces


def circuit_graph_figure(first: EdgeCircuit, last: EdgeCircuit, steps: tuple[int, int],
                         top: int = TOP_EDGES) -> go.Figure:
    """The circuits at the first and last checkpoint side by side, each with its `top` edges by |score|
    (blue: positive score, red: negative; width: |score| relative to that circuit's largest)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"step {steps[0]}", f"step {steps[1]}"], shared_yaxes=True)
    for col, circuit in ((1, first), (2, last)):
        for trace in _graph_traces(circuit, top):
            fig.add_trace(trace, row=1, col=col)
    g = first.graph
    fig.update_xaxes(title_text="layer (input at -1, MLP at layer + 0.5, logits last)", **ticks(g.n_layers + 2))
    rows = list(range(g.n_heads + 1))
    fig.update_yaxes(autorange="reversed", tickvals=rows, ticktext=[*map(str, rows[:-1]), "input / MLP / logits"])
    fig.update_yaxes(title_text="query head", col=1)
    fig.update_layout(title=f"The circuit before and after fine-tuning<br><sup>top {top} edges by |score| each; "
                            "blue positive, red negative</sup>",
                      height=max(420, 30 * g.n_heads + 220), width=max(900, 90 * g.n_layers + 300))
    return fig


def track_figures(t: Track, circuits: list[EdgeCircuit]) -> dict[str, go.Figure]:
    """stem -> figure, as `circuitlab.report.write.write_figures` writes them."""
    figs = {"track_similarity": similarity_figure(t), "track_layer_change": layer_change_figure(t)}
    figs["track_circuits"] = circuit_graph_figure(circuits[0], circuits[-1], (t.steps[0].step, t.steps[-1].step))
    return figs
