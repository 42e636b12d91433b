"""The README of a `circuitlab reproduce` run: what was run, a summary table read from the circuits,
and what each figure shows, every number computed from the circuits it describes."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from circuitlab.circuits.circuit import Circuit
from circuitlab.core.io import write_text_atomic
from circuitlab.report.comparison import compare
from circuitlab.report.curves import strategy_curve
from circuitlab.report.figures import FIGURES, figure1_circuits, file_stem

NAN = float("nan")
# relative: where layer-conditioned and greedy mask the same heads, figures/smollm2-135m's 18 such points differ
# by at most 9.7e-7 of the loss (two fp32 forwards of one mask, batched differently)
SAME_LOSS = 1e-5
PLOTLYJS_NOTE = {"directory": "they read plotly.js from `plotly.min.js` beside them, so they work offline",
                 "inline": "self-contained: plotly.js is inlined",
                 "cdn": "they load plotly.js from its CDN, so they need a network connection"}


def summary_table(circuits: list[Circuit]):
    """One row per task: the numbers the README quotes, all read from the circuits."""
    import pandas as pd

    rows = []
    for c in circuits:
        single = [x for row in c.scores.get("single", []) for x in row if x == x]
        greedy, rand = strategy_curve(c, "greedy") or [], strategy_curve(c, "random") or []
        every = c.all_docs
        rows.append({
            "task": c.task.name, "split": c.task.split, "docs scored": c.task.n_docs_scored,
            "samples": len(c.samples), "unmasked": c.baseline_loss,
            "max single-head": max(single, default=float("nan")),
            "layer-conditioned": c.loss_curve[-1] if c.loss_curve else float("nan"),
            "greedy": greedy[-1] if greedy else NAN,
            "random (mean)": rand[-1] if rand else NAN,
            "above greedy": _points_above(c.loss_curve, greedy),
            "above random": _points_above(c.loss_curve, rand),
            "all docs unmasked": every.baseline_loss if every else NAN,
            "all docs masked": every.loss_curve[-1] if every else NAN,
            "curve correlation": _correlation(c.loss_curve, every.loss_curve) if every else NAN,
            "minutes": (c.timings.get("task_s") or NAN) / 60,
        })
    return pd.DataFrame(rows).set_index("task")


def _points_above(curve: list[float], other: list[float]) -> str:
    """On how many of the curve's points (k masked layers, k >= 1) `curve` is above `other`. Where both mask the
    same heads (layer 0 of layer-conditioned and greedy: one single-head table) their losses differ only by float
    rounding, and which one a rounding puts on top is no finding: a point within `SAME_LOSS` counts as not above."""
    if not other or len(other) != len(curve):
        return "n/a"
    above = sum(a > b and not math.isclose(a, b, rel_tol=SAME_LOSS) for a, b in zip(curve, other))
    return f"{above}/{len(curve)}"


def _correlation(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or len(a) < 2:
        return float("nan")
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:
        return float("nan")


def _markdown(df, digits: int = 3) -> str:
    cols = [df.index.name or "", *map(str, df.columns)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [str(idx)] + [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(by_task: dict[str, Circuit], out_dir: Path, config, command: str | None, plotlyjs: str = "directory",
                 all_tasks: tuple[str, ...] = (), split_rows: dict[str, int] | None = None,
                 notes: tuple[str, ...] = ()) -> Path:
    """`out_dir/README.md` for the circuits of a reproduce run (`config`: its ReproduceConfig;
    `split_rows`: how many rows each task's locating split has, where known)."""
    circuits = list(by_task.values())
    table = summary_table(circuits)
    if split_rows:
        table.insert(1, "rows in split", [split_rows.get(t, "n/a") for t in table.index])
    c0 = circuits[0]
    L, H, n = c0.model.n_layers, c0.model.n_heads, c0.n_per_layer
    command = command or "circuitlab reproduce ..."
    tasks = ", ".join(f"{t} ({c.task.split})" for t, c in by_task.items())
    not_run = [t for t in all_tasks if t not in by_task]
    beats_greedy = int((table["layer-conditioned"] > table["greedy"]).sum())
    beats_random = int((table["layer-conditioned"] > table["random (mean)"]).sum())
    rise_single = (table["max single-head"] - table["unmasked"])
    rise_cond = (table["layer-conditioned"] - table["unmasked"])
    val = [t for t, c in by_task.items() if c.task.split != "train"]
    higher = int((table["all docs unmasked"] > table["unmasked"]).sum())
    lines = [
        f"# Figures of the HeadMap paper on {c0.model.name}",
        "",
        f"Made by `circuitlab reproduce` on {c0.model.name} ({L} layers x {H} query heads, weights "
        f"`{c0.model.fingerprint}`), with {n} head(s) per layer, {config.samples} samples per task "
        f"(the correctly predicted docs with the lowest target loss among the first "
        f"{config.max_docs or 'all'} docs of the split), random selections with seeds "
        f"{', '.join(map(str, config.random_seeds))}, and Figure 7's curve on the first {config.all_docs} docs "
        "of the split. Every number and figure here comes from this command (rerun it to resume or "
        "to add tasks: finished tasks are skipped):",
        "",
        "```",
        command,
        "```",
        "",
        f"Tasks run: {tasks}.",
    ]
    if not_run:
        lines.append(f"Not run yet: {', '.join(not_run)} (add them with `--tasks`; the command resumes).")
    lines += [f"{note}" for note in notes]
    if val:
        lines.append(f"{', '.join(val)}: no training split offline, so the samples come from the validation "
                     "split (the figures say so in their panel titles).")
    lines += [
        "",
        "Loss = the paper's Eq. 5: mean negative log-likelihood of the gold continuation's tokens "
        "(nats/token), averaged over the samples. \"k masked layers\" = the selection's heads of layers "
        "0..k-1 have their `hook_z` output zeroed at every position.",
        "",
        "## Summary (losses in nats/token)",
        "",
        _markdown(table),
        "",
        "Columns: `rows in split` = rows of the local split the samples were selected from (a split "
        "that is only partly available offline has fewer than the official one); `docs scored` = the first "
        "N of them scored to select the samples; `unmasked` = loss of the samples with no head masked; `max single-head` = the "
        "largest entry of the single-head table; `layer-conditioned`, `greedy`, `random (mean)` = loss "
        f"with the selection's heads masked in all {L} layers (random: mean over seeds); `above greedy`, "
        "`above random` = at how many of the curve's points (1..L masked layers) the layer-conditioned "
        f"loss is the higher (by more than float rounding, a relative {SAME_LOSS:g}); "
        "`all docs` = "
        f"Figure 7's documents; `curve correlation` = Pearson correlation of the samples' and the "
        "all-docs curves; `minutes` = wall time of the task on this machine.",
        "",
        "## The figures",
        "",
    ]
    fig1 = figure1_circuits(circuits)
    if fig1:
        lines += [
            f"### Figure 1: `{file_stem(FIGURES[0], circuits)}` ({', '.join(c.task.name for c in fig1)})",
            "Per task: the single-head table (a/d), the layer-conditioned table (b/e) and the loss curves "
            "(c/f). Both tables share one colour scale.",
            "",
        ]
    lines += [
        "### Figure 4: `fig4_single_head_losses`",
        "Loss of the samples with one head masked alone, per layer and head; the colour is the change from the "
        "unmasked loss, every task on one scale. "
        f"Largest rise over the unmasked loss: {_range(rise_single)} nats/token across tasks "
        "(the paper's LLaMA2-7B: +3.02 on SIQA, +2.58 on HellaSwag).",
        "",
        "### Figure 5: `fig5_layer_conditioned_losses`",
        "Loss with one head of layer l masked on top of the circuit heads already chosen in layers < l "
        "(Algorithm 1); the colour is the change from the loss with those earlier heads masked (each layer's own "
        "baseline, so the contrast within a layer shows), and outlined cells are the chosen heads. Rise of the "
        "loss with the whole circuit "
        f"masked: {_range(rise_cond)} nats/token.",
        "",
        "### Figure 6: `fig6_loss_curves`",
        "Loss versus number of masked layers for the layer-conditioned, greedy (top-n of Figure 4 per "
        "layer) and random selections (mean of the seeds' curves), with the unmasked loss dashed. "
        f"With all {L} layers masked, layer-conditioned is above greedy in {beats_greedy} of "
        f"{len(circuits)} tasks and above random in {beats_random} of {len(circuits)} (paper's Finding 1: "
        "layer-conditioned hurts most).",
        "",
        "### Figure 7: `fig7_samples_vs_all_docs`",
        f"The same layer-conditioned masks on the selected samples and on the first {config.all_docs} docs of "
        "the split (right or wrong). The paper reports the two curves align; here their Pearson "
        f"correlation is {_range(table['curve correlation'])} across tasks (table above). The all-docs "
        f"unmasked loss is above the samples' in {higher} of {len(circuits)} tasks: the samples are the "
        "docs the model finds easiest, the all-docs set includes ones it gets wrong.",
        "",
    ]
    if len(circuits) > 1:
        cmp = compare(circuits)
        off = [cmp.overlap.iloc[i, j] for i in range(len(circuits)) for j in range(len(circuits)) if i != j]
        jac = [cmp.jaccard.iloc[i, j] for i in range(len(circuits)) for j in range(i + 1, len(circuits))]
        _, i, j = max((cmp.jaccard.iloc[a, b], a, b) for a in range(len(circuits)) for b in range(a + 1, len(circuits)))
        dist = cmp.distribution
        lines += [
            "### Figure 8: `fig8_jaccard_similarity` and Figure 2a: `fig2a_overlap_rate`",
            "Task x task similarity of the circuits: Jaccard |A ∩ B| / |A ∪ B| (Figure 8) and overlap rate "
            "|A ∩ B| / |A| (Figure 2a; all circuits have the same size here, so the table is symmetric; the "
            "paper divides by L x H instead, which is this rate times n/H). "
            f"Overlap rate between different tasks: mean {statistics.fmean(off):.3f}, range {min(off):.3f} to "
            f"{max(off):.3f}; two random circuits of the same heads per layer would overlap "
            f"{_offdiag_mean(cmp.chance_overlap):.3f} on average (the chance level in the figures' subtitles). "
            f"Most similar pair: {cmp.labels[i]} and {cmp.labels[j]} (Jaccard {cmp.jaccard.iloc[i, j]:.3f}; mean "
            f"over pairs {statistics.fmean(jac):.3f}, chance {_offdiag_mean(cmp.chance_jaccard):.3f}). "
            "Tables as CSV in `tables/`, the chance levels beside them (`chance_*.csv`).",
            "",
            "### Figure 2b: `fig2b_frequency_distribution` and `head_frequency`",
            f"How many heads are chosen by exactly k of the {len(circuits)} tasks, and per head in how many tasks' "
            f"circuits it appears. {int(dist.iloc[0])} of {L * H} heads are in no circuit (random circuits of the "
            f"same sizes: {cmp.chance_distribution.iloc[0]:.1f}, the dotted line); the most shared head is in "
            f"{int(cmp.frequency.to_numpy().max())} of {len(circuits)}.",
            "",
        ]
    lines += [
        "### Figure 9: `fig9_circuit_patterns`",
        "Each task's located circuit as a layers x heads pattern (dark = chosen), side by side.",
        "",
        "## Files",
        "",
        "Each figure is `NAME.html` (interactive, hover for values; " + PLOTLYJS_NOTE[plotlyjs] + ") "
        + "and `NAME.png`. `circuits/TASK.json` holds each task's circuit with its samples, score tables, "
        "curves and settings (`circuitlab plot circuits/*.json --out DIR` and `circuitlab compare "
        "circuits/*.json --out DIR` redraw from them).",
        "",
    ]
    return write_text_atomic(out_dir / "README.md", "\n".join(lines))


def _range(values) -> str:
    vals = [float(v) for v in values if v == v]
    if not vals:
        return "n/a"
    return f"{min(vals):+.3f} to {max(vals):+.3f}" if len(vals) > 1 else f"{vals[0]:+.3f}"


def _offdiag_mean(table) -> float:
    values = table.to_numpy(dtype=float)
    return statistics.fmean(values[i, j] for i in range(len(values)) for j in range(len(values)) if i != j)
