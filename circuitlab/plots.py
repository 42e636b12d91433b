"""The paper's figures as plotly figures, built from `Circuit` objects and pandas tables.

Every builder is pure: it reads circuits or tables and returns a `plotly.graph_objects.Figure`, one
panel per circuit where several are given (panels that are compared share one colour scale).
`write_figure` saves a figure as self-contained HTML and as PNG.

Losses are the paper's Eq. 5: the mean negative log-likelihood of the gold continuation's tokens,
averaged over the samples, in nats per token.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.circuit import Circuit
from circuitlab.compare import Comparison, circuit_labels
from circuitlab.errors import CircuitlabError
from circuitlab.io import write_bytes_atomic, write_text_atomic

LOSS = "mean target loss (nats/token)"
LAYER_AXIS = "layer (0 = first)"
HEAD_AXIS = "query head"
# The strategy whose head choice a score table drives: its heads are marked on that table.
TABLE_STRATEGY = {"single": "greedy", "conditioned": "layer-conditioned"}
TABLE_TITLES = {
    "single": "Loss with one head masked",
    "conditioned": "Layer-conditioned: loss with one head masked<br><sup>on top of the circuit heads chosen in "
                   "earlier layers</sup>",
}
CURVE_COLORS = {"layer-conditioned": "#d62728", "greedy": "#2ca02c", "random": "#1f77b4", "redundant": "#9467bd",
                "single": "#ff7f0e", "samples": "#d62728", "all docs": "#7f7f7f"}
CURVE_DASHES = {"greedy": "dash", "random": "dot", "redundant": "dashdot"}  # overlapping curves stay visible
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


# --- layout helpers ---------------------------------------------------------------------------


def panel_title(circuit: Circuit, label: str) -> str:
    """The label, plus the split where it is not the training split (hellaswag, boolq offline)."""
    split = circuit.task.split
    return label if split == "train" else f"{label} ({split} split)"


def _grid(n: int, cols: int | None) -> tuple[int, int]:
    cols = max(1, min(n, cols or min(n, 5)))
    return math.ceil(n / cols), cols


def _check(circuits: list[Circuit]) -> list[Circuit]:
    circuits = [circuits] if isinstance(circuits, Circuit) else list(circuits)
    if not circuits:
        raise CircuitlabError("no circuits to plot")
    return circuits


def _subplots(titles: list[str], cols: int | None, **kw) -> tuple[go.Figure, int, int]:
    rows, cols = _grid(len(titles), cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kw)
    return fig, rows, cols


def _ticks(n: int) -> dict:
    """Integer ticks on an axis of n layers or heads: every one up to 16, else every 5th."""
    return dict(tick0=0, dtick=1 if n <= 16 else 5)


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


# --- masking heatmaps (Figures 1a/1d, 4 and 1b/1e, 5) -----------------------------------------


def score_heatmaps(
    circuits: Circuit | list[Circuit],
    table: str = "single",
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
    mark_heads: bool = True,
) -> go.Figure:
    """Layers x heads heatmaps of a score table (`single` or `conditioned`), one panel per circuit.

    All panels share one colour scale, so colours compare across tasks. Where the circuit's own
    strategy is the one this table drives, its chosen heads are outlined.
    """
    circuits = _check(circuits)
    labels = labels or circuit_labels(circuits)
    missing = [l for c, l in zip(circuits, labels) if table not in c.scores]
    if missing:
        raise CircuitlabError(f"no {table!r} score table in circuit(s) {', '.join(missing)}")
    values = _finite(x for c in circuits for row in c.scores[table] for x in row)
    fig, rows, cols = _subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
                                horizontal_spacing=0.06, vertical_spacing=0.08)
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        z = c.scores[table]
        base = c.baseline_loss
        text = [[_hover_delta(x, base) for x in row] for row in z]
        fig.add_trace(go.Heatmap(
            z=z, x=list(range(c.model.n_heads)), y=list(range(c.model.n_layers)), coloraxis="coloraxis",
            customdata=text, name=label,
            hovertemplate=f"{label}<br>layer %{{y}}, head %{{x}}<br>loss %{{z:.4f}} nats/token"
                          "%{customdata}<extra></extra>",
        ), row=r + 1, col=col + 1)
        if mark_heads and TABLE_STRATEGY.get(table) == c.strategy and c.heads:
            layers, heads = zip(*c.head_list)
            fig.add_trace(go.Scatter(
                x=heads, y=layers, mode="markers", name="chosen head", showlegend=False,
                marker=dict(symbol="square-open", size=9, color="black", line=dict(width=1.5)),
                hovertemplate=f"{label}<br>layer %{{y}}, head %{{x}}: in the circuit<extra></extra>",
            ), row=r + 1, col=col + 1)
        fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS if col == 0 else None, row=r + 1, col=col + 1,
                         **_ticks(c.model.n_layers))
        fig.update_xaxes(title_text=HEAD_AXIS if r == rows - 1 else None, row=r + 1, col=col + 1,
                         **_ticks(c.model.n_heads))
    marked = mark_heads and any(TABLE_STRATEGY.get(table) == c.strategy and c.heads for c in circuits)
    title = title or TABLE_TITLES.get(table, f"score table {table!r}")
    fig.update_layout(
        title=_subtitle(title, "squares: the heads the circuit chose") if marked else title,
        margin=dict(t=110),
        coloraxis=dict(colorscale="Viridis", cmin=min(values, default=0), cmax=max(values, default=1),
                       colorbar=dict(title=dict(text=LOSS, side="right"))),
        height=max(420, 420 * rows), width=max(640, 260 * cols + 160),
    )
    return fig


def _subtitle(title: str, note: str) -> str:
    """Add `note` to the title's subtitle line (its <sup> part), making one if there is none."""
    return title.replace("</sup>", f"; {note}</sup>") if "</sup>" in title else f"{title}<br><sup>{note}</sup>"


