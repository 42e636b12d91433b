"""Pictures of edge circuits: the circuit as a graph a person can read, and two circuits' difference.

Nodes sit by layer: query heads at (layer, head), and on a row below them the input (left of layer 0), each
layer's MLP (just after its heads) and the logits (a step right of the last MLP). An edge runs from its
writer to its reader's node (a KV group's k/v reader: the middle of the group's heads), into a head at one of three
points left of it by the input it feeds (q above, k level, v below), ended by that input's marker (q a circle, k a
triangle, v a square); its width is its
|score| against the largest drawn, its colour its sign (blue positive, red negative), and hovering on its
middle (the dot) shows its name and score; an edge between two nodes of one row is an arc. Only the top N edges by |score| among the circuit's kept edges are drawn,
N chosen with the slider (the PNG shows the default): a whole circuit of thousands of edges is a hairball.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.edges.graph import Graph

SIZES = (10, 25, 50, 100, 200)  # the slider's choices of N
DEFAULT_TOP = 50
POSITIVE, NEGATIVE = "#1f77b4", "#d62728"
WIDTH = 1600  # legible at this width: ~50 px a layer for 30 layers


def node_xy(g: Graph, name: str) -> tuple[float, float]:
    if name == "input":
        return -1.0, float(g.n_heads)
    if name == "logits":  # a layer's width right of the last MLP, so their labels do not collide
        return float(g.n_layers + 1), float(g.n_heads)
    if name.startswith("m"):
        return int(name[1:]) + 0.5, float(g.n_heads)
    layer, head = name[1:].split(".h")
    return float(layer), float(head)


# Where an edge into a head ends, by the input it feeds: q, k and v arrive at three points left of the head (the
# writers are in earlier layers), each with its own end marker, so a head's three inputs stay apart.
INPUTS = {"q": (-0.22, "circle"), "k": (0.0, "triangle-right"), "v": (0.22, "square")}
INPUT_DX = -0.16


def reader_input(g: Graph, r: int) -> str | None:
    """"q", "k" or "v" for an attention head's input, None for an MLP or the logits."""
    name = g.reader_name(r)
    return name[-2] if name.endswith(">") else None


def reader_xy(g: Graph, r: int) -> tuple[float, float]:
    if r == g.logits_reader:
        return node_xy(g, "logits")
    points = [node_xy(g, n) for n in g.reader_heads(r)]
    x, y = points[0][0], sum(p[1] for p in points) / len(points)
    which = reader_input(g, r)
    return (x + INPUT_DX, y + INPUTS[which][0]) if which else (x, y)


