"""A study spec: read, checked in one line before any model loads, expanded into the jobs it declares."""

from pathlib import Path

import pytest

from circuitlab.studies.grid import draw_seed, expand
from circuitlab.studies.spec import read_spec
from circuitlab.studies.study import plan
from tests.helpers import one_line_error

TINY = Path(__file__).with_name("tiny.toml")
ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str, replace: dict | None = None) -> Path:
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_the_grid_balances_seeds_and_keeps_the_locating_pools_apart(tmp_path):
    spec = write(tmp_path, TINY.read_text(), {"count = 2": "count = 3", "sets = 3": "sets = 7"})
    grid = expand(read_spec(spec))
    arms = [j for j in grid.jobs if j.phase == "arms"]
    circuits = [j for j in arms if j.arm == "circuit"]
    randoms = [j for j in arms if j.arm == "random"]
    assert [(j.head_set, j.seed) for j in circuits] == [(0, 0), (1, 1), (2, 2)]
    assert [j.seed for j in randoms] == [i % 3 for i in range(7)]  # random j shares seed j mod K with circuit j
    heads_seeds = [j.settings["heads_seed"] for j in randoms]
    assert len(set(heads_seeds)) == 7  # seven different draws, although seeds repeat
    assert draw_seed(read_spec(spec), "capitals", "random", 0) != draw_seed(read_spec(spec), "sst2", "random", 0)
    pools = [set(j.settings["rows"]) for j in grid.jobs if j.kind == "locate"]
    assert len(pools) == 3 and all(len(p) == 8 for p in pools)
    assert not (pools[0] & pools[1]) and not (pools[0] & pools[2]) and not (pools[1] & pools[2])
    assert min(min(p) for p in pools) >= 16  # training rows 0..8 and learning-rate rows 8..16 stay out
    tuning = [j for j in grid.jobs if j.lr_tuning]
    assert [j.settings["lr"] for j in tuning] == [1e-2, 3e-2]
    assert all(j.settings["eval_split"] == "train" and j.settings["eval_limit"] == 8 for j in tuning)
    assert all(j.settings["lr"] is None for j in arms)  # until the tuning runs are done


@pytest.mark.parametrize("replace, match", [
    ({"pool_start = 16": "pool_start = 12"}, "overlaps the learning-rate rows"),
    ({"pool_start = 16": "pool_start = 4"}, "overlaps the training rows"),
    ({"docs_per_circuit = 8": "docs_per_circuit = 60"}, "do not fit"),
    ({'b = "random"': 'b = "randmo"'}, "no arm named 'randmo'"),
    ({"sets = 3": "sets = 3\nseeds_per_set = 2"}, "has no setting 'seeds_per_set'"),
    ({'name = "tiny"\n': ""}, "name is required"),
    ({"heads_per_layer = 1": "heads_per_layer = 9"}, "heads_per_layer"),
    ({'seeds = "balanced"': 'seeds = "balancd"'}, "must be set, balanced or a list"),
    ({"[lr]\ngrid = [1e-2, 3e-2]": "[lr]\nfixed = 1e-2\ngrid = [1e-2, 3e-2]"}, "give either fixed or grid"),
    ({"[[arms]]\nname = \"circuit\"\nheads = \"circuit\"\n": "[[arms]]\nname = \"circuit\"\nheads = \"circuit\"\n"
                                                           "dir = \"{task}/x\"\n"}, "two jobs write"),
    ({"rank = 4": "rank = 4 x"}, "malformed study spec"),
])
def test_a_bad_spec_is_one_line_before_any_model_loads(tmp_path, capsys, replace, match):
    spec = write(tmp_path, TINY.read_text(), replace)
    one_line_error(capsys, ["study", "plan", spec], match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]  # nothing written


def test_study3_recognises_its_committed_runs_by_their_settings(monkeypatch):
    """The spec of study 3 declares the runs results/run_study3.sh made: each is found, with the settings it
    records, so `analyze` regenerates its page without a job; the tuning runs choose the rate they chose then."""
    monkeypatch.chdir(ROOT)
    p = plan("results/studies/study3.toml")
    left = sorted(o for o, s in p.states.items() if s != "done")
    assert left == ["runs/study3/sequence/headmap-random-1pl-s6", "runs/study3/sequence/headmap-random-1pl-s7"]
    import json

    for task in ("sst2", "add_sub", "sequence"):
        then = json.loads((ROOT / f"results/study3/{task}/lr.json").read_text())["chosen"]
        assert p.lr_table[task][0] == then


def test_a_track_takes_its_pairs_file_as_it_is_or_the_tasks_split_never_both():
    from circuitlab.core.errors import ConfigError
    from circuitlab.studies.spec import Track

    assert Track(name="t", arm="lora", pairs="p.jsonl").split is None
    assert Track(name="t", arm="lora", split="validation").pairs is None
    with pytest.raises(ConfigError, match="split chooses the task's own pairs"):
        Track(name="t", arm="lora", pairs="p.jsonl", split="validation")
