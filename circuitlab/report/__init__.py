"""Showing circuits: the paper's figures (plotly), cross-task comparison (pandas), the Table-1-style
table of fine-tuning runs, and the README of a reproduction.

`style` (the shared look), `heatmaps`, `curves`, `overview` (figure builders: pure, circuits in,
figure out), `comparison` and `comparison_figures` (how circuits relate), `figures` (the one
registry of figure files), `write` (HTML + PNG), `table`, `readme`.
"""

from circuitlab.report.comparison import Comparison, compare
from circuitlab.report.curves import all_docs_curves, compared_curves, curve_points, loss_curves, strategy_curve
from circuitlab.report.figures import FIGURES, figures_for, write_report_figures
from circuitlab.report.heatmaps import circuit_patterns, score_heatmaps
from circuitlab.report.overview import overview
from circuitlab.report.write import png_available, write_figures

__all__ = [
    "FIGURES", "Comparison", "all_docs_curves", "circuit_patterns", "compare", "compared_curves", "curve_points",
    "figures_for", "loss_curves", "overview", "png_available", "score_heatmaps", "strategy_curve",
    "write_figures", "write_report_figures",
]
