"""The Table-1-style table of fine-tuning results, and the committed study's results still read."""

from pathlib import Path

import pytest

from circuitlab.cli import main
from circuitlab.finetune import EvalRecord, RunResult, TrainRecord
from circuitlab.report.table import results_table

REPO = Path(__file__).resolve().parents[2]


def fake_result(path, method, task, acc, share, heads=None, mode="circuit", source=None, n_docs=1):
    r = RunResult(config={"task": task, "heads": mode}, method=method, model={}, heads=heads, trainable_params=0,
                  base_params=1, trainable_share_pct=share, train=TrainRecord("train", 0, seconds=60.0),
                  eval=EvalRecord("validation", n_docs, 0, "f", {"acc": acc}), circuit={"task": source or task})
    return str(r.save(path))


def test_table(tmp_path, capsys, monkeypatch):
    paths = [
        fake_result(tmp_path / "a/result.json", "base", "boolq", 0.5, 0.0),
        fake_result(tmp_path / "b/result.json", "base", "sst2", 0.7, 0.0),
        fake_result(tmp_path / "c/result.json", "headmap-mha", "boolq", 0.6, 0.5, {"0": [1, 2]}),
        fake_result(tmp_path / "d/result.json", "headmap-mha", "sst2", 0.9, 0.5, {"0": [1, 2]}),
        fake_result(tmp_path / "e/result.json", "headmap-mha", "sst2", 0.8, 0.5, {"0": [1, 2]}, mode="random"),
        fake_result(tmp_path / "f/result.json", "headmap-hs", "sst2", 0.85, 0.5, {"0": [1, 2]}, source="boolq"),
    ]
    t = results_table(paths)
    assert list(t.columns) == ["# Params (%)", "boolq", "sst2", "Avg.", "Train (min, total)"]
    assert t.loc["HeadMap-MHA [2/layer]", "Avg."] == 75.0
    assert t.loc["HeadMap-MHA (random) [2/layer]", "sst2"] == 80.0
    assert t.loc["HeadMap-HS (transfer from boolq) [2/layer]", "sst2"] == 85.0
    assert t.loc["Documents", "boolq"] == "1" and t.loc["Documents", "Avg."] == ""  # each run scored 1 document
    paths.append(fake_result(tmp_path / "g/result.json", "lora", "sst2", 0.75, 1.0, n_docs=3))
    assert results_table(paths).loc["Documents", "sst2"] == "1-3"  # not all over the same documents
    assert main(["table", *paths, "--csv", str(tmp_path / "t.csv")]) == 0
    assert "| Base (zero-shot)" in capsys.readouterr().out and (tmp_path / "t.csv").read_text().startswith("Method,")
    monkeypatch.chdir(tmp_path)
    assert main(["table", *paths]) == 0 and "wrote table.csv" in capsys.readouterr().out  # the CSV by default
    assert (tmp_path / "table.csv").read_text().splitlines()[-1] == "Documents,,1,1-3,,"
    assert main(["table", *paths, "--csv", ""]) == 0 and "wrote" not in capsys.readouterr().out
    assert main(["table", paths[0], paths[0]]) == 2
    assert "two results" in capsys.readouterr().err


def test_the_committed_study_results_still_make_its_table():
    """results/table.csv was made from results/study1/*/*/result.json; the typed reader gives the same numbers."""
    import pandas as pd

    paths = sorted(str(p) for p in (REPO / "results" / "study1").glob("*/*/result.json"))
    table = results_table(paths)
    committed = pd.read_csv(REPO / "results" / "table.csv", index_col=0)
    for task in ("arc_easy", "boolq", "sst2"):
        for method in committed.index.drop("Documents", errors="ignore"):
            assert table.loc[method, task] == pytest.approx(committed.loc[method, task])
