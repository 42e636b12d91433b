"""`eval --out` under the Artefact rule: a result made from the same identity is reused without loading the model,
one made otherwise (or recording none) is refused in one line and left exactly as it was."""

import json

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.evaluate import EvalConfig, EvalResult
from circuitlab.evaluate.job import evaluate_task
from tests.helpers import one_line_error, run_cli


def _no_model(monkeypatch):
    """Fail if the job goes past its checks: the heavy half is where the model loads."""
    import circuitlab.evaluate.run as run

    def refuse(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(run, "with_adapter", refuse)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "r.json"
    result = evaluate_task("tiny-llama", "capitals", EvalConfig(limit=4), out=out, progress=False)
    return out, result


def test_a_result_records_its_identity_and_reads_back_equal(first):
    out, result = first
    doc = json.loads(out.read_text())
    assert doc["made_from"]["task"] == "capitals" and doc["made_from"]["adapter"] is None
    assert doc["made_from"]["docs"] == doc["data_fingerprint"] and doc["adapter"] is None
    assert EvalResult.load(out) == result


def test_the_same_settings_reuse_the_result_without_loading_the_model(first, monkeypatch):
    out, result = first
    before = out.read_bytes()
    _no_model(monkeypatch)
    lines = []
    again = evaluate_task("tiny-llama", "capitals", EvalConfig(limit=4), out=out, progress=False, log=lines.append)
    assert again == result and out.read_bytes() == before and "reused" in lines[0]


@pytest.mark.parametrize("change,differs", [({"limit": 3}, "docs"), ({"protocol": "official"}, "protocol"),
                                            ({"batch_size": 2}, "batch_size")])
def test_other_settings_are_refused_before_loading_and_the_result_is_kept(first, monkeypatch, change, differs):
    out, _ = first
    before = out.read_bytes()
    _no_model(monkeypatch)
    with pytest.raises(CircuitlabError, match=f"other settings \\(differs in: {differs}\\)"):
        evaluate_task("tiny-llama", "capitals", EvalConfig(**{"limit": 4, **change}), out=out, progress=False)
    assert out.read_bytes() == before


def test_another_model_is_refused(first, monkeypatch):
    out, _ = first
    _no_model(monkeypatch)
    with pytest.raises(CircuitlabError, match="differs in: model"):
        evaluate_task("tiny-llama-gqa", "capitals", EvalConfig(limit=4), out=out, progress=False)


def test_a_result_that_records_no_identity_is_refused_not_overwritten(tmp_path, capsys, monkeypatch):
    """A result written before results recorded their identity: the user deletes it or writes elsewhere."""
    out = tmp_path / "old.json"
    out.write_text(json.dumps({"task": "capitals", "metrics": {"acc": 0.5}}))
    _no_model(monkeypatch)
    line = one_line_error(capsys, ["eval", "--model", "tiny-llama", "--task", "capitals", "--limit", "2", "--out",
                                   out], "records none")
    assert str(out) in line and json.loads(out.read_text())["metrics"] == {"acc": 0.5}


def test_the_command_says_when_it_reused(first, capsys, monkeypatch):
    out, result = first
    _no_model(monkeypatch)
    code, stdout, err = run_cli(capsys, "eval", "--model", "tiny-llama", "--task", "capitals", "--limit", "4",
                                "--out", out)
    assert code == 0 and "reused" in err and f"acc={result.metrics['acc']:.4f}" in stdout
