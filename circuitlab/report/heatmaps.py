"""Layers x heads pictures: the masking score tables (Figures 1a/1d, 4 and 1b/1e, 5) and the
circuits' head patterns (Figure 9)."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.errors import CircuitlabError
from circuitlab.report.style import (
    HEAD_AXIS, LAYER_AXIS, LOSS, as_list, circuit_labels, finite, panel_title, subplots, subtitle, ticks,
)

TABLE_TITLES = {
    "single": "Loss with one head masked",
    "conditioned": "Layer-conditioned: loss with one head masked<br><sup>on top of the circuit heads chosen in "
                   "earlier layers</sup>",
}


def score_heatmaps(
    circuits: Circuit | list[Circuit],
    table: str = "single",
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
    mark_heads: bool = True,
) -> go.Figure:
    """Layers x heads heatmaps of a score table (`single` or `conditioned`), one panel per circuit.

    All panels share one colour scale, so colours compare across tasks. Where a circuit's heads are
    the top of this very table (`circuit.selected_by`), they are outlined.
    """
    circuits = as_list(circuits)
    labels = labels or circuit_labels(circuits)
    missing = [l for c, l in zip(circuits, labels) if table not in c.scores]
    if missing:
        raise CircuitlabError(f"no {table!r} score table in circuit(s) {', '.join(missing)}")
    values = finite(x for c in circuits for row in c.scores[table] for x in row)
    fig, rows, cols = subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
                               horizontal_spacing=0.06, vertical_spacing=0.08)
    marked = False
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        base = c.baseline_loss
        fig.add_trace(go.Heatmap(
            z=c.scores[table], x=list(range(c.model.n_heads)), y=list(range(c.model.n_layers)), coloraxis="coloraxis",
            customdata=[[_hover_delta(x, base) for x in row] for row in c.scores[table]], name=label,
            hovertemplate=f"{label}<br>layer %{{y}}, head %{{x}}<br>loss %{{z:.4f}} nats/token"
                          "%{customdata}<extra></extra>",
        ), row=r + 1, col=col + 1)
        if mark_heads and c.selected_by == table and c.heads:
            marked = True
            layers, heads = zip(*c.head_list)
            fig.add_trace(go.Scatter(
                x=heads, y=layers, mode="markers", name="chosen head", showlegend=False,
                marker=dict(symbol="square-open", size=9, color="black", line=dict(width=1.5)),
                hovertemplate=f"{label}<br>layer %{{y}}, head %{{x}}: in the circuit<extra></extra>",
            ), row=r + 1, col=col + 1)
        fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS if col == 0 else None, row=r + 1, col=col + 1,
                         **ticks(c.model.n_layers))
        fig.update_xaxes(title_text=HEAD_AXIS if r == rows - 1 else None, row=r + 1, col=col + 1,
                         **ticks(c.model.n_heads))
    title = title or TABLE_TITLES.get(table, f"score table {table!r}")
    fig.update_layout(
        title=subtitle(title, "squares: the heads the circuit chose") if marked else title,
        margin=dict(t=110),
        coloraxis=dict(colorscale="Viridis", cmin=min(values, default=0), cmax=max(values, default=1),
                       colorbar=dict(title=dict(text=LOSS, side="right"))),
        height=max(420, 420 * rows), width=max(640, 260 * cols + 160),
    )
    return fig


def _hover_delta(x, base) -> str:
    if base is None or x is None or not math.isfinite(x):
        return ""
    return f"<br>{x - base:+.4f} vs unmasked ({base:.4f})"


def circuit_patterns(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str = "Located circuits: chosen heads per layer",
) -> go.Figure:
    """Each circuit as a layers x heads pattern (dark = in the circuit), side by side."""
    circuits = as_list(circuits)
    labels = labels or circuit_labels(circuits)
    fig, rows, cols = subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
                               horizontal_spacing=0.04, vertical_spacing=0.08)
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        chosen = set(c.head_list)
        z = [[int((layer, h) in chosen) for h in range(c.model.n_heads)] for layer in range(c.model.n_layers)]
        text = [["in the circuit" if v else "not chosen" for v in row] for row in z]
        fig.add_trace(go.Heatmap(
            z=z, x=list(range(c.model.n_heads)), y=list(range(c.model.n_layers)), zmin=0, zmax=1,
            colorscale=[[0, "#f2f2f2"], [1, "#08306b"]], showscale=False, customdata=text, xgap=1, ygap=1,
            hovertemplate=f"{label}<br>layer %{{y}}, head %{{x}}: %{{customdata}}<extra></extra>",
        ), row=r + 1, col=col + 1)
        fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS if col == 0 else None, row=r + 1, col=col + 1,
                         **ticks(c.model.n_layers))
        fig.update_xaxes(title_text=HEAD_AXIS if r == rows - 1 else None, row=r + 1, col=col + 1,
                         **ticks(c.model.n_heads))
    fig.update_layout(title=title, height=max(420, 420 * rows), width=max(480, 220 * cols + 100))
    return fig
