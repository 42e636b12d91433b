"""The look shared by every figure: axis names, colours, panel grids and titles.

Losses are the paper's Eq. 5: the mean negative log-likelihood of the gold continuation's tokens,
averaged over the samples, in nats per token.
"""

from __future__ import annotations

import math
import textwrap

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.errors import CircuitlabError

LOSS = "mean target loss (nats/token)"
LAYER_AXIS = "layer (0 = first)"
HEAD_AXIS = "query head"
CURVE_COLORS = {"layer-conditioned": "#d62728", "greedy": "#2ca02c", "random": "#1f77b4", "redundant": "#9467bd",
                "samples": "#d62728", "all docs": "#7f7f7f"}
CURVE_DASHES = {"greedy": "dash", "random": "dot", "redundant": "dashdot"}  # overlapping curves stay visible
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def circuit_labels(circuits: list[Circuit]) -> list[str]:
    """Task names; `task/strategy` where a task repeats, then `#i` where even that repeats."""
    labels = [c.task.name for c in circuits]
    if len(set(labels)) < len(labels):
        labels = [f"{c.task.name}/{c.strategy}" for c in circuits]
    if len(set(labels)) < len(labels):
        labels = [f"{label}#{i}" for i, label in enumerate(labels)]
    return labels


def as_list(circuits: Circuit | list[Circuit]) -> list[Circuit]:
    circuits = [circuits] if isinstance(circuits, Circuit) else list(circuits)
    if not circuits:
        raise CircuitlabError("no circuits to plot")
    return circuits


def panel_title(circuit: Circuit, label: str) -> str:
    """The label, plus the split where it is not the training split."""
    split = circuit.task.split
    return label if split == "train" else f"{label} ({split} split)"


def subplots(titles: list[str], cols: int | None, **kw) -> tuple[go.Figure, int, int]:
    """A grid of panels, at most 5 a row unless `cols` says otherwise."""
    cols = max(1, min(len(titles), cols or min(len(titles), 5)))
    rows = math.ceil(len(titles) / cols)
    return make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kw), rows, cols


def ticks(n: int) -> dict:
    """Integer ticks on an axis of n layers or heads: every one up to 16, else every 5th."""
    return dict(tick0=0, dtick=1 if n <= 16 else 5)


def finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def subtitle(title: str, note: str) -> str:
    """Add `note` to the title's subtitle line (its <sup> part), making one if there is none."""
    return title.replace("</sup>", f"; {note}</sup>") if "</sup>" in title else f"{title}<br><sup>{note}</sup>"


SUBTITLE_PX_PER_CHAR = 6.0  # plotly's default title font in <sup>, at scale 1: a little above its mean width


def fit_title(title: str, width: int, left: int = 60) -> tuple[dict, int]:
    """The layout's title for a figure `width` pixels wide: the main line, and the subtitle (the <sup> part) as
    plotly's own subtitle broken into lines that fit (plotly clips a title line at the figure's edge, never wraps
    it; its subtitle keeps its own line height); with the number of subtitle lines, for the top margin."""
    if "<sup>" not in title:
        return {"text": title}, 0
    head, rest = title.split("<sup>", 1)
    note, tail = rest.split("</sup>", 1)
    lines = textwrap.wrap(note, max(30, int((width - left) / SUBTITLE_PX_PER_CHAR)), break_long_words=False,
                          break_on_hyphens=False)
    return {"text": head.removesuffix("<br>") + tail, "subtitle": {"text": "<br>".join(lines)}}, len(lines)


def curve_color(name: str, strategy: str | None, seen: dict[str, str]) -> str:
    """The strategy's colour for the first curve of that strategy, the next free palette colour after."""
    if name not in seen:
        fixed = CURVE_COLORS.get(strategy or name)
        if fixed is None or fixed in seen.values():
            fixed = next((c for c in PALETTE if c not in seen.values() and c not in CURVE_COLORS.values()), PALETTE[0])
        seen[name] = fixed
    return seen[name]