def edge_path(g: Graph, p0: tuple[float, float], p1: tuple[float, float], n: int = 13) -> tuple[list, list]:
    """A straight line, or between two nodes of one row an arc (below the row of MLPs, above a row of heads),
    so edges along a row do not hide each other: a quadratic Bezier curve through `n` points."""
    (x0, y0), (x1, y1) = p0, p1
    bow = 0.0 if y0 != y1 else 0.4 * abs(x1 - x0) ** 0.5 * (1 if y0 == g.n_heads else -1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 2 * bow  # the control point: the curve's middle is `bow` off
    ts = [i / (n - 1) for i in range(n)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1 for t in ts]
    return xs, ys


def ranked_edges(circuit: EdgeCircuit, most: int) -> list[tuple[int, int, float]]:
    """The circuit's kept edges by |score|, largest first (ties: the lower index), at most `most`."""
    s = circuit.scores.scores
    kept = circuit.keep.nonzero().tolist()
    kept.sort(key=lambda wr: -abs(float(s[wr[0], wr[1]])))  # a stable sort keeps index order on ties
    return [(w, r, float(s[w, r])) for w, r in kept[:most]]


def panel_traces(circuit: EdgeCircuit, sizes: tuple[int, ...], other: EdgeCircuit | None = None,
                 only_here: str = "") -> list[tuple[go.Scatter, int]]:
    """(trace, the first size index it shows at): one trace per edge, and the nodes each size adds. With
    `other`, an edge not kept there is dashed and its hover says `only_here` (e.g. "removed")."""
    g = circuit.graph
    edges = ranked_edges(circuit, max(sizes))
    biggest = max((abs(v) for _, _, v in edges), default=1.0) or 1.0
    out, seen = [], set()
    for rank, (w, r, v) in enumerate(edges):
        at = next(i for i, n in enumerate(sizes) if rank < n)
        (x0, y0), (x1, y1) = node_xy(g, g.writer_name(w)), reader_xy(g, r)
        alone = other is not None and not bool(other.keep[w, r])
        label = f"{g.edge_name(w, r)}<br>score {v:+.4g} (rank {rank + 1})" + (f"<br>{only_here}" if alone else "")
        xs, ys = edge_path(g, (x0, y0), (x1, y1))
        which = reader_input(g, r)
        ends = {len(xs) // 2: (6, "circle")} | ({len(xs) - 1: (9, INPUTS[which][1])} if which else {})
        out.append((go.Scatter(
            x=xs, y=ys, mode="lines+markers", showlegend=False, hoverinfo="text", text=label,
            marker=dict(size=[ends.get(i, (0, ""))[0] for i in range(len(xs))],
                        symbol=[ends.get(i, (0, "circle"))[1] for i in range(len(xs))],
                        color=POSITIVE if v >= 0 else NEGATIVE),
            opacity=0.75, line=dict(width=0.6 + 4.4 * abs(v) / biggest, color=POSITIVE if v >= 0 else NEGATIVE,
                                    dash="dash" if alone else "solid")), at))
        new = [n for n in [g.writer_name(w), *(g.reader_heads(r) or ["logits"])] if n not in seen]
        seen.update(new)
        if new:
            xy = [node_xy(g, n) for n in new]
            out.append((go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=new,
                                   textposition="top center", textfont=dict(size=10), showlegend=False,
                                   marker=dict(size=7, color="#333333"), hovertemplate="%{text}<extra></extra>"), at))
    return out


def _finish(fig: go.Figure, traces: list[tuple[go.Scatter, int, int]], sizes: tuple[int, ...], top: int,
            g: Graph, rows: int, title: str, legend: list[tuple[str, str, str]]) -> go.Figure:
    """Add `traces` ((trace, first size index, row)), the legend, the axes and the top-N slider."""
    active = max(i for i, n in enumerate(sizes) if n <= max(top, sizes[0]))
    for trace, at, row in traces:
        trace.visible = at <= active
        fig.add_trace(trace, row=row, col=1)
    for name, color, dash in legend:  # entries that explain the encoding, not data
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=dict(color=color, dash=dash,
                                                                                        width=3)), row=1, col=1)
    for which, (_, symbol) in INPUTS.items():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"into a head's {which}",
                                 marker=dict(symbol=symbol, size=9, color="#555555")), row=1, col=1)
    n_legend = len(legend) + len(INPUTS)
    steps = [dict(method="update", label=str(n),
                  args=[{"visible": [at <= i for _, at, _ in traces] + [True] * n_legend}])
             for i, n in enumerate(sizes)]
    fig.update_layout(sliders=[dict(active=active, steps=steps, currentvalue=dict(prefix="top edges by |score|: "),
                                    pad=dict(t=40), len=0.5, x=0.25)])
    layers = [-1, *range(g.n_layers), g.n_layers + 1]
    fig.update_xaxes(tickvals=layers, ticktext=["in", *map(str, range(g.n_layers)), "out"], range=[-1.6, g.n_layers + 1.6],
                     showgrid=False)
    fig.update_xaxes(title_text="layer (in = input embedding, MLPs just right of their layer's heads, out = logits)",
                     row=rows, col=1)
    ticks = list(range(g.n_heads + 1))
    fig.update_yaxes(autorange="reversed", tickvals=ticks, ticktext=[*map(str, ticks[:-1]), "input, MLPs, logits"],
                     title_text="query head", showgrid=False)
    fig.update_layout(title=title, width=WIDTH, height=rows * (46 * (g.n_heads + 1) + 60) + 260,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"),
                      plot_bgcolor="white", hoverlabel=dict(align="left"))
    return fig


