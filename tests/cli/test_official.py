"""`--protocol` on the commands that locate and evaluate, and `official-import`/`official-export`: a
round trip through the official code's info.pt; bad input is one line, exit code 2, nothing written,
no model loaded."""

import json

import pytest
import torch

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from tests.helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_loading(monkeypatch):
    import circuitlab.models
    import circuitlab.models.loaded

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    for module, name in ((circuitlab.models, "load_model"), (circuitlab.models.loaded, "load_model"),
                         (circuitlab.models, "load_hf")):
        monkeypatch.setattr(module, name, refuse)


class Payload:
    """Unpickling this needs the class: code."""


def test_export_then_import_on_the_command_line(tiny, tmp_path, capsys, no_loading):
    c = Circuit(ModelInfo.of(tiny), TaskInfo("capitals", "train"), [], "layer-conditioned", 2,
                {0: [1, 3], 2: [0, 2]})
    c.save(tmp_path / "c.json")
    code, out, err = run_cli(capsys, "official-export", tmp_path / "c.json", "--out", tmp_path / "info.pt")
    assert code == 0, err
    assert torch.load(tmp_path / "info.pt", weights_only=True)["knowledge_circuit"][2] == {"retain_heads": [0, 2]}
    code, out, err = run_cli(capsys, "official-import", tmp_path / "info.pt", "--model", "tiny-llama",
                             "--task", "capitals", "--out", tmp_path / "back.json")
    assert code == 0, err
    back = Circuit.load(tmp_path / "back.json")
    assert back.heads == c.heads and back.protocol == "official" and back.task.name == "capitals"
    back.validate(tiny)  # the dimensions fit; the file names no weights to compare


@pytest.mark.parametrize("argv, match", [
    (["locate", "--model", "tiny-llama", "--task", "capitals", "--protocol", "nope", "--out", "{out}/c.json"],
     "--protocol: invalid choice: 'nope'"),
    (["eval", "--model", "tiny-llama", "--task", "capitals", "--protocol", "nope"], "--protocol: invalid choice"),
    (["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--out", "{out}/r", "--protocol", "Official"],
     "--protocol: invalid choice: 'Official'"),
    (["official-import", "{in}/class.pt", "--model", "tiny-llama", "--out", "{out}/c.json"], "never unpickles code"),
    (["official-import", "{in}/code.pt", "--model", "tiny-llama", "--out", "{out}/c.json"], "never unpickles code"),
    (["official-import", "{in}/missing.pt", "--model", "tiny-llama", "--out", "{out}/c.json"], "not found"),
    (["official-import", "{in}/wide.pt", "--model", "tiny-llama", "--out", "{out}/c.json"], "head out of range"),
    (["official-import", "{in}/wide.pt", "--model", "no-such-model", "--out", "{out}/c.json"], "unknown model"),
    (["official-import", "{in}/wide.pt", "--model", "tiny-llama"], "--out"),
    (["official-export", "{in}/missing.json", "--out", "{out}/info.pt"], "circuit file not found"),
    (["official-export", "{in}/class.pt", "--out", "{out}/info.pt"], "official-import"),
])
def test_bad_input(argv, match, tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "in"
    d.mkdir()
    marker = d / "ran"

    class Opens:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"knowledge_circuit": {0: {"retain_heads": [1]}}, "x": Payload()}, d / "class.pt")
    torch.save({"knowledge_circuit": {0: {"retain_heads": [1]}}, "x": Opens()}, d / "code.pt")
    torch.save({"knowledge_circuit": {0: {"retain_heads": [1, 7]}}}, d / "wide.pt")  # tiny-llama has 4 heads
    before = sorted(d.rglob("*"))
    out = tmp_path / "out"
    one_line_error(capsys, [a.format(**{"in": d, "out": out}) for a in argv], match)
    assert not out.exists() and sorted(d.rglob("*")) == before and not marker.exists()


def test_eval_records_the_protocol(data_dir, tmp_path, capsys):
    code, out, err = run_cli(capsys, "eval", "--model", "tiny-llama", "--task", "rte", "--data-dir", data_dir,
                             "--limit", "3", "--protocol", "official", "--out", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["protocol"] == "official" and "official protocol" in out
