"""Layers x heads pictures: the masking score tables (Figures 1a/1d, 4 and 1b/1e, 5) and the
circuits' head patterns (Figure 9)."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.errors import CircuitlabError
from circuitlab.report.style import (
    HEAD_AXIS, LAYER_AXIS, LOSS, as_list, circuit_labels, finite, fit_title, panel_title, subplots, subtitle, ticks,
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

    The colour is each head's loss minus its layer's baseline (`layer_baselines`): heads are chosen per layer,
    so the contrast within a layer is what decides them, and in the layer-conditioned table the loss climbs
    with every layer of earlier heads masked, a gradient that would otherwise take the whole colour scale.
    All panels share one diverging scale centred at 0 (no change), so colours compare across tasks; the
    hover gives the loss itself. Where a circuit's heads are the top of this very table
    (`circuit.selected_by`), their cells are outlined.
    """
    circuits = as_list(circuits)
    labels = labels or circuit_labels(circuits)
    missing = [l for c, l in zip(circuits, labels) if table not in c.scores]
    if missing:
        raise CircuitlabError(f"no {table!r} score table in circuit(s) {', '.join(missing)}")
    deltas = [_deltas(c.scores[table], layer_baselines(c, table)) for c in circuits]
    relative = all(c.baseline_loss is not None for c in circuits)
    shown = deltas if relative else [c.scores[table] for c in circuits]
    values = finite(x for z in shown for row in z for x in row)
    fig, rows, cols = subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
                               horizontal_spacing=0.06, vertical_spacing=0.08)
    marked = False
    for i, (c, label, z) in enumerate(zip(circuits, labels, shown)):
        r, col = divmod(i, cols)
        chosen = set(c.head_list) if mark_heads and c.selected_by == table else set()
        hover = [[_hover(c.scores[table][layer][h], d, (layer, h) in chosen) for h, d in enumerate(row)]
                 for layer, row in enumerate(deltas[i])]
        fig.add_trace(go.Heatmap(
            z=z, x=list(range(c.model.n_heads)), y=list(range(c.model.n_layers)), coloraxis="coloraxis",
            customdata=hover, name=label,
            hovertemplate=f"{label}<br>layer %{{y}}, head %{{x}}%{{customdata}}<extra></extra>",
        ), row=r + 1, col=col + 1)
        for layer, h in sorted(chosen):  # the cell itself, so the outline never outgrows a layer's row
            fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                          line=dict(color="black", width=1.5), row=r + 1, col=col + 1)
        marked = marked or bool(chosen)
        fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS if col == 0 else None, row=r + 1, col=col + 1,
                         **ticks(c.model.n_layers))
        fig.update_xaxes(title_text=HEAD_AXIS if r == rows - 1 else None, row=r + 1, col=col + 1,
                         **ticks(c.model.n_heads))
    title = title or TABLE_TITLES.get(table, f"score table {table!r}")
    if relative:
        title = subtitle(title, "colour: loss minus the layer's baseline")
    bound = max((abs(v) for v in values), default=1.0)
    width = max(640, 260 * cols + 160)
    title, lines = fit_title(subtitle(title, "outlined: the heads the circuit chose") if marked else title, width)
    fig.update_layout(
        title=title,
        margin=dict(t=104 + 16 * lines),
        coloraxis=dict(colorscale="RdBu_r", cmin=-bound, cmax=bound, cmid=0,
                       colorbar=dict(title=dict(text=f"Δ {LOSS}" if relative else LOSS, side="right")))
        if relative else dict(colorscale="Viridis", cmin=min(values, default=0), cmax=max(values, default=1),
                              colorbar=dict(title=dict(text=LOSS, side="right"))),
        height=max(420, 420 * rows) + 16 * max(0, lines - 1), width=width,
    )
    return fig


def layer_baselines(c: Circuit, table: str) -> list[float | None]:
    """What each layer's scores are measured against: the unmasked loss for `single` (one head masked alone);
    for `conditioned` (one head masked on top of the circuit heads of earlier layers), the loss with those
    earlier heads masked, which is the circuit's loss curve one layer back (the unmasked loss at the first
    located layer). None where the circuit records no baseline."""
    n, base = c.model.n_layers, c.baseline_loss
    if base is None:
        return [None] * n
    if table != "conditioned" or c.selected_by != "conditioned" or not c.loss_curve:
        return [base] * n
    rows = c.scores[table]
    first = next((layer for layer, row in enumerate(rows) if finite(row)), 0)
    curve = c.loss_curve
    return [base if layer <= first else curve[layer - first - 1] if layer - first - 1 < len(curve) else None
            for layer in range(n)]


def _deltas(z: list[list[float]], baselines: list[float | None]) -> list[list[float]]:
    return [[x - b if b is not None and x is not None and math.isfinite(x) else math.nan for x in row]
            for row, b in zip(z, baselines)]


def _hover(loss, delta, chosen: bool) -> str:
    text = f"<br>loss {loss:.4f} nats/token" if loss is not None and math.isfinite(loss) else "<br>not evaluated"
    if math.isfinite(delta):
        text += f" ({delta:+.4f} vs the layer's baseline, {loss - delta:.4f})"
    return text + ("<br>in the circuit" if chosen else "")


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
