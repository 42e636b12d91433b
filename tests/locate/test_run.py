"""Runs: checkpoints resume with the same result, `locate_to` owns its files, bad settings are one
line before any work, samples files are read strictly."""

import json

import pytest

from circuitlab.circuits.circuit import Circuit, ModelInfo, Sample, TaskInfo
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.locate import (
    LocateConfig, default_heads_per_layer, locate, locate_to, parse_layers, read_samples_file,
)
from tests.helpers import SAMPLES, partial_steps

pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    pass


def stop_after(key):
    def on_step(step):
        if str(step) == key:
            raise Stop

    return on_step


def test_resume_after_an_interruption_gives_the_same_circuit(tiny_gqa, tmp_path):
    out = tmp_path / "c.json"
    config = LocateConfig(n_per_layer=2, max_batch_tokens=64)
    whole = locate(tiny_gqa, SAMPLES, config, progress=False)
    with pytest.raises(Stop):
        locate_to(out, tiny_gqa, SAMPLES, config, progress=False, on_step=stop_after("conditioned/1"))
    assert set(partial_steps(out)) == {"conditioned/0", "conditioned/1"} and not out.exists()
    # Another setting does not take over the unfinished run: one line naming what differs, nothing lost.
    with pytest.raises(CircuitlabError, match=r"c.json.partial holds an unfinished circuit with other settings "
                                              r"\(differs in: n\)") as e:
        locate_to(out, tiny_gqa, SAMPLES, LocateConfig(n_per_layer=1, max_batch_tokens=64), progress=False)
    assert "\n" not in str(e.value) and set(partial_steps(out)) == {"conditioned/0", "conditioned/1"}
    resumed = locate_to(out, tiny_gqa, SAMPLES, config, progress=False)
    assert resumed.run.resumed_steps == 2
    assert resumed.heads == whole.heads and resumed.loss_curve == whole.loss_curve
    assert resumed.to_dict()["scores"] == whole.to_dict()["scores"]


def test_locate_to_saves_removes_its_partial_state_and_reuses(tiny_gqa, tmp_path):
    out = tmp_path / "sub" / "c.json"
    config = LocateConfig("random", n_per_layer=2, seeds=(3, 4))
    with pytest.raises(Stop):
        locate_to(out, tiny_gqa, SAMPLES, config, progress=False, on_step=stop_after("curve/seed 3"))
    assert (tmp_path / "sub" / "c.json.partial").is_dir() and not out.exists()
    first = locate_to(out, tiny_gqa, SAMPLES, config, progress=False)
    assert first.run.resumed_steps == 2 and not (tmp_path / "sub" / "c.json.partial").exists()
    assert Circuit.load(out).to_dict() == first.to_dict()
    logs = []
    again = locate_to(out, tiny_gqa, SAMPLES, config, progress=False, log=logs.append)
    assert again.to_dict() == first.to_dict() and logs and "reused" in logs[0]
    with pytest.raises(CircuitlabError, match="holds a circuit made with other settings .differs in: n."):
        locate_to(out, tiny_gqa, SAMPLES, LocateConfig("random", n_per_layer=1), progress=False)
    assert Circuit.load(out).to_dict() == first.to_dict()


@pytest.mark.parametrize("make, field", [
    (lambda: LocateConfig(n_per_layer=0), "n_per_layer"),
    (lambda: LocateConfig(strategy="best"), "strategy"),
    (lambda: LocateConfig(layers=(2, 1)), "layers"),
    (lambda: LocateConfig(max_batch_tokens=0), "max_batch_tokens"),
    (lambda: LocateConfig(prescreen=1, n_per_layer=2), "prescreen"),
    (lambda: LocateConfig(prescreen=3, plain=True), "prescreen"),
    (lambda: LocateConfig(strategy="redundant"), "circuit"),
    (lambda: LocateConfig(seeds=()), "seeds"),
    # settings the strategy or the ablation would not read
    (lambda: LocateConfig(seeds=(3,)), "seeds"),
    (lambda: LocateConfig("greedy", seeds=(0, 1)), "seeds"),
    (lambda: LocateConfig("random", prescreen=4), "prescreen"),
    (lambda: LocateConfig(ablation="corrupted", ablation_docs=8), "ablation_docs"),
    (lambda: LocateConfig("random", circuit=Circuit(ModelInfo("m", "m", None, "0" * 16, 2, 4, 4, 8, 32),
                                                    TaskInfo("t", "train"), [], "random", 1, {0: [1]})), "circuit"),
])
def test_bad_settings_name_their_field_when_made(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field and "\n" not in str(e.value)


def test_settings_that_need_the_model_are_checked_against_its_dimensions(tiny_gqa):
    for config, field, message in [
        (LocateConfig(n_per_layer=9), "n_per_layer", "out of range"),
        (LocateConfig(layers=(2, 9)), "layers", "out of range"),
        (LocateConfig(prescreen=9), "prescreen", "between"),
        (LocateConfig(prescreen=1), "prescreen", "between n=2"),  # n defaults to round(8 / 4)
    ]:
        with pytest.raises(ConfigError, match=message) as e:
            config.plan(tiny_gqa.dims)
        assert e.value.field == field
        with pytest.raises(ConfigError, match=message):
            locate(tiny_gqa, SAMPLES, config, progress=False)


def test_defaults_layers_and_samples_file(tmp_path):
    assert [default_heads_per_layer(h) for h in (32, 9, 4, 2, 1, 40)] == [8, 2, 1, 1, 1, 10]
    assert parse_layers("1-2") == (1, 2) and parse_layers("3") == (3, 3)
    for bad in ("x", "1-2-3", ""):
        with pytest.raises(ValueError):
            parse_layers(bad)
    good = tmp_path / "s.jsonl"
    good.write_text('{"prompt": "a", "target": " b"}\n\n{"prompt": "c", "target": " d", "index": 7}\n')
    assert read_samples_file(good) == [Sample("a", " b", None), Sample("c", " d", 7)]
    for text in ['{"prompt": "a"}', "[1]", "{bad", '{"prompt": 1, "target": "x"}', "",
                 '{"prompt": "a", "target": " b", "index": "x"}']:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(CircuitlabError):
            read_samples_file(bad)
