"""The paper's locating experiments end to end: every task's circuit, then Figures 1-9.

For each task: select the samples (the correctly predicted training docs with the lowest target
loss), run the layer-conditioned, greedy (with the single-head table) and random selections, and
evaluate the layer-conditioned masks on the first `all_docs` documents of the same split too
(Figure 7). The merged result is one circuit JSON per task, written when the task is finished;
a rerun skips tasks whose JSON has the same settings, and a task killed halfway resumes from the
locate checkpoints. Figures and a README are then made from every finished task.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from circuitlab.circuit import Circuit, Sample
from circuitlab.compare import compare
from circuitlab.errors import CircuitlabError
from circuitlab.io import write_text_atomic
from circuitlab.locate import Engine, LocateConfig, Memo, baseline_loss, checkpoint_path, locate, locating_samples
from circuitlab.locate import loss_curve as masked_loss_curve
from circuitlab.masking import HeadMask
from circuitlab.models import LoadedModel
from circuitlab.tasks import TASK_NAMES, get_task, load_docs, resolve_data_dir

PAPER_TASKS = tuple(t for t in TASK_NAMES if t != "capitals")
FIGURE1_TASKS = ("siqa", "hellaswag")


@dataclass
class ReproduceConfig:
    """Everything that decides a task's result; a finished task is reused only if it matches."""

    samples: int = 64
    heads_per_layer: int | None = None  # default: locate's (round(H/4), 8 for 32-head models)
    max_docs: int | None = None  # score only the first N docs of the split when selecting samples
    all_docs: int = 256  # Figure 7: the masks' loss curve on the first N docs of the split
    random_seeds: tuple[int, ...] = (0, 1, 2)
    max_batch_tokens: int = 4096

    def key(self, model: LoadedModel, task: str, split: str) -> dict:
        return {"model": model.name, "fingerprint": model.fingerprint(), "task": task, "split": split,
                **asdict(self), "random_seeds": list(self.random_seeds)}


