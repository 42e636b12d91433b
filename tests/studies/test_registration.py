"""What `analyze` calls a change to a registered spec: every line that changes what is run or computed, and not the
`notes` line that points the page at its hand-written discussion (written after the results, by design)."""

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
