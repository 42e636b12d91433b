"""Figures of a circuit over fine-tuning (`circuitlab track`): similarity to the start and to the previous
checkpoint, change per layer, and the first and last circuits drawn as graphs
(`circuitlab.report.edge_graph`: edges added and removed between them dashed)."""

from __future__ import annotations

import plotly.graph_objects as go

from circuitlab.edges.circuit import EdgeCircuit
from circuitlab.report.edge_graph import edge_change_figure
from circuitlab.studies.changes import Track
from circuitlab.report.style import LAYER_AXIS, PALETTE, ticks


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


def track_figures(t: Track, circuits: list[EdgeCircuit]) -> dict[str, go.Figure]:
    """stem -> figure, as `circuitlab.report.write.write_figures` writes them."""
    figs = {"track_similarity": similarity_figure(t), "track_layer_change": layer_change_figure(t)}
    figs["track_circuits"] = edge_change_figure(circuits[0], circuits[-1],
                                                (f"step {t.steps[0].step}", f"step {t.steps[-1].step}"))
    return figs
