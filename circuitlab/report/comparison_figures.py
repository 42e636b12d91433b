"""How circuits of several tasks relate, as figures (Figures 2a, 2b and 8, and head frequency), and paired
differences with their intervals (`paired_differences`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from circuitlab.report.comparison import Comparison
from circuitlab.report.style import HEAD_AXIS, LAYER_AXIS, subtitle, ticks


def similarity_heatmap(table: pd.DataFrame, chance: pd.DataFrame, title: str, what: str) -> go.Figure:
    """A square task x task table (overlap rate or Jaccard) on a fixed 0..1 colour scale, with the chance
    level (the same table for random circuits of the same sizes) in the subtitle and each cell's hover."""
    labels = [str(x) for x in table.index]
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(dtype=float).tolist(), x=[str(x) for x in table.columns], y=labels, zmin=0, zmax=1,
        colorscale="Blues", texttemplate="%{z:.2f}", colorbar=dict(title=dict(text=what, side="right")),
        customdata=chance.to_numpy(dtype=float).tolist(),
        hovertemplate=f"row %{{y}}, column %{{x}}<br>{what}: %{{z:.3f}} (chance %{{customdata:.3f}})<extra></extra>",
    ))
    n = len(labels)
    fig.update_yaxes(autorange="reversed", title_text="task (row)")
    fig.update_xaxes(title_text="task (column)", tickangle=-45)
    fig.update_layout(title=subtitle(title, f"chance level (random circuits, same heads per layer): "
                                            f"{_span(chance)}"),
                      height=max(360, 45 * n + 220), width=max(440, 45 * n + 300), margin=dict(t=100))
    return fig


def _span(chance: pd.DataFrame) -> str:
    """The chance level off the diagonal: one number when every pair has it, else its range."""
    values = [v for i, row in enumerate(chance.to_numpy(dtype=float)) for j, v in enumerate(row) if i != j]
    lo, hi = min(values, default=float("nan")), max(values, default=float("nan"))
    return f"{lo:.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}"


def overlap_heatmap(comparison: Comparison) -> go.Figure:
    return similarity_heatmap(comparison.overlap, comparison.chance_overlap,
                              "Overlap rate of circuits: |row ∩ column| / |row|", "overlap rate")


def jaccard_heatmap(comparison: Comparison) -> go.Figure:
    return similarity_heatmap(comparison.jaccard, comparison.chance_jaccard,
                              "Similarity of circuits between tasks: Jaccard |A ∩ B| / |A ∪ B|", "Jaccard similarity")


def counts_colorscale(n: int, scale: str = "Reds") -> list[list]:
    """A colour scale of n + 1 flat bands, one per count 0..n, for zmin = -0.5 and zmax = n + 0.5: a count is one
    colour and its colour bar one step, not a continuous ramp that suggests values between the counts."""
    colors = sample_colorscale(scale, [k / n for k in range(n + 1)]) if n else sample_colorscale(scale, [0.0])
    return [[edge / (n + 1), c] for k, c in enumerate(colors) for edge in (k, k + 1)]


def head_frequency_heatmap(comparison: Comparison) -> go.Figure:
    """Layers x heads: in how many tasks' circuits each head appears, one flat colour per count."""
    f, n = comparison.frequency, len(comparison.labels)
    step = 1 if n <= 12 else -(-n // 12)  # at most ~12 labelled steps on the colour bar
    fig = go.Figure(go.Heatmap(
        z=f.to_numpy().tolist(), x=list(f.columns), y=list(f.index), zmin=-0.5, zmax=n + 0.5,
        colorscale=counts_colorscale(n),
        colorbar=dict(title=dict(text=f"tasks (of {n})", side="right"), tickvals=list(range(0, n + 1, step))),
        hovertemplate=f"layer %{{y}}, head %{{x}}<br>in %{{z}} of {n} tasks' circuits<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS, **ticks(f.shape[0]))
    fig.update_xaxes(title_text=HEAD_AXIS, **ticks(f.shape[1]))
    fig.update_layout(title=f"Head frequency: in how many of {n} tasks' circuits each head appears",
                      height=max(400, 18 * f.shape[0] + 200), width=max(420, 40 * f.shape[1] + 260))
    return fig


def frequency_distribution_bar(comparison: Comparison) -> go.Figure:
    """Paper, Figure 2b: how many heads were chosen by exactly k tasks."""
    d, n = comparison.distribution, len(comparison.labels)
    fig = go.Figure(go.Bar(
        x=list(d.index), y=list(d.values), text=list(d.values), textposition="outside", marker_color="#d62728",
        name="located circuits", hovertemplate="%{y} heads chosen by exactly %{x} tasks<extra></extra>",
    ))
    c = comparison.chance_distribution
    fig.add_trace(go.Scatter(
        x=list(c.index), y=list(c.values), mode="lines+markers", name="chance (random circuits, same sizes)",
        line=dict(color="black", dash="dot"), hovertemplate="chance: %{y:.1f} heads in exactly %{x} tasks<extra></extra>",
    ))
    fig.update_xaxes(title_text=f"number of tasks (of {n}) whose circuit contains the head", dtick=1)
    fig.update_yaxes(title_text="number of heads")
    fig.update_layout(title="Distribution of head selection frequency across tasks", height=440, width=660,
                      legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))
    return fig


def paired_differences(rows: list[tuple[str, str, dict]], title: str, unit: str, scale: float = 1.0) -> go.Figure:
    """A forest plot of paired comparisons (`circuitlab.report.paired.PairedComparison` as dicts): one marker per
    (group, label) at the mean difference, its bar the bootstrap interval, a line at zero. Overlapping arms stay
    legible as differences from one reference, each with the uncertainty that decides it."""
    fig = go.Figure()
    groups = list(dict.fromkeys(g for g, _, _ in rows))
    for g in groups:
        mine = [(label, c) for group, label, c in rows if group == g]
        fig.add_trace(go.Scatter(
            x=[scale * c["difference"] for _, c in mine], y=[f"{g}: {label}" for label, _ in mine], mode="markers",
            name=g, marker={"size": 9},
            error_x={"type": "data", "symmetric": False,
                     "array": [scale * (c["ci"][1] - c["difference"]) for _, c in mine],
                     "arrayminus": [scale * (c["difference"] - c["ci"][0]) for _, c in mine]}))
    fig.add_vline(x=0, line={"color": "grey", "dash": "dash"})
    fig.update_layout(title=title, xaxis_title=unit, height=240 + 40 * len(rows), width=1000,
                      yaxis={"autorange": "reversed"}, margin={"l": 260})
    return fig
