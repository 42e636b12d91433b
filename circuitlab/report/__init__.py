"""Showing circuits and runs: the paper's figures (plotly), cross-task comparison (pandas), edge circuit
pictures, the Table-1-style table of fine-tuning runs, paired statistics of runs, and the README of a
reproduction.

`style` (the shared look), `heatmaps`, `curves`, `overview` (figure builders: pure, circuits in,
figure out), `comparison` and `comparison_figures` (how circuits relate), `edge_graph` (edge circuits
drawn), `figures` (the one registry of figure files), `write` (HTML + PNG), `table`, `paired` and
`stats` (`circuitlab stats`), `readme`. Names load on first use, so the command line can read
`StatsConfig` without plotly or torch.
"""

from circuitlab.core.lazy import exports

__getattr__, _names = exports(__name__, {
    "Comparison": "comparison", "compare": "comparison",
    "all_docs_curves": "curves", "compared_curves": "curves", "curve_points": "curves",
    "loss_curves": "curves", "strategy_curve": "curves",
    "FIGURES": "figures", "figures_for": "figures", "write_report_figures": "figures",
    "circuit_patterns": "heatmaps", "score_heatmaps": "heatmaps",
    "png_available": "write", "write_figures": "write",
})


def __dir__() -> list[str]:
    return sorted(_names())
