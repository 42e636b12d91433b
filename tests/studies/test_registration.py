"""What `analyze` calls a change to a registered spec: every line that changes what is run or computed, and not the
`notes` line that points the page at its hand-written discussion (written after the results, by design)."""

import json
import shutil
from pathlib import Path

from circuitlab.studies import registration
from circuitlab.studies.spec import read_spec

TINY = Path(__file__).with_name("tiny.toml")


def test_a_notes_line_added_after_registration_is_not_a_deviation_and_a_changed_setting_is(tmp_path):
    spec = tmp_path / "tiny.toml"
    shutil.copy(TINY, spec)
    registration.register(read_spec(spec), today="2026-12-06")
    text = TINY.read_text()
    spec.write_text(text.replace('page = "page.md"\n', 'page = "page.md"\nnotes = "tiny.notes.md"\n'))
    changed = read_spec(spec)
    assert changed.notes == "tiny.notes.md" and changed.digest != read_spec(TINY).digest
    assert registration.deviations(changed, set(), set(), record=False) == []
    assert "epochs = 1\n" in text
    spec.write_text(spec.read_text().replace("epochs = 1\n", "epochs = 2\n"))
    assert registration.deviations(read_spec(spec), set(), set(), record=False) == [
        "the spec changed since its registration on 2026-12-06: -epochs = 1; +epochs = 2"]


def test_study_register_checks_the_spec_on_the_data_dir_it_is_given(tmp_path, data_dir, monkeypatch, capsys):
    """`study register SPEC --data-dir D` plans on D's data, as `study run --data-dir D` will (not on the hub)."""
    from circuitlab.cli import main

    monkeypatch.delenv("CIRCUITLAB_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.read_text().replace('tasks = ["capitals"]', 'tasks = ["sst2"]'))
    assert main(["study", "register", str(spec), "--data-dir", str(data_dir)]) == 0, capsys.readouterr().err
    assert json.loads(spec.with_suffix(".registration.json").read_text())["spec_digest"] == read_spec(spec).digest
