"""Figure 1: per task (row), the single-head table, the layer-conditioned table and the curves."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.errors import CircuitlabError
from circuitlab.report.curves import add_curves
from circuitlab.report.style import HEAD_AXIS, LAYER_AXIS, LOSS, as_list, circuit_labels, finite, panel_title, ticks

TABLES = ("single", "conditioned")
BELOW_AXIS_PX = 64  # the colour bar and the legend start this far under the bottom row: below its axis titles


def overview(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    title: str = "Masking heads: alone, layer-conditioned, and layer by layer",
) -> go.Figure:
    """Both heatmap columns share one colour scale, so the gap between masking one head alone and
    masking it on top of earlier layers' circuit heads shows as colour."""
    circuits = as_list(circuits)
    labels = labels or circuit_labels(circuits)
    for c, label in zip(circuits, labels):
        if not set(TABLES) <= set(c.scores):
            raise CircuitlabError(f"circuit {label} lacks the single and conditioned score tables")
    titles = [f"{panel_title(c, l)}<br>{what}" for c, l in zip(circuits, labels)
              for what in ("one head masked", "layer-conditioned", "loss vs masked layers")]
    fig = make_subplots(rows=len(circuits), cols=3, subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=0.12 / max(1, len(circuits) - 1) if len(circuits) > 1 else 0.1,
                        column_widths=[0.25, 0.25, 0.5])
    values = finite(x for c in circuits for t in TABLES for row in c.scores[t] for x in row)
    colors: dict[str, str] = {}
    shown: set[str] = set()
    last = len(circuits)
    for r, (c, label) in enumerate(zip(circuits, labels), 1):
        for col, table in enumerate(TABLES, 1):
            fig.add_trace(go.Heatmap(
                z=c.scores[table], x=list(range(c.model.n_heads)), y=list(range(c.model.n_layers)),
                coloraxis="coloraxis", name=f"{label} {table}",
                hovertemplate=f"{label}, {table}<br>layer %{{y}}, head %{{x}}<br>loss %{{z:.4f}} nats/token"
                              "<extra></extra>",
            ), row=r, col=col)
            fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS if col == 1 else None, row=r, col=col,
                             **ticks(c.model.n_layers))
            fig.update_xaxes(title_text=HEAD_AXIS if r == last else None, row=r, col=col, **ticks(c.model.n_heads))
        add_curves(fig, c, label, r, 3, colors, shown)
        fig.update_xaxes(title_text="number of masked layers" if r == last else None, row=r, col=3)
        fig.update_yaxes(title_text=LOSS, row=r, col=3)
    left, right = fig.layout.xaxis.domain[0], fig.layout.xaxis2.domain[1]  # under the two heatmap columns
    height, top, bottom = max(420, 480 * len(circuits)) + 90, 100, 160
    below = -BELOW_AXIS_PX / (height - top - bottom)  # in the plot area's units, so it is the same px for any height
    fig.update_layout(
        title=title, height=height, width=1300, margin=dict(t=top, b=bottom),
        coloraxis=dict(colorscale="Viridis", cmin=min(values, default=0), cmax=max(values, default=1),
                       colorbar=dict(title=dict(text=LOSS, side="top"), orientation="h", thickness=12,
                                     x=(left + right) / 2, xanchor="center", len=right - left, y=below, yanchor="top")),
        legend=dict(orientation="h", x=fig.layout.xaxis3.domain[0], y=below, yanchor="top"),
    )
    return fig
