"""docs/studies.md runs as written: its spec is the test suite's, its commands run it, its error is the CLI's."""

import re
import shutil
from pathlib import Path

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "studies.md").read_text()
TINY = Path(__file__).with_name("tiny.toml")


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC, re.S)


def test_the_spec_shown_is_the_one_the_suite_runs():
    assert blocks("toml") == [TINY.read_text()]


def test_the_commands_shown_run_the_spec(tmp_path, monkeypatch, capsys):
    shutil.copy(TINY, tmp_path / "tiny.toml")
    monkeypatch.chdir(tmp_path)
    shown = next(b for b in blocks("bash") if "tiny.toml" in b).strip().splitlines()
    assert [line.split()[:3] for line in shown] == [["circuitlab", "study", a] for a in ("plan", "register", "run",
                                                                                           "analyze")]
    for line in shown:
        code, out, err = run_cli(capsys, *line.split()[1:])
        assert code == 0, err
    assert "0 jobs left" in out or (tmp_path / "page.md").is_file()
    assert "| capitals | circuit − random | 2 : 3 |" in (tmp_path / "page.md").read_text()


def test_the_error_shown_is_the_one_line_the_cli_prints(tmp_path, monkeypatch, capsys):
    (example,) = re.findall(r"```\n(\$ circuitlab study plan.*?)```", DOC, re.S)
    shown = example.strip().splitlines()[1]
    (tmp_path / "tiny.toml").write_text(TINY.read_text().replace("pool_start = 16 ", "pool_start = 12 "))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "study", "plan", "tiny.toml")
    assert code == 2 and err.strip() == shown