def parse_tasks(text: str) -> list[str]:
    """`all` (the paper's 13 tasks) or a comma-separated list of task names."""
    names = list(PAPER_TASKS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CircuitlabError("no tasks given")
    for name in names:
        get_task(name)  # unknown names fail here, before any work
    return list(dict.fromkeys(names))


def locating_split(task: str, data_dir=None) -> str:
    """`train` when the task has one; offline, hellaswag and boolq have only `validation`."""
    t = get_task(task)
    path = resolve_data_dir(data_dir) if t.source is None else None
    if path is None:
        return "train"
    folder = path / t.name
    if any((folder / f"train{ext}").is_file() for ext in (".jsonl", ".jsonl.gz")):
        return "train"
    return t.eval_split


def circuit_path(out_dir: str | Path, task: str) -> Path:
    return Path(out_dir) / "circuits" / f"{task}.json"


def finished(path: Path, key: dict) -> Circuit | None:
    """The task's circuit if it exists and was made with the same settings."""
    if not path.exists():
        return None
    try:
        c = Circuit.load(path)
    except CircuitlabError:
        return None
    return c if c.extra.get("reproduce") == key else None


def all_docs_curve(model: LoadedModel, circuit: Circuit, docs: list, max_batch_tokens: int,
                   progress: bool = True) -> dict:
    """The circuit's masks (layers 0..k) on many documents, whether the model gets them right or not."""
    samples = [Sample(d.prompt, d.target, d.index) for d in docs]
    ev = Engine(model, samples, max_batch_tokens)
    layers = list(range(model.n_layers))
    with tqdm(total=2, desc=f"all-docs curve ({len(samples)} docs)", unit="step",
              disable=not progress, leave=False) as bar:
        memo = Memo(on_step=lambda key: bar.update(1))
        return {
            "n_docs": len(samples),
            "split": circuit.task.split,
            "baseline_loss": baseline_loss(ev, layers, memo),
            "loss_curve": masked_loss_curve(ev, HeadMask.of(circuit.heads), layers, memo, "all_docs"),
        }


def reproduce_task(model: LoadedModel, task: str, data_dir, out_dir: str | Path, config: ReproduceConfig,
                   progress: bool = True, log=print) -> Circuit:
    """One task's circuit with every number the figures need; reused when already finished."""
    split = locating_split(task, data_dir)
    key = config.key(model, task, split)
    path = circuit_path(out_dir, task)
    done = finished(path, key)
    if done is not None:
        log(f"{task}: done already ({path}), skipped")
        return done
    if path.exists():
        log(f"{task}: {path} was made with other settings; locating again")
    start = time.perf_counter()
    samples, info = locating_samples(model, task, data_dir, split, config.samples, config.max_docs, progress)
    log(f"{task}: {len(samples)} samples from {info.n_docs_scored} {split} docs")

    def run(strategy: str, seeds=(0,)) -> tuple[Circuit, Path]:
        cp = checkpoint_path(path.with_name(f"{task}.{strategy}.json"))
        cfg = LocateConfig(strategy=strategy, n_per_layer=config.heads_per_layer, seeds=tuple(seeds),
                           max_batch_tokens=config.max_batch_tokens)
        return locate(model, samples, cfg, task=info, checkpoint=cp, progress=progress), cp

    (circuit, cp1), (greedy, cp2), (rand, cp3) = run("layer-conditioned"), run("greedy"), \
        run("random", config.random_seeds)
    random_curves = {s: rand.curves.get(f"seed {s}", rand.loss_curve) for s in config.random_seeds}
    circuit.scores["single"] = greedy.scores["single"]
    circuit.curves = {"greedy": greedy.loss_curve,
                      "random": [statistics.fmean(xs) for xs in zip(*random_curves.values())]}
    docs = load_docs(get_task(task), split, data_dir, limit=config.all_docs)
    circuit.extra.update(
        reproduce=key,
        greedy_heads={str(k): v for k, v in greedy.heads.items()},
        random_seed_curves={str(s): c for s, c in random_curves.items()},
        random_selections=rand.extra.get("selections", {str(config.random_seeds[0]): rand.heads}),
        all_docs=all_docs_curve(model, circuit, docs, config.max_batch_tokens, progress),
    )
    circuit.timings = {"layer_conditioned_s": circuit.timings.get("locate_s"),
                       "greedy_s": greedy.timings.get("locate_s"), "random_s": rand.timings.get("locate_s"),
                       "task_s": round(time.perf_counter() - start, 3)}
    circuit.save(path)
    for cp in (cp1, cp2, cp3):
        cp.unlink(missing_ok=True)
    log(f"{task}: wrote {path} in {circuit.timings['task_s']:.0f}s")
    return Circuit.load(path)  # exactly what a rerun will read


@dataclass
class Reproduction:
    circuits: dict[str, Circuit]
    figures: list[Path] = field(default_factory=list)
    readme: Path | None = None


def reproduce(model: LoadedModel, tasks: list[str], data_dir, out_dir: str | Path, config: ReproduceConfig,
              command: str | None = None, png: bool = True, progress: bool = True, log=print,
              cdn: bool = False) -> Reproduction:
    """Every task's circuit (resumable task by task), then all figures and the README."""
    out_dir = Path(out_dir)
    circuits = {}
    for i, task in enumerate(tasks, 1):
        log(f"[{i}/{len(tasks)}] {task}")
        circuits[task] = reproduce_task(model, task, data_dir, out_dir, config, progress, log)
    result = Reproduction(circuits)
    result.figures = write_all_figures(list(circuits.values()), out_dir, png, cdn)
    result.readme = write_readme(result, out_dir, config, command, cdn)
    return result


def figure1_circuits(circuits: list[Circuit]) -> list[Circuit]:
    return [c for name in FIGURE1_TASKS for c in circuits if c.task.name == name]


def figure1_stem(circuits: list[Circuit]) -> str:
    return "fig1_" + "_".join(c.task.name for c in circuits)


def figures_for(circuits: list[Circuit]) -> dict[str, object]:
    """Every figure, keyed by file stem (the paper's figure number first)."""
    from circuitlab import plots

    figs = {}
    first = figure1_circuits(circuits)
    if first:
        figs[figure1_stem(first)] = plots.overview(first)
    figs["fig4_single_head_losses"] = plots.score_heatmaps(circuits, "single")
    figs["fig5_layer_conditioned_losses"] = plots.score_heatmaps(circuits, "conditioned")
    figs["fig6_loss_curves"] = plots.loss_curves(circuits)
    figs["fig7_samples_vs_all_docs"] = plots.all_docs_curves(circuits)
    figs["fig9_circuit_patterns"] = plots.circuit_patterns(circuits)
    if len(circuits) > 1:
        cmp = compare(circuits)
        figs["fig8_jaccard_similarity"] = plots.jaccard_heatmap(cmp)
        figs["fig2a_overlap_rate"] = plots.overlap_heatmap(cmp)
        figs["fig2b_frequency_distribution"] = plots.frequency_distribution_bar(cmp)
        figs["head_frequency"] = plots.head_frequency_heatmap(cmp)
    return figs


def write_all_figures(circuits: list[Circuit], out_dir: Path, png: bool = True, cdn: bool = False) -> list[Path]:
    from circuitlab.plots import write_figures

    written = write_figures(figures_for(circuits), out_dir, png=png, cdn=cdn)
    if len(circuits) > 1:
        written += compare(circuits).save_csv(out_dir / "tables")
    return written


# --- README -----------------------------------------------------------------------------------


def summary_table(circuits: list[Circuit]):
    """One row per task: the numbers the README quotes, all read from the circuits."""
    import pandas as pd

    rows = []
    for c in circuits:
        single = [x for row in c.scores.get("single", []) for x in row if x == x]
        every = c.extra.get("all_docs", {})
        rows.append({
            "task": c.task.name, "split": c.task.split, "docs scored": c.task.n_docs_scored,
            "samples": len(c.samples), "unmasked": c.baseline_loss,
            "max single-head": max(single, default=float("nan")),
            "layer-conditioned": c.loss_curve[-1] if c.loss_curve else float("nan"),
            "greedy": c.curves.get("greedy", [float("nan")])[-1],
            "random (mean)": c.curves.get("random", [float("nan")])[-1],
            "above greedy": _points_above(c.loss_curve, c.curves.get("greedy", [])),
            "above random": _points_above(c.loss_curve, c.curves.get("random", [])),
            "all docs unmasked": every.get("baseline_loss"),
            "all docs masked": (every.get("loss_curve") or [float("nan")])[-1],
            "curve correlation": _correlation(c.loss_curve, every.get("loss_curve") or []),
            "minutes": (c.timings.get("task_s") or float("nan")) / 60,
        })
    return pd.DataFrame(rows).set_index("task")


def _points_above(curve: list[float], other: list[float]) -> str:
    """On how many of the curve's points (k masked layers, k >= 1) `curve` is above `other`."""
    if not other or len(other) != len(curve):
        return "n/a"
    return f"{sum(a > b for a, b in zip(curve, other))}/{len(curve)}"


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


def write_readme(result: Reproduction, out_dir: Path, config: ReproduceConfig, command: str | None,
                 cdn: bool = False) -> Path:
    circuits = list(result.circuits.values())
    table = summary_table(circuits)
    c0 = circuits[0]
    L, H, n = c0.model.n_layers, c0.model.n_heads, c0.n_per_layer
    command = command or "circuitlab reproduce ..."
    tasks = ", ".join(f"{t} ({c.task.split})" for t, c in result.circuits.items())
    not_run = [t for t in PAPER_TASKS if t not in result.circuits]
    beats_greedy = int((table["layer-conditioned"] > table["greedy"]).sum())
    beats_random = int((table["layer-conditioned"] > table["random (mean)"]).sum())
    rise_single = (table["max single-head"] - table["unmasked"])
    rise_cond = (table["layer-conditioned"] - table["unmasked"])
    val = [t for t, c in result.circuits.items() if c.task.split != "train"]
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
        "Columns: `unmasked` = loss of the samples with no head masked; `max single-head` = the "
        "largest entry of the single-head table; `layer-conditioned`, `greedy`, `random (mean)` = loss "
        f"with the selection's heads masked in all {L} layers (random: mean over seeds); `above greedy`, "
        "`above random` = at how many of the curve's points (1..L masked layers) the layer-conditioned "
        "loss is the higher; `all docs` = "
        f"Figure 7's documents; `curve correlation` = Pearson correlation of the samples' and the "
        "all-docs curves; `minutes` = wall time of the task on this machine.",
        "",
        "## The figures",
        "",
    ]
    fig1 = figure1_circuits(circuits)
    if fig1:
        lines += [
            f"### Figure 1: `{figure1_stem(fig1)}` ({', '.join(c.task.name for c in fig1)})",
            "Per task: the single-head table (a/d), the layer-conditioned table (b/e) and the loss curves "
            "(c/f). Both tables share one colour scale.",
            "",
        ]
    lines += [
        "### Figure 4: `fig4_single_head_losses`",
        "Loss of the samples with one head masked alone, per layer and head, every task on one colour scale. "
        f"Largest rise over the unmasked loss: {_range(rise_single)} nats/token across tasks "
        "(the paper's LLaMA2-7B: +3.02 on SIQA, +2.58 on HellaSwag).",
        "",
        "### Figure 5: `fig5_layer_conditioned_losses`",
        "Loss with one head of layer l masked on top of the circuit heads already chosen in layers < l "
        "(Algorithm 1); outlined squares are the chosen heads. Rise of the loss with the whole circuit "
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
            f"{max(off):.3f}; two random circuits of {n} head(s) per layer would overlap {n / H:.3f} on "
            f"average. Most similar pair: {cmp.labels[i]} and {cmp.labels[j]} (Jaccard "
            f"{cmp.jaccard.iloc[i, j]:.3f}; mean over pairs {statistics.fmean(jac):.3f}). "
            "Tables as CSV in `tables/`.",
            "",
            "### Figure 2b: `fig2b_frequency_distribution` and `head_frequency`",
            f"How many heads are chosen by exactly k of the {len(circuits)} tasks, and per head in how many tasks' "
            f"circuits it appears. {int(dist.iloc[0])} of {L * H} heads are in no circuit; the most shared "
            f"head is in {int(cmp.frequency.to_numpy().max())} of {len(circuits)}.",
            "",
        ]
    lines += [
        "### Figure 9: `fig9_circuit_patterns`",
        "Each task's located circuit as a layers x heads pattern (dark = chosen), side by side.",
        "",
        "## Files",
        "",
        "Each figure is `NAME.html` (interactive, hover for values; "
        + ("it loads plotly.js from its CDN, so it needs a network connection; `--plotlyjs inline` makes "
           "self-contained files of ~5 MB each) " if cdn else "self-contained: plotly.js is inlined) ")
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
