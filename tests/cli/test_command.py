"""The command itself, apart from any one subcommand: a bare `circuitlab`, `--version`, a reader that goes away,
other libraries' progress bars in logs, and the tours' outputs kept out of git."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_a_bare_circuitlab_lists_every_command(capsys):
    from circuitlab.cli import COMMANDS

    code, out, err = run_cli(capsys)
    assert code == 0 and err == ""
    listed = set(re.findall(r"^ {4}(\S+)", out, flags=re.M))
    assert listed == set(COMMANDS), listed ^ set(COMMANDS)


def test_an_unknown_command_is_one_line_naming_the_error_once(capsys):
    code, _, err = run_cli(capsys, "nope")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("circuitlab: error: argument COMMAND: invalid choice: 'nope'"), err


def test_version_is_the_packages(capsys):
    from circuitlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert e.value.code == 0 and capsys.readouterr().out == f"circuitlab {version}\n"


def test_a_closed_pipe_is_quiet():
    """`circuitlab tasks | head -3`: the reader is gone before the command writes (its end of the pipe is closed
    first, so every run meets it), and the command ends without a word, as `cat` would."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "circuitlab", "tasks"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == "", done.stderr


def test_other_libraries_bars_stay_out_of_logs(tmp_path):
    """transformers' "Writing model shards" (export-model) and "Loading weights" (a model directory loaded) draw
    with tqdm's default, which writes carriage-return lines into a log; the command's stderr here is a file."""
    model = tmp_path / "model"
    steps = [["export-model", "tiny-llama", "--out", str(model)],
             ["eval", "--model", str(model), "--task", "capitals", "--limit", "2"]]
    for argv in steps:
        done = subprocess.run([sys.executable, "-m", "circuitlab", *argv], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "\r" not in done.stderr and "it/s" not in done.stderr, done.stderr


def test_the_readme_tours_outputs_are_ignored_by_git():
    """Every `--out` of the README's command-line tour that git does not track is ignored (`git status` stays
    clean after the tour), and the packages that share a name with one (circuitlab/edges) are not."""
    readme = (REPO / "README.md").read_text()
    tour = readme.split("## A tour of the command line", 1)[1].split("```", 2)[1]
    outs = [p.rstrip("/") for p in re.findall(r"--out (\S+)", tour)]
    tracked = subprocess.run(["git", "ls-files", *outs], capture_output=True, text=True, cwd=REPO).stdout.split()
    made = [f"{p}/x.json" if not p.endswith(".json") else p for p in outs if not any(t.startswith(p) for t in tracked)]
    assert {"figs/x.json", "cmp/x.json", "edges/add_sub.json", "adapter/x.json", "smollm2/x.json", "merged/x.json",
            "lm_eval_tasks/x.json"} <= set(made)
    ignored = subprocess.run(["git", "check-ignore", *made], capture_output=True, text=True, cwd=REPO).stdout.split()
    assert sorted(ignored) == sorted(made)
    kept = ["circuitlab/edges/graph.py", "tests/edges/x.py", "circuitlab/report/figs.py"]
    assert subprocess.run(["git", "check-ignore", *kept], capture_output=True, cwd=REPO).returncode == 1