def _hover_delta(x, base) -> str:
    if base is None or x is None or not math.isfinite(x):
        return ""
    return f"<br>{x - base:+.4f} vs unmasked ({base:.4f})"


# --- loss curves (Figures 1c/1f, 6 and 7) -----------------------------------------------------


def curve_points(curve: list[float], baseline: float | None) -> tuple[list[int], list[float]]:
    """x = number of masked layers; `curve[k]` has layers 0..k masked, so it sits at x = k + 1.

    The unmasked baseline, when known, is the point at x = 0.
    """
    xs, ys = list(range(1, len(curve) + 1)), list(curve)
    if baseline is not None:
        xs, ys = [0, *xs], [baseline, *ys]
    return xs, ys


def circuit_curves(circuit: Circuit) -> dict[str, list[float]]:
    """The circuit's own selection's curve first, then the other selections' curves."""
    curves = {circuit.strategy: circuit.loss_curve} if circuit.loss_curve else {}
    curves.update({k: v for k, v in circuit.curves.items() if k not in curves})
    return curves


def _color(name: str, seen: dict[str, str]) -> str:
    """A fixed colour per known selection name, the next palette colour for any other."""
    if name not in seen:
        free = [c for c in PALETTE if c not in seen.values() and c not in CURVE_COLORS.values()] or PALETTE
        seen[name] = CURVE_COLORS.get(name) or free[0]
    return seen[name]


def loss_curves(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str = "Loss versus number of masked layers<br><sup>heads of layers 0..k-1 masked, per selection"
                 "</sup>",
) -> go.Figure:
    """Loss with the selected heads of layers 0..k masked, for each selection; dashed: unmasked."""
    circuits = _check(circuits)
    labels = labels or circuit_labels(circuits)
    fig, rows, cols = _subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
                                horizontal_spacing=0.05, vertical_spacing=0.1)
    colors: dict[str, str] = {}
    shown: set[str] = set()
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        _add_curves(fig, c, label, r + 1, col + 1, colors, shown)
        _curve_axes(fig, r, col, rows)
    fig.update_layout(title=title, height=max(420, 330 * rows), width=max(700, 300 * cols + 120),
                      legend=dict(orientation="h", y=-0.12 if rows > 1 else -0.25))
    return fig


def _add_curves(fig, c: Circuit, label: str, row: int, col: int, colors: dict, shown: set) -> None:
    """Every selection's curve of `c` in one panel, then its unmasked loss (each legend entry once)."""
    for name, curve in circuit_curves(c).items():
        xs, ys = curve_points(curve, c.baseline_loss)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=name not in shown,
            line=dict(color=_color(name, colors), width=2, dash=CURVE_DASHES.get(name)), marker=dict(size=4),
            hovertemplate=f"{label}, {name}<br>%{{x}} layers masked<br>loss %{{y:.4f}} nats/token<extra></extra>",
        ), row=row, col=col)
        shown.add(name)
    _baseline(fig, c.baseline_loss, c.model.n_layers, label, row, col, show="unmasked" not in shown)
    shown.add("unmasked")


