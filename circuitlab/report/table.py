"""The Table-1-style summary of fine-tuning runs: methods x tasks, as a pandas DataFrame."""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable, write_text_atomic
from circuitlab.finetune.config import HEAD_MODES, METHODS
from circuitlab.finetune.results import RunResult

DOCUMENTS = "Documents"  # the last row: how many documents each task's scores are over


def method_label(result: RunResult) -> str:
    """The method's row name, with where its heads came from and how many per layer."""
    cfg = result.config
    label = METHODS[result.method].label if result.method in METHODS else result.method
    if result.heads and cfg.get("heads") != "circuit":
        label += f" ({cfg['heads']})"
    source = (result.circuit or {}).get("task")
    if result.heads and cfg.get("heads") == "circuit" and source not in (None, cfg.get("task")):
        label += f" (transfer from {source})"  # the paper's Table 6
    if result.heads:
        label += f" [{len(next(iter(result.heads.values())))}/layer]"
    return label


def results_table(paths: list[str | Path], metric: str = "acc"):
    """Rows: methods, then `Documents`: how many documents each task's scores are over (a range where the
    methods' runs differ: their scores are then not over the same documents). Columns: # Params (%), each
    task's `metric` (%), Avg., train minutes."""
    import pandas as pd

    if not paths:
        raise CircuitlabError("no result.json files given")
    rows = []
    for p in paths:
        r = RunResult.load(p)
        value = r.eval.metrics.get(metric)
        if value is None:
            raise CircuitlabError(f"{p} has no metric {metric!r}")
        mode = r.config.get("heads")
        rank = (list(METHODS).index(r.method) if r.method in METHODS else len(METHODS),
                HEAD_MODES.index(mode) if mode in HEAD_MODES else 0)
        rows.append({"Method": method_label(r), "task": r.config["task"], "value": 100 * value, "rank": rank,
                     "share": r.trainable_share_pct, "minutes": r.train.seconds / 60,
                     "docs": r.eval.n_docs})
    df = pd.DataFrame(rows)
    dup = df[df.duplicated(["Method", "task"], keep=False)]
    if len(dup):
        raise CircuitlabError(f"two results for the same method and task: {dup.iloc[0]['Method']} on {dup.iloc[0]['task']}")
    tasks = list(dict.fromkeys(df["task"]))
    table = df.pivot(index="Method", columns="task", values="value")[tasks]
    order = list(dict.fromkeys(df.sort_values("rank", kind="stable")["Method"]))  # base, HeadMap, ..., LoRA
    table = table.loc[order]
    table.insert(0, "# Params (%)", df.groupby("Method")["share"].mean().loc[order])
    table["Avg."] = table[tasks].mean(axis=1)
    table["Train (min, total)"] = df.groupby("Method")["minutes"].sum().loc[order]
    table = table.round(2).astype(object)
    counts = df.groupby("task")["docs"].agg(["min", "max"])
    table.loc[DOCUMENTS] = {col: _span(counts.loc[col]) if col in tasks else "" for col in table.columns}
    return table


def _span(row) -> str:
    return str(row["min"]) if row["min"] == row["max"] else f"{row['min']}-{row['max']}"


def write_table(paths: list[str | Path], metric: str = "acc", md: str | Path | None = None,
                csv: str | Path | None = None) -> tuple[object, list[Path]]:
    """`results_table`, and written as markdown and/or CSV where asked (outputs checked first)."""
    for path in (md, csv):
        if path:
            check_writable(path)
    table = results_table(paths, metric)
    written = [write_text_atomic(md, table.to_markdown() + "\n")] if md else []
    written += [write_text_atomic(csv, table.to_csv())] if csv else []
    return table, written
