"""Loss curves: the loss with a selection's heads of layers 0..k masked, against k (Figures 1c/1f
and 6), and the same masks on the samples and on many documents (Figure 7)."""

from __future__ import annotations

import statistics

import plotly.graph_objects as go

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.errors import CircuitlabError
from circuitlab.report.style import (
    CURVE_COLORS, CURVE_DASHES, LOSS, as_list, circuit_labels, curve_color, panel_title, subplots,
)


def curve_points(curve: list[float], baseline: float | None) -> tuple[list[int], list[float]]:
    """x = number of masked layers; `curve[k]` has layers 0..k masked, so it sits at x = k + 1.

    The unmasked baseline, when known, is the point at x = 0.
    """
    xs, ys = list(range(1, len(curve) + 1)), list(curve)
    if baseline is not None:
        xs, ys = [0, *xs], [baseline, *ys]
    return xs, ys


def strategy_curve(circuit: Circuit, strategy: str) -> list[float] | None:
    """The curve of the circuit's selections of `strategy`: the mean over their seeds, if several."""
    curves = [s.loss_curve for s in circuit.selections if s.strategy == strategy]
    return [statistics.fmean(xs) for xs in zip(*curves)] if curves else None


def compared_curves(circuit: Circuit) -> list[tuple[str, str, list[float]]]:
    """(name, strategy, curve) of every curve a figure compares: the circuit's own first; the other
    seeds of its own strategy one by one; another strategy's seeds as their mean (Figure 6)."""
    out = [(circuit.label, circuit.strategy, circuit.loss_curve)] if circuit.loss_curve else []
    for s in circuit.selections:
        if s.strategy == circuit.strategy:
            out.append((s.label, s.strategy, s.loss_curve))
    for strategy in dict.fromkeys(s.strategy for s in circuit.selections if s.strategy != circuit.strategy):
        n = sum(s.strategy == strategy for s in circuit.selections)
        out.append((strategy if n == 1 else f"{strategy} (mean of {n} seeds)", strategy,
                    strategy_curve(circuit, strategy)))
    return out


def add_curves(fig, c: Circuit, label: str, row: int, col: int, colors: dict, shown: set) -> None:
    """Every compared curve of `c` in one panel, then its unmasked loss (each legend entry once)."""
    for name, strategy, curve in compared_curves(c):
        xs, ys = curve_points(curve, c.baseline_loss)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=name not in shown,
            line=dict(color=curve_color(name, strategy, colors), width=2, dash=CURVE_DASHES.get(strategy)),
            marker=dict(size=4),
            hovertemplate=f"{label}, {name}<br>%{{x}} layers masked<br>loss %{{y:.4f}} nats/token<extra></extra>",
        ), row=row, col=col)
        shown.add(name)
    if c.baseline_loss is not None:
        fig.add_trace(go.Scatter(
            x=[0, c.model.n_layers], y=[c.baseline_loss] * 2, mode="lines", name="unmasked", legendgroup="unmasked",
            showlegend="unmasked" not in shown, line=dict(color="black", dash="dash", width=1),
            hovertemplate=f"{label}, unmasked<br>loss %{{y:.4f}} nats/token<extra></extra>",
        ), row=row, col=col)
        shown.add("unmasked")


def curve_axes(fig, r: int, col: int, rows: int) -> None:
    fig.update_xaxes(title_text="number of masked layers" if r == rows - 1 else None, row=r + 1, col=col + 1)
    fig.update_yaxes(title_text=LOSS if col == 0 else None, row=r + 1, col=col + 1)


def loss_curves(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str = "Loss versus number of masked layers<br><sup>heads of layers 0..k-1 masked, per selection</sup>",
) -> go.Figure:
    """Loss with the selected heads of layers 0..k masked, for each selection; dashed: unmasked."""
    circuits = as_list(circuits)
    labels = labels or circuit_labels(circuits)
    fig, rows, cols = subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
                               horizontal_spacing=0.05, vertical_spacing=0.1)
    colors: dict[str, str] = {}
    shown: set[str] = set()
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        add_curves(fig, c, label, r + 1, col + 1, colors, shown)
        curve_axes(fig, r, col, rows)
    fig.update_layout(title=title, height=max(420, 330 * rows), width=max(700, 300 * cols + 120),
                      legend=dict(orientation="h", y=-0.12 if rows > 1 else -0.25))
    return fig


def all_docs_curves(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Figure 7: the same masks' loss curve on the selected samples and on many documents
    (`circuit.all_docs`, written by `circuitlab reproduce`)."""
    circuits = as_list(circuits)
    labels = labels or circuit_labels(circuits)
    missing = [l for c, l in zip(circuits, labels) if c.all_docs is None]
    if missing:
        raise CircuitlabError(f"no all-documents loss curve in circuit(s) {', '.join(missing)}")
    titles = [f"{panel_title(c, l)}: {len(c.samples)} samples vs {c.all_docs.n_docs} docs"
              for c, l in zip(circuits, labels)]
    fig, rows, cols = subplots(titles, cols, horizontal_spacing=0.05, vertical_spacing=0.1)
    shown: set[str] = set()
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        for name, curve, base, color in [
            ("selected samples", c.loss_curve, c.baseline_loss, CURVE_COLORS["samples"]),
            ("all docs", c.all_docs.loss_curve, c.all_docs.baseline_loss, CURVE_COLORS["all docs"]),
        ]:
            xs, ys = curve_points(curve, base)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=name not in shown,
                line=dict(color=color, width=2), marker=dict(size=4),
                hovertemplate=f"{label}, {name}<br>%{{x}} layers masked<br>loss %{{y:.4f}} nats/token<extra></extra>",
            ), row=r + 1, col=col + 1)
            shown.add(name)
        curve_axes(fig, r, col, rows)
    fig.update_layout(
        title=title or f"The same {circuits[0].strategy} masks: selected samples vs all docs<br><sup>all docs = the "
                       "first N docs of the split, right or wrong</sup>",
        height=max(420, 330 * rows), width=max(700, 320 * cols + 120),
        legend=dict(orientation="h", y=-0.12 if rows > 1 else -0.25),
    )
    return fig
