"""`circuitlab eval` and the command itself: output, JSON, help, bad input."""

import json

import pytest

from circuitlab.cli import main
from tests.helpers import run_cli as run


def test_eval_prints_accuracy_and_writes_json(capsys, data_dir, tmp_path):
    out_path = tmp_path / "r.json"
    code, out, _ = run(capsys, "eval", "--model", "tiny-llama", "--task", "arc_easy", "--data-dir", str(data_dir),
                       "--limit", "6", "--out", str(out_path))
    assert code == 0
    assert "acc=" in out and "acc_norm=" in out
    saved = json.loads(out_path.read_text())
    assert saved["task"] == "arc_easy" and saved["split"] == "test" and saved["n_docs"] == 6


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["eval", "--model", "tiny-llama", "--task", "nope"], "unknown task"),
        (["eval", "--model", "no-such-model", "--task", "rte", "--data-dir", "{data}"], "unknown model"),
        (["eval", "--model", "tiny-llama", "--task", "rte", "--data-dir", "{tmp}/missing"], "missing"),
        (["eval", "--model", "tiny-llama", "--task", "boolq", "--split", "test", "--data-dir", "{data}"], "no 'test' split"),
        (["eval", "--model", "tiny-llama", "--task", "{tmp}/bad.jsonl"], "bad.jsonl"),
        (["eval", "--model", "tiny-llama", "--task", "{tmp}/empty.jsonl"], "empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, data_dir, tmp_path, argv, fragment):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "choices": [" b"], "gold": 0}\n{not json\n')
    (tmp_path / "empty.jsonl").write_text("")
    argv = [a.format(data=data_dir, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("circuitlab: error:")
    assert fragment in lines[0]


def test_every_command_has_help(capsys):
    from circuitlab.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        usage = "usage: lm-eval" if name == "lm-eval" else "usage: circuitlab " + name  # lm-eval's own options
        assert usage in capsys.readouterr().out


def test_python_dash_m_is_the_same_command():
    """`python -m circuitlab` (what `torchrun -m circuitlab` runs) is the CLI: output and exit codes."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "circuitlab", "tasks"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "sst2" in ok.stdout and "capitals" in ok.stdout
    assert "add_sub" in ok.stdout and "exact_match" in ok.stdout  # the generated arithmetic tasks too
    bad = subprocess.run([sys.executable, "-m", "circuitlab", "eval", "--task", "nope"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