def _baseline(fig, baseline, n_layers, label, row, col, show, name="unmasked") -> None:
    if baseline is None:
        return
    fig.add_trace(go.Scatter(
        x=[0, n_layers], y=[baseline, baseline], mode="lines", name=name, legendgroup=name, showlegend=show,
        line=dict(color="black", dash="dash", width=1),
        hovertemplate=f"{label}, {name}<br>loss %{{y:.4f}} nats/token<extra></extra>",
    ), row=row, col=col)


def _curve_axes(fig, r, col, rows) -> None:
    fig.update_xaxes(title_text="number of masked layers" if r == rows - 1 else None, row=r + 1, col=col + 1)
    fig.update_yaxes(title_text=LOSS if col == 0 else None, row=r + 1, col=col + 1)


def all_docs_curves(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Figure 7: the same masks' loss curve on the selected samples and on many training documents.

    Reads `circuit.extra["all_docs"]` = {"n_docs", "split", "baseline_loss", "loss_curve"}, written by
    `circuitlab.reproduce`.
    """
    circuits = _check(circuits)
    labels = labels or circuit_labels(circuits)
    missing = [l for c, l in zip(circuits, labels) if "all_docs" not in c.extra]
    if missing:
        raise CircuitlabError(f"no all-documents loss curve in circuit(s) {', '.join(missing)}")
    titles = [f"{panel_title(c, l)}: {len(c.samples)} samples vs {c.extra['all_docs']['n_docs']} docs"
              for c, l in zip(circuits, labels)]
    fig, rows, cols = _subplots(titles, cols, horizontal_spacing=0.05, vertical_spacing=0.1)
    shown: set[str] = set()
    for i, (c, label) in enumerate(zip(circuits, labels)):
        r, col = divmod(i, cols)
        every = c.extra["all_docs"]
        for name, curve, base, dash in [("selected samples", c.loss_curve, c.baseline_loss, "solid"),
                                        ("all docs", every["loss_curve"], every.get("baseline_loss"), "solid")]:
            xs, ys = curve_points(curve, base)
            color = CURVE_COLORS["samples"] if name == "selected samples" else CURVE_COLORS["all docs"]
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=name not in shown,
                line=dict(color=color, width=2, dash=dash), marker=dict(size=4),
                hovertemplate=f"{label}, {name}<br>%{{x}} layers masked<br>loss %{{y:.4f}} nats/token<extra></extra>",
            ), row=r + 1, col=col + 1)
            shown.add(name)
        _curve_axes(fig, r, col, rows)
    strategy = circuits[0].strategy
    fig.update_layout(
        title=title or f"The same {strategy} masks: selected samples vs all docs<br><sup>all docs = the first N "
                       "docs of the split, right or wrong</sup>",
        height=max(420, 330 * rows), width=max(700, 320 * cols + 120),
        legend=dict(orientation="h", y=-0.12 if rows > 1 else -0.25),
    )
    return fig


# --- Figure 1: both tables and the curves of a few tasks -------------------------------------


def overview(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    title: str = "Masking heads: alone, layer-conditioned, and layer by layer",
) -> go.Figure:
    """Figure 1: per task (row), the single-head table, the layer-conditioned table and the curves.

    Both heatmap columns share one colour scale, so the gap between masking one head alone and
    masking it on top of earlier layers' circuit heads shows as colour.
    """
    circuits = _check(circuits)
    labels = labels or circuit_labels(circuits)
    for c, label in zip(circuits, labels):
        if not {"single", "conditioned"} <= set(c.scores):
            raise CircuitlabError(f"circuit {label} lacks the single and conditioned score tables")
    titles = [f"{panel_title(c, l)}<br>{what}" for c, l in zip(circuits, labels)
              for what in ("one head masked", "layer-conditioned", "loss vs masked layers")]
    fig = make_subplots(rows=len(circuits), cols=3, subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=0.12 / max(1, len(circuits) - 1) if len(circuits) > 1 else 0.1,
                        column_widths=[0.25, 0.25, 0.5])
    values = _finite(x for c in circuits for t in ("single", "conditioned") for row in c.scores[t] for x in row)
    colors: dict[str, str] = {}
    shown: set[str] = set()
    for r, (c, label) in enumerate(zip(circuits, labels), 1):
        for col, table in ((1, "single"), (2, "conditioned")):
            fig.add_trace(go.Heatmap(
                z=c.scores[table], x=list(range(c.model.n_heads)), y=list(range(c.model.n_layers)),
                coloraxis="coloraxis", name=f"{label} {table}",
                hovertemplate=f"{label}, {table}<br>layer %{{y}}, head %{{x}}<br>loss %{{z:.4f}} nats/token"
                              "<extra></extra>",
            ), row=r, col=col)
            fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS if col == 1 else None, row=r, col=col,
                             **_ticks(c.model.n_layers))
            fig.update_xaxes(title_text=HEAD_AXIS if r == len(circuits) else None, row=r, col=col,
                             **_ticks(c.model.n_heads))
        _add_curves(fig, c, label, r, 3, colors, shown)
        fig.update_xaxes(title_text="number of masked layers" if r == len(circuits) else None, row=r, col=3)
        fig.update_yaxes(title_text=LOSS, row=r, col=3)
    left, right = fig.layout.xaxis.domain[0], fig.layout.xaxis2.domain[1]  # under the two heatmap columns
    fig.update_layout(
        title=title, height=max(420, 480 * len(circuits)), width=1300,
        coloraxis=dict(colorscale="Viridis", cmin=min(values, default=0), cmax=max(values, default=1),
                       colorbar=dict(title=dict(text=LOSS, side="top"), orientation="h", thickness=12,
                                     x=(left + right) / 2, xanchor="center", len=right - left, y=-0.06, yanchor="top")),
        legend=dict(orientation="h", x=fig.layout.xaxis3.domain[0], y=-0.06, yanchor="top"),
    )
    return fig


# --- circuits as patterns (Figure 9) ----------------------------------------------------------


def circuit_patterns(
    circuits: Circuit | list[Circuit],
    labels: list[str] | None = None,
    cols: int | None = None,
    title: str = "Located circuits: chosen heads per layer",
) -> go.Figure:
    """Each circuit as a layers x heads pattern (dark = in the circuit), side by side."""
    circuits = _check(circuits)
    labels = labels or circuit_labels(circuits)
    fig, rows, cols = _subplots([panel_title(c, l) for c, l in zip(circuits, labels)], cols,
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
                         **_ticks(c.model.n_layers))
        fig.update_xaxes(title_text=HEAD_AXIS if r == rows - 1 else None, row=r + 1, col=col + 1,
                         **_ticks(c.model.n_heads))
    fig.update_layout(title=title, height=max(420, 420 * rows), width=max(480, 220 * cols + 100))
    return fig


# --- cross-task comparison (Figures 2a/8 and 2b) ----------------------------------------------


def similarity_heatmap(table: pd.DataFrame, title: str, what: str) -> go.Figure:
    """A square task x task table (overlap rate or Jaccard) on a fixed 0..1 colour scale."""
    labels = [str(x) for x in table.index]
    z = table.to_numpy(dtype=float).tolist()
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(x) for x in table.columns], y=labels, zmin=0, zmax=1, colorscale="Blues",
        texttemplate="%{z:.2f}", colorbar=dict(title=dict(text=what, side="right")),
        hovertemplate=f"row %{{y}}, column %{{x}}<br>{what}: %{{z:.3f}}<extra></extra>",
    ))
    n = len(labels)
    fig.update_yaxes(autorange="reversed", title_text="task (row)")
    fig.update_xaxes(title_text="task (column)", tickangle=-45)
    fig.update_layout(title=title, height=max(360, 45 * n + 220), width=max(440, 45 * n + 300))
    return fig


def overlap_heatmap(comparison: Comparison) -> go.Figure:
    return similarity_heatmap(
        comparison.overlap,
        "Overlap rate of circuits: |row ∩ column| / |row|",
        "overlap rate",
    )


def jaccard_heatmap(comparison: Comparison) -> go.Figure:
    return similarity_heatmap(
        comparison.jaccard,
        "Similarity of circuits between tasks: Jaccard |A ∩ B| / |A ∪ B|",
        "Jaccard similarity",
    )


def head_frequency_heatmap(comparison: Comparison) -> go.Figure:
    """Layers x heads: in how many tasks' circuits each head appears."""
    f, n = comparison.frequency, len(comparison.labels)
    fig = go.Figure(go.Heatmap(
        z=f.to_numpy().tolist(), x=list(f.columns), y=list(f.index), zmin=0, zmax=n, colorscale="Reds",
        colorbar=dict(title=dict(text=f"tasks (of {n})", side="right")),
        hovertemplate=f"layer %{{y}}, head %{{x}}<br>in %{{z}} of {n} tasks' circuits<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title_text=LAYER_AXIS)
    fig.update_xaxes(title_text=HEAD_AXIS, **_ticks(f.shape[1]))
    fig.update_yaxes(**_ticks(f.shape[0]))
    fig.update_layout(title=f"Head frequency: in how many of {n} tasks' circuits each head appears",
                      height=max(400, 18 * f.shape[0] + 200), width=max(420, 40 * f.shape[1] + 260))
    return fig


def frequency_distribution_bar(comparison: Comparison) -> go.Figure:
    """Paper, Figure 2b: how many heads were chosen by exactly k tasks."""
    d, n = comparison.distribution, len(comparison.labels)
    fig = go.Figure(go.Bar(
        x=list(d.index), y=list(d.values), text=list(d.values), textposition="outside", marker_color="#d62728",
        hovertemplate="%{y} heads chosen by exactly %{x} tasks<extra></extra>",
    ))
    fig.update_xaxes(title_text=f"number of tasks (of {n}) whose circuit contains the head", dtick=1)
    fig.update_yaxes(title_text="number of heads")
    fig.update_layout(title="Distribution of head selection frequency across tasks", height=420, width=620)
    return fig


def comparison_figures(comparison: Comparison) -> dict[str, go.Figure]:
    return {
        "overlap_rate": overlap_heatmap(comparison),
        "jaccard_similarity": jaccard_heatmap(comparison),
        "head_frequency": head_frequency_heatmap(comparison),
        "frequency_distribution": frequency_distribution_bar(comparison),
    }


def circuit_figures(circuits: Circuit | list[Circuit], labels: list[str] | None = None) -> dict[str, go.Figure]:
    """Every figure the circuits have the data for, keyed by file stem."""
    circuits = _check(circuits)
    labels = labels or circuit_labels(circuits)
    figs = {}
    for table, stem in [("single", "single_head_losses"), ("conditioned", "layer_conditioned_losses")]:
        if all(table in c.scores for c in circuits):
            figs[stem] = score_heatmaps(circuits, table, labels)
    if all(c.loss_curve or c.curves for c in circuits):
        figs["loss_curves"] = loss_curves(circuits, labels)
    if all("all_docs" in c.extra for c in circuits):
        figs["all_docs_curves"] = all_docs_curves(circuits, labels)
    figs["circuit_patterns"] = circuit_patterns(circuits, labels)
    return figs


# --- writing ----------------------------------------------------------------------------------


def png_available() -> bool:
    """Whether kaleido can find a Chromium to render PNGs."""
    from choreographer.browsers.chromium import Chromium

    return Chromium.find_browser(skip_local=False) is not None


def write_figure(fig: go.Figure, out_dir: str | Path, stem: str, png: bool = True, scale: float = 2,
                 cdn: bool = False) -> list[Path]:
    """Write `stem.html` (self-contained, plotly.js inlined; with `cdn`, a small file that loads plotly.js from
    its CDN) and `stem.png`; returns the paths written.

    Without Chromium (kaleido's renderer) the PNG is skipped with a warning, never half-written.
    """
    return write_figures({stem: fig}, out_dir, png=png, scale=scale, cdn=cdn)


def write_figures(figs: dict[str, go.Figure], out_dir: str | Path, png: bool = True, scale: float = 2,
                  cdn: bool = False) -> list[Path]:
    """`write_figure` for several figures, rendering all PNGs with one browser start."""
    out_dir = Path(out_dir)
    written = []
    for stem, fig in figs.items():
        written.append(write_text_atomic(out_dir / f"{stem}.html",
                                         fig.to_html(include_plotlyjs="cdn" if cdn else True, full_html=True)))
    if png and figs:
        if not png_available():
            warnings.warn("Chromium not found: PNG export skipped (install it: apt-get install chromium)")
            return written
        import kaleido
        import plotly.io as pio

        kaleido.start_sync_server(silence_warnings=True)  # one browser for all the figures
        try:
            with warnings.catch_warnings():
                # plotly always passes kaleido options, which a running server ignores: harmless
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                for stem, fig in figs.items():
                    data = pio.to_image(fig, format="png", scale=scale)
                    written.append(write_bytes_atomic(out_dir / f"{stem}.png", data))
        finally:
            kaleido.stop_sync_server(silence_warnings=True)
    return written