def edge_graph_figure(circuit: EdgeCircuit, top: int = DEFAULT_TOP, sizes: tuple[int, ...] = SIZES,
                      title: str | None = None) -> go.Figure:
    """One edge circuit as a graph, its top `top` edges shown (the slider: the others of `sizes`)."""
    s = circuit.scores
    fig = make_subplots(rows=1, cols=1)
    traces = [(t, at, 1) for t, at in panel_traces(circuit, sizes)]
    title = title or (f"Edge circuit: {s.model.name} / {s.task}<br><sup>{s.method}, {s.metric}, {s.n_pairs} pairs; "
                      f"{circuit.n_edges:,} edges kept of {circuit.graph.n_edges:,}, the largest |score| drawn</sup>")
    return _finish(fig, traces, sizes, top, circuit.graph, 1, title,
                   [("positive score", POSITIVE, "solid"), ("negative score", NEGATIVE, "solid")])


def edge_change_figure(before: EdgeCircuit, after: EdgeCircuit, labels: tuple[str, str] = ("before", "after"),
                       top: int = DEFAULT_TOP, sizes: tuple[int, ...] = SIZES) -> go.Figure:
    """Two circuits of one model one above the other, each with its top edges; an edge kept in one and not
    the other is dashed: removed (in the first) or added (in the second)."""
    g = before.graph
    added = int((after.keep & ~before.keep).sum())
    removed = int((before.keep & ~after.keep).sum())
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[f"{labels[0]}: {before.n_edges:,} edges", f"{labels[1]}: {after.n_edges:,} edges"])
    fig.for_each_annotation(lambda a: a.update(x=0, xanchor="left"))  # clear of the legend, which sits at the right
    traces = [(t, at, 1) for t, at in panel_traces(before, sizes, after, f"removed by {labels[1]}")]
    traces += [(t, at, 2) for t, at in panel_traces(after, sizes, before, f"added since {labels[0]}")]
    title = (f"The circuit at {labels[0]} and at {labels[1]}<br><sup>{added:,} edges added and {removed:,} removed in "
             "all; dashed: an edge only this circuit keeps (removed above, added below)</sup>")
    return _finish(fig, traces, sizes, top, g, 2, title,
                   [("positive score", POSITIVE, "solid"), ("negative score", NEGATIVE, "solid"),
                    ("only in this circuit", "#555555", "dash")])


def faithfulness_figure(circuit: EdgeCircuit) -> go.Figure:
    """An edge circuit's faithfulness curve (`edges --curve`): (m(C) - m(empty)) / (m(full) - m(empty)) of its
    top-N circuits against the edges they keep after pruning (log scale), 1 = the whole model."""
    s, curve = circuit.scores, circuit.curve
    points = sorted(curve["points"], key=lambda p: p["n_edges"])
    fig = go.Figure(go.Scatter(
        x=[p["n_edges"] for p in points], y=[p["faithfulness"] for p in points], mode="lines+markers",
        hovertemplate="%{x:,} edges: faithfulness %{y:.3f}<extra></extra>", line={"color": POSITIVE}))
    fig.add_hline(y=1.0, line={"dash": "dot", "color": "#555555"}, annotation_text="whole model")
    share = [100 * p["n_edges"] / circuit.graph.n_edges for p in points]
    fig.update_layout(
        title=f"Faithfulness: {s.model.name} / {s.task}<br><sup>{s.method}, {s.metric}, {s.n_pairs} pairs, "
              f"{curve['ablation']} ablation; {share[0]:.2g}-{share[-1]:.2g} % of {circuit.graph.n_edges:,} edges</sup>",
        xaxis={"title": "edges kept (after pruning)", "type": "log"}, yaxis={"title": "faithfulness"},
        width=900, height=520, template="plotly_white")
    return fig
