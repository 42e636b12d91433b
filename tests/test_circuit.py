"""Circuit JSON: a faithful round trip, and one-line errors for files and models that do not fit."""

import json
import math

import pytest

from circuitlab.circuit import SCHEMA_VERSION, Circuit, ModelInfo, Sample, TaskInfo
from circuitlab.errors import CircuitlabError


def make(n_layers=4, n_heads=8) -> Circuit:
    model = ModelInfo("tiny-llama-gqa", "tiny-llama-gqa", None, "abc123", n_layers, n_heads, 2, 8, 64)
    return Circuit(
        model=model, task=TaskInfo("capitals", "train", "f00d", 126),
        samples=[Sample("Q: capital of France?\nA:", " Paris", 3), Sample("x", " y")],
        strategy="layer-conditioned", n_per_layer=2, heads={2: [5, 1], 0: [0, 7]},
        baseline_loss=1.5, loss_curve=[1.6, 1.7], scores={"conditioned": [[1.0, math.nan]] * n_layers},
        timings={"locate_s": 2.0}, versions={"torch": "2"},
    )


def test_round_trip(tmp_path):
    c = make()
    path = c.save(tmp_path / "c.json")
    d = json.loads(path.read_text())
    assert d["schema_version"] == SCHEMA_VERSION
    assert d["heads"] == {"0": [0, 7], "2": [1, 5]}
    assert d["head_list"] == [[0, 0], [0, 7], [2, 1], [2, 5]]
    assert d["scores"]["conditioned"][0] == [1.0, None]  # NaN is written as null: valid JSON
    back = Circuit.load(path)
    assert back.heads == {0: [0, 7], 2: [1, 5]} and back.samples == c.samples and back.model == c.model
    assert math.isnan(back.scores["conditioned"][0][1])
    assert back.to_dict() == c.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("edit, message", [
    (lambda d: "not json {", "malformed circuit file"),
    (lambda d: json.dumps([1]), "expected a JSON object"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "schema_version"}), "no schema_version"),
    (lambda d: json.dumps({**d, "schema_version": SCHEMA_VERSION + 1}), "newer than this circuitlab"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "model"}), "KeyError"),
    (lambda d: json.dumps({**d, "heads": {"2": [9]}}), "head out of range"),
    (lambda d: json.dumps({**d, "heads": {"4": [0]}}), "head out of range"),
])
def test_bad_files_give_one_line_errors(tmp_path, edit, message):
    path = tmp_path / "c.json"
    path.write_text(edit(make().to_dict()))
    with pytest.raises(CircuitlabError, match=message) as err:
        Circuit.load(path)
    assert "\n" not in str(err.value)


def test_validate_against_a_model():
    c = make()
    c.validate(c.model)
    for other, message in [
        (ModelInfo("tiny-llama", "tiny-llama", None, "abc123", 4, 4, 4, 16, 64), "not on tiny-llama"),
        (ModelInfo("tiny-llama-gqa", "tiny-llama-gqa", None, "ffff", 4, 8, 2, 8, 64), "fingerprint"),
    ]:
        with pytest.raises(CircuitlabError, match=message):
            c.validate(other)
    c.validate(ModelInfo("tiny-llama-gqa", "x", None, "ffff", 4, 8, 2, 8, 64), check_weights=False)


def test_validate_a_loaded_model(tiny, tiny_gqa):
    c = make()
    c.model = ModelInfo.of(tiny_gqa)
    c.validate(tiny_gqa)
    with pytest.raises(CircuitlabError, match="located on tiny-llama-gqa"):
        c.validate(tiny)
