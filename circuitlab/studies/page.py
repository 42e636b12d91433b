"""A study's page: the registration and its deviations, the design, the learning rate, each arm's head sets, the
registered comparisons with their decisions, the sensitivity analysis, and the figure; all from the runs on disk.

Nothing here computes a statistic (`circuitlab.studies.analysis` does); this module words them. Every sentence that
states a result is made from its interval, so it can say no more than the interval does.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.studies.agreement import table as agreement_table
from circuitlab.studies.analysis import Result
from circuitlab.studies.spec import Study

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def interval(ci) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def sentence(r: Result, study: Study) -> str:
    """What the data say about A - B, no stronger than the interval."""
    a = study.analysis
    lead = f"{r.task}: {r.a} - {r.b} = {pts(r.difference)} points, {100 * (1 - a.alpha):.0f} % CI {interval(r.ci)}"
    if r.decision.startswith("not testable"):
        return f"{r.task}: {r.a} - {r.b} = {pts(r.difference)} points: {r.decision}."
    if r.decision == "advantage":
        return f"{lead}: {r.a}'s head sets trained better, by between {100 * r.ci[0]:.2f} and {100 * r.ci[1]:.2f} points."
    if r.decision == "disadvantage":
        return f"{lead}: {r.a}'s head sets trained worse, by between {-100 * r.ci[1]:.2f} and {-100 * r.ci[0]:.2f} points."
    if r.decision == "no practically relevant advantage":
        return (f"{lead}: the {100 * (1 - 2 * a.alpha):.0f} % interval {interval(r.ci_equivalence)} lies within "
                f"+-{a.sesoi:g} points, so any difference is smaller than the smallest effect of interest.")
    return (f"{lead}: consistent with no difference and with a difference of {a.sesoi:g} point(s) or more; the data "
            f"do not decide.")


def arm_table(sets: pd.DataFrame, study: Study, base: dict) -> list[str]:
    lines = ["| task | arm | replicates | runs | mean ± SD over replicates (%) | each replicate (%) |",
             "|---|---|---|---|---|---|"]
    tasks, arms = list(study.tasks), [a.name for a in study.arms]
    groups = sorted(sets.groupby(["task", "arm"]), key=lambda kv: (tasks.index(kv[0][0]), arms.index(kv[0][1])))
    for (task, arm), g in groups:
        sd = f"{100 * g.acc.std(ddof=1):.2f}" if len(g) > 1 else "–"
        each = ", ".join(f"{100 * x:.2f}" for x in g.sort_values("head_set").acc)
        lines.append(f"| {task} | {arm} | {len(g)} | {int(g.runs.sum())} | {100 * g.acc.mean():.2f} ± {sd} | {each} |")
    for task, (acc, split) in sorted(base.items()):
        lines.append(f"| {task} | base model (untrained) | – | 1 | {100 * acc:.2f} | {split} |")
    return lines


def comparison_table(results: list[Result], study: Study) -> list[str]:
    a = study.analysis
    lines = [f"| task | A − B | replicates A : B | difference (points), {100 * (1 - a.alpha):.0f} % CI | "
             f"{100 * (1 - 2 * a.alpha):.0f} % CI | test | p | p, {a.correction} | detectable | "
             f"A's percentile among B | decision |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        adj = "–" if r.p_adjusted is None else f"{r.p_adjusted:.4f}"
        det = "–" if r.detectable is None else f"{100 * r.detectable:.2f}"
        pct = ", ".join(f"{p:.0f}" for p in r.percentiles)
        fam = "" if r.in_family else " (secondary, not in the family)"
        lines.append(f"| {r.task} | {r.a} − {r.b}{fam} | {r.n_a} : {r.n_b} | {pts(r.difference)} {interval(r.ci)} | "
                     f"{interval(r.ci_equivalence)} | {r.test} | {r.p:.4f} | {adj} | {det} | {pct} | {r.decision} |")
    return lines


def mixed_table(results: list[Result]) -> list[str]:
    lines = ["| task | A − B | effect of A (points), CI | p | seed variance (points²) |", "|---|---|---|---|---|"]
    for r in results:
        m = r.mixed
        if not m:
            continue
        if not m["fitted"]:
            lines.append(f"| {r.task} | {r.a} − {r.b} | not fitted: {m['why']} | | |")
            continue
        conv = "" if m["converged"] else " (did not converge)"
        lines.append(f"| {r.task} | {r.a} − {r.b} | {pts(m['effect'])} {interval(m['ci'])}{conv} | {m['p']:.4f} | "
                     f"{1e4 * m['seed_variance']:.3f} |")
    return lines


def figure(sets: pd.DataFrame, results: list[Result], study: Study) -> go.Figure:
    """Each head set's accuracy as a dot, one row per arm, one panel per task; the compared arms' head sets carry
    their percentile among the other arm's."""
    tasks = [t for t in study.tasks if t in set(sets.task)]
    fig = make_subplots(rows=len(tasks), cols=1, subplot_titles=tasks, vertical_spacing=0.25 / max(1, len(tasks)))
    arms = [a.name for a in study.arms if a.name in set(sets.arm)]
    colors = {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}
    for row, task in enumerate(tasks, 1):
        pct = {r.a: r.percentiles for r in results if r.task == task and r.in_family}
        for arm in arms:
            g = sets[(sets.task == task) & (sets.arm == arm)].sort_values("head_set")
            if g.empty:
                continue
            text = [f"head set {h}" + (f": percentile {pct[arm][i]:.0f}" if arm in pct else "")
                    for i, h in enumerate(g.head_set)]
            fig.add_trace(go.Scatter(x=100 * g.acc, y=[arm] * len(g), mode="markers", text=text, showlegend=False,
                                     marker={"size": 10, "opacity": 0.7, "color": colors[arm]}), row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
        fig.update_xaxes(title_text="accuracy or exact match (%)", row=row, col=1)
    fig.update_layout(title=f"{study.name}: each replicate's score (a head set at the mean over its seeds, or a run)",
                      height=120 + (60 + 34 * len(arms)) * len(tasks), width=1000, margin={"l": 180})
    return fig


def page(study: Study, runs: pd.DataFrame, sets: pd.DataFrame, results: list[Result], skipped: list[str], lr: dict,
         base: dict,
         deviations: list[str], registration: dict | None, command: str, left_out: list[str],
         figure_link: str | None, admission: dict | None = None, progress: dict | None = None,
         agreements: list | None = None) -> str:
    a = study.analysis
    where = f"`{study.keep}/`" if study.keep else f"`{study.runs}/`"
    out = [f"# {study.title or study.name}", "", f"Made by `{command}` from the results under {where}; every "
           "number below is recomputed from them by that command.", ""]
    if study.question:
        out += [f"**Question.** {study.question.strip()}", ""]
    out += ["## Registration", ""]
    if registration is None:
        out += ["Not registered: every result below is exploratory.", ""]
    else:
        out += [f"Registered on {registration['date']} (spec digest `{registration['spec_digest']}`, "
                f"{registration['analysis_code']})."]
        if study.retrospective:
            out += ["", f"**Registered after its runs**: {study.retrospective.strip()} Its tests are therefore "
                        "exploratory, whatever their p-values."]
        out += [""]
    out += ["Deviations from the registration: " + ("none." if not deviations else ""), ""]
    out += [f"- {d}" for d in deviations] + ([""] if deviations else [])
    out += ["## The registered analysis", "",
            "- Unit of replication: the head set (a circuit, a random draw), or the run for an arm without heads; a "
            "head set trained at several seeds counts once, at its mean.",
            "- Estimand: mean over A's replicates − mean over B's, in points of the task's metric.",
            f"- Test: {a.test} (two-sided, α = {a.alpha:g}); correction over the family: {a.correction}.",
            f"- Decision: *advantage* if the corrected p < {a.alpha:g} and the {100 * (1 - a.alpha):.0f} % CI's lower "
            f"end > 0; *no practically relevant advantage* if the {100 * (1 - 2 * a.alpha):.0f} % CI lies within "
            f"±{a.sesoi:g} point(s); otherwise *unresolved*.",
            f"- Detectable: the difference found with power {a.power:g}, from the replicates' own variance.", ""]
    if lr:
        out += ["## Learning rate", "", "| task | chosen | held-out score per rate (%) |", "|---|---|---|"]
        for task, (rate, table) in lr.items():
            out.append(f"| {task} | {rate:g} | " + ", ".join(f"{r:g}: {100 * s:.2f}" for r, s in table.items()) + " |")
        out += [""]
    if admission:
        out += ["## Admission", "", "| task | rule | pilot (tuning runs at the chosen rate, held-out rows) | base model | "
                "admitted |", "|---|---|---|---|---|"]
        for task, decided in admission.items():
            rule = f"pilot ≥ base + {study.admit[task]:g} points"
            out.append(f"| {task} | {rule} | – | – | not yet decided |" if decided is None else
                       f"| {task} | {rule} | {100 * decided[1]:.2f} | {100 * decided[2]:.2f} | "
                       f"{'yes' if decided[0] else 'no: its arms are not run'} |")
        out += [""]
    out += ["## Each arm's replicates", "", "A replicate is a head set (a located circuit, a random draw) or, for an arm "
            "without heads, a run; one trained at several seeds is shown at the mean over its seeds.", "",
            *arm_table(sets, study, base), ""]
    if left_out:
        out += ["Runs on disk that are not part of the study (left out): " + ", ".join(left_out), ""]
    out += ["## Comparisons", ""]
    unfinished = {t: dn for t, dn in (progress or {}).items() if dn[0] < dn[1]}
    if unfinished:
        out += ["**Provisional: not every declared run is done** (" + "; ".join(
            f"{t}: {d} of {n} arm runs" for t, (d, n) in unfinished.items()) + "). The family's correction and every "
            "decision below can change when they are done; if the study stops here, it answers less than it "
            "declared.", ""]
    out += [*comparison_table(results, study), ""] if results else []
    out += [f"- {sentence(r, study)}" for r in results] + [""]
    out += [f"- {s}." for s in skipped] + ([""] if skipped else [])
    notes = sorted({n for r in results for n in r.notes})
    out += [f"- Note: {n}." for n in notes] + ([""] if notes else [])
    if a.mixed_model:
        out += ["## Sensitivity: mixed model acc ~ arm + (1 | seed), over runs", "", *mixed_table(results), ""]
        if any(r.n_a == 1 for r in results):
            out += ["Where A is one head set, this model compares runs, not head sets: it asks whether that head set "
                    "trains differently from B's, not whether the locating procedure's head sets do.", ""]
    if agreements:
        out += ["## How alike the located circuits are (descriptive, outside the registered analysis)", "",
                "Each circuit was located on its own sample set; two random sets with as many heads per layer would "
                "share the number under *by chance* on average.", "", *agreement_table(agreements), ""]
    if figure_link:
        out += ["## Figure", "", f"![each replicate's score]({figure_link})", ""]
    return "\n".join(out)
