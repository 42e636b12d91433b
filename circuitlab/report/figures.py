"""The one registry of figures: which exist, their file names, and which circuits can draw them.

`circuitlab plot` writes the circuit figures, `circuitlab compare` the comparison figures and
`circuitlab reproduce` both, all from here, so a figure has the same file name wherever it is made.
The paper's figure number leads the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import plotly.graph_objects as go

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable, read_json_object
from circuitlab.edges.circuit import SCHEMA as EDGES_SCHEMA
from circuitlab.edges.mib import is_mib, load_any
from circuitlab.report import comparison_figures as cf
from circuitlab.report.comparison import Comparison, check_one_model, compare
from circuitlab.report.curves import all_docs_curves, loss_curves
from circuitlab.report.edge_graph import edge_graph_figure, faithfulness_figure
from circuitlab.report.heatmaps import circuit_patterns, score_heatmaps
from circuitlab.report.overview import TABLES, overview
from circuitlab.report.write import write_figures

FIGURE1_TASKS = ("siqa", "hellaswag")  # the paper's Figure 1 shows these two tasks


@dataclass(frozen=True)
class FigureSpec:
    stem: str
    kind: str  # "circuits": one panel per circuit; "comparison": how two or more circuits relate
    draws: Callable[[list[Circuit]], bool]  # whether these circuits have the data
    build: Callable[[list[Circuit]], go.Figure]


def figure1_circuits(circuits: list[Circuit]) -> list[Circuit]:
    return [c for name in FIGURE1_TASKS for c in circuits if c.task.name == name and set(TABLES) <= set(c.scores)]


def _every(test: Callable[[Circuit], bool]) -> Callable[[list[Circuit]], bool]:
    return lambda circuits: all(test(c) for c in circuits)


def _comparable(circuits: list[Circuit]) -> bool:
    return len(circuits) > 1


FIGURES = (
    FigureSpec("fig1", "circuits", lambda cs: bool(figure1_circuits(cs)), lambda cs: overview(figure1_circuits(cs))),
    FigureSpec("fig2a_overlap_rate", "comparison", _comparable, lambda cs: cf.overlap_heatmap(compare(cs))),
    FigureSpec("fig2b_frequency_distribution", "comparison", _comparable,
           lambda cs: cf.frequency_distribution_bar(compare(cs))),
    FigureSpec("fig4_single_head_losses", "circuits", _every(lambda c: "single" in c.scores),
           lambda cs: score_heatmaps(cs, "single")),
    FigureSpec("fig5_layer_conditioned_losses", "circuits", _every(lambda c: "conditioned" in c.scores),
           lambda cs: score_heatmaps(cs, "conditioned")),
    FigureSpec("fig6_loss_curves", "circuits", _every(lambda c: bool(c.loss_curve or c.selections)), loss_curves),
    FigureSpec("fig7_samples_vs_all_docs", "circuits", _every(lambda c: c.all_docs is not None), all_docs_curves),
    FigureSpec("fig8_jaccard_similarity", "comparison", _comparable, lambda cs: cf.jaccard_heatmap(compare(cs))),
    FigureSpec("fig9_circuit_patterns", "circuits", lambda cs: True, circuit_patterns),
    FigureSpec("head_frequency", "comparison", _comparable, lambda cs: cf.head_frequency_heatmap(compare(cs))),
)
KINDS = ("circuits", "comparison")


def file_stem(figure: FigureSpec, circuits: list[Circuit]) -> str:
    if figure.stem == "fig1":  # named after the tasks it shows
        return "fig1_" + "_".join(c.task.name for c in figure1_circuits(circuits))
    return figure.stem


def figures_for(circuits: list[Circuit], kinds: tuple[str, ...] = KINDS) -> dict[str, go.Figure]:
    """Every registered figure of these kinds that the circuits have the data for, by file stem."""
    return {file_stem(f, circuits): f.build(circuits) for f in FIGURES if f.kind in kinds and f.draws(circuits)}


def write_report_figures(circuits: list[Circuit], out_dir: str | Path, kinds: tuple[str, ...] = KINDS,
                         png: bool = True, plotlyjs: str = "directory") -> list[Path]:
    """The figures, plus the comparison tables as CSV under `tables/` when comparison figures are made."""
    written = write_figures(figures_for(circuits, kinds), out_dir, png=png, plotlyjs=plotlyjs)
    if "comparison" in kinds and _comparable(circuits):
        written += compare(circuits).save_csv(Path(out_dir) / "tables")
    return written


def circuit_files_figures(paths: list[str | Path], out_dir: str | Path, kinds: tuple[str, ...] = KINDS,
                          png: bool = True, plotlyjs: str = "directory") -> tuple[list[Circuit], list[Path]]:
    """`circuitlab plot` and `compare`: the circuit files read and checked to be of one model, the output
    checked, then `write_report_figures`; an edge circuit (circuitlab's or a MIB graph JSON circuitlab wrote)
    among them is drawn as a graph, `edges_<file stem>` (`circuitlab plot` only). Returns (the head
    circuits, the files written)."""
    docs = {p: read_json_object(p, "circuit file") for p in paths}
    edge_paths = [p for p, d in docs.items() if d.get("schema") == EDGES_SCHEMA or is_mib(d)]
    if edge_paths and "comparison" in kinds:
        raise CircuitlabError(f"compare reads head circuits; {edge_paths[0]} is an edge circuit (plot draws it)")
    circuits = [Circuit.load(p) for p in paths if p not in edge_paths]
    edges = {f"edges_{Path(p).stem}": load_any(p) for p in edge_paths}
    if "comparison" in kinds and len(circuits) < 2:
        raise CircuitlabError("compare needs at least two circuit files")
    if circuits:
        check_one_model(circuits)
    check_writable(out_dir, "dir")
    written = write_report_figures(circuits, out_dir, kinds, png=png, plotlyjs=plotlyjs) if circuits else []
    if edges:
        figures = {stem: edge_graph_figure(c) for stem, c in edges.items()}
        figures |= {f"{stem}_faithfulness": faithfulness_figure(c) for stem, c in edges.items() if c.curve}
        written += write_figures(figures, out_dir, png=png, plotlyjs=plotlyjs)
    return circuits, list(dict.fromkeys(written))


def compare_files(paths: list[str | Path], out_dir: str | Path, png: bool = True,
                  plotlyjs: str = "directory") -> tuple[Comparison, list[Path]]:
    """`circuitlab compare`: the circuit files' comparison figures written, and their comparison (overlap rate,
    Jaccard, head frequency) returned with the files written."""
    circuits, written = circuit_files_figures(paths, out_dir, ("comparison",), png=png, plotlyjs=plotlyjs)
    return compare(circuits), written
