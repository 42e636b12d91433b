"""`circuitlab locate`: writes a valid circuit; bad input is one line on stderr and exit code 2."""

import json

import pytest

from circuitlab.circuits.circuit import Circuit
from circuitlab.cli import main
from tests.helpers import one_line_error


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def samples_file(tmp_path):
    path = tmp_path / "samples.jsonl"
    rows = [{"prompt": "Question: What is the capital of Peru?\nAnswer:", "target": " Lima"},
            {"prompt": "The opposite of hot is", "target": " cold"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_locate_writes_a_circuit(tmp_path, samples_file, capsys):
    out = tmp_path / "c" / "tiny.json"
    rc = main(["locate", "--model", "tiny-llama-gqa", "--task", "capitals", "--samples-file", str(samples_file),
               "--layers", "1-3", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    c = Circuit.load(out)
    assert c.model.name == "tiny-llama-gqa" and c.model.n_kv_heads == 2 and c.n_per_layer == 2
    assert sorted(c.heads) == [1, 2, 3] and all(len(h) == 2 for h in c.heads.values())
    assert [s.target for s in c.samples] == [" Lima", " cold"]  # as given, in order
    assert c.task.name == "capitals" and c.task.data_fingerprint
    assert len(c.loss_curve) == 3 and c.baseline_loss > 0 and "locate_s" in c.timings and c.versions["torch"]
    assert not out.with_name(out.name + ".partial").exists()
    assert "wrote" in capsys.readouterr().out


def test_locate_selects_samples_from_the_training_split(tmp_path, capsys):
    out = tmp_path / "c.json"
    rc = main(["locate", "--model", "tiny-llama", "--task", "capitals", "--samples", "3", "--max-docs", "40",
               "--strategy", "random", "--seeds", "1,2", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    c = Circuit.load(out)
    assert c.task.split == "train" and c.task.n_docs_scored == 40 and 0 < len(c.samples) <= 3
    assert all(s.index is not None and s.index < 40 for s in c.samples)
    assert c.seed == 1 and [s.seed for s in c.selections] == [2]


@pytest.mark.parametrize("extra, match", [
    (["--max-docs", "5"], "--max-docs, --split, --rows and --data-dir select samples from a task's docs"),
    (["--model", "no-such-model"], "unknown model"),
    (["--heads-per-layer", "9"], "out of range"),
    (["--layers", "2-7"], "out of range"),
    (["--strategy", "best"], "invalid choice: 'best'"),
    (["--seeds", "1,x"], "--seeds"),
])
def test_bad_input(extra, match, samples_file, tmp_path, capsys):
    argv = ["locate", "--model", "tiny-llama", "--task", "capitals", "--samples-file", str(samples_file),
            "--out", str(tmp_path / "c.json"), "--no-progress"]
    one_line_error(capsys, argv + extra, match)
    assert not (tmp_path / "c.json").exists()


def test_malformed_samples_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "target": " b"}\n{"prompt": "a"}\n')
    one_line_error(capsys, ["locate", "--model", "tiny-llama", "--task", "capitals", "--samples-file", str(bad)],
                   "line 2")


def test_redundant_with_a_circuit_from_another_model(tmp_path, samples_file, capsys):
    gqa = tmp_path / "gqa.json"
    common = ["--task", "capitals", "--samples-file", str(samples_file), "--no-progress"]
    assert main(["locate", "--model", "tiny-llama-gqa", "--strategy", "random", "--out", str(gqa), *common]) == 0
    one_line_error(capsys, ["locate", "--model", "tiny-llama", "--strategy", "redundant", "--circuit", str(gqa),
                            "--out", str(tmp_path / "r.json"), *common], "located on tiny-llama-gqa")
    one_line_error(capsys, ["locate", "--model", "tiny-llama", "--strategy", "redundant", "--circuit",
                            str(tmp_path / "missing.json"), *common], "not found")


def test_a_samples_file_needs_no_task(tmp_path, samples_file, capsys):
    out = tmp_path / "c.json"
    assert main(["locate", "--model", "tiny-llama", "--samples-file", str(samples_file), "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    c = Circuit.load(out)
    assert c.task.name == "samples" and c.task.split == "samples-file:samples.jsonl" and len(c.samples) == 2
