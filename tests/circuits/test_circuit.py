"""Circuit JSON: a faithful round trip, schema-1 files upgraded field by field, and one-line errors
for files and models that do not fit."""

import json
import math
import statistics
from pathlib import Path

import pytest

from circuitlab.circuits.circuit import (
    SCHEMA_VERSION, AllDocsCurve, Circuit, ExcludedCircuit, LocateRun, ModelInfo, Sample, Selection, TaskInfo,
)
from circuitlab.core.errors import CircuitlabError

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted((REPO / "figures" / "smollm2-135m" / "circuits").glob("*.json")) + sorted(
    (REPO / "results").glob("*/circuits/*.json"))
# Two circuits of the reproduction as an earlier circuitlab wrote them (schema 1, no settings record), kept after
# `reproduce` located them again into figures/smollm2-135m/circuits/ in schema 2
OLD_REPRODUCTION = sorted((Path(__file__).parent / "schema_1").glob("*.json"))
SCHEMA_1 = OLD_REPRODUCTION + [p for p in COMMITTED if json.loads(p.read_text()).get("schema_version") == 1]


def make(n_layers=4, n_heads=8) -> Circuit:
    model = ModelInfo("tiny-llama-gqa", "tiny-llama-gqa", None, "abc123", n_layers, n_heads, 2, 8, 64)
    return Circuit(
        model=model, task=TaskInfo("capitals", "train", "f00d", 126),
        samples=[Sample("Q: capital of France?\nA:", " Paris", 3), Sample("x", " y")],
        strategy="layer-conditioned", n_per_layer=2, heads={2: [5, 1], 0: [0, 7]}, selected_by="conditioned",
        baseline_loss=1.5, loss_curve=[1.6, 1.7], scores={"conditioned": [[1.0, math.nan]] * n_layers},
        selections=[Selection("random", {0: [3, 1]}, [1.2, 1.3], seed=4)],
        all_docs=AllDocsCurve(9, "train", 2.0, [2.1, math.nan]), excluded=ExcludedCircuit("greedy", {1: [2]}),
        run=LocateRun(layers=[0, 3], max_batch_tokens=64, settings="s"), timings={"locate_s": 2.0},
        versions={"torch": "2"},
    )


def test_round_trip(tmp_path):
    c = make()
    path = c.save(tmp_path / "c.json")
    d = json.loads(path.read_text())
    assert d["schema_version"] == SCHEMA_VERSION == 2
    assert d["heads"] == {"0": [0, 7], "2": [1, 5]}
    assert d["head_list"] == [[0, 0], [0, 7], [2, 1], [2, 5]]
    assert d["scores"]["conditioned"][0] == [1.0, None]  # NaN is written as null: valid JSON
    assert d["all_docs"]["loss_curve"] == [2.1, None] and d["selections"][0]["heads"] == {"0": [1, 3]}
    back = Circuit.load(path)
    assert back.heads == {0: [0, 7], 2: [1, 5]} and back.samples == c.samples and back.model == c.model
    assert math.isnan(back.scores["conditioned"][0][1]) and math.isnan(back.all_docs.loss_curve[1])
    assert back.selections == [Selection("random", {0: [1, 3]}, [1.2, 1.3], 4)] and back.excluded == c.excluded
    assert back.run == c.run and back.selections[0].label == "random (seed 4)"
    assert back.to_dict() == c.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("path", SCHEMA_1, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_committed_schema_1_files_load_with_every_number_in_place(path):
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1
    c = Circuit.load(path)
    assert c.heads == {int(k): v for k, v in raw["heads"].items()} and c.loss_curve == raw["loss_curve"]
    assert c.selected_by == "conditioned" and c.run.evaluator == raw["extra"]["evaluator"]
    extra = raw["extra"]
    if "reproduce" in extra:  # the merged circuits of `circuitlab reproduce`
        assert c.run.reproduce == extra["reproduce"]
        greedy = [s for s in c.selections if s.strategy == "greedy"]
        assert len(greedy) == 1 and greedy[0].loss_curve == raw["curves"]["greedy"]
        assert greedy[0].heads == {int(k): v for k, v in extra["greedy_heads"].items()}
        random = [s for s in c.selections if s.strategy == "random"]
        assert [s.seed for s in random] == [int(k) for k in extra["random_seed_curves"]]
        # schema 1 stored the mean curve; schema 2 derives it from the seeds' curves it keeps
        mean = [statistics.fmean(xs) for xs in zip(*(s.loss_curve for s in random))]
        assert mean == pytest.approx(raw["curves"]["random"], rel=1e-12)
        assert c.all_docs.loss_curve == extra["all_docs"]["loss_curve"]
        assert c.all_docs.n_docs == extra["all_docs"]["n_docs"]
    else:
        assert c.selections == [] and c.all_docs is None


def test_the_schema_1_files_are_there():
    """An empty parameter set would skip the upgrade tests silently."""
    assert len(OLD_REPRODUCTION) == 2 and len(SCHEMA_1) > 2


@pytest.mark.parametrize("old", OLD_REPRODUCTION, ids=lambda p: p.stem)
def test_an_old_circuit_upgrades_to_what_this_code_locates_again(old):
    """The same settings, located by an earlier circuitlab (schema 1) and by this one (schema 2): read through the
    upgrade, the old file gives the same samples, heads and selections, and losses equal up to float rounding."""
    before, again = Circuit.load(old), Circuit.load(REPO / "figures" / "smollm2-135m" / "circuits" / old.name)
    assert json.loads(old.read_text())["schema_version"] == 1 and again.schema_version == 2
    assert before.samples == again.samples and before.heads == again.heads
    assert [(s.strategy, s.seed, s.heads) for s in before.selections] == [
        (s.strategy, s.seed, s.heads) for s in again.selections]
    curves = list(zip([before.loss_curve, before.all_docs.loss_curve, *(s.loss_curve for s in before.selections)],
                      [again.loss_curve, again.all_docs.loss_curve, *(s.loss_curve for s in again.selections)]))
    assert all(a == pytest.approx(b, rel=1e-5) for a, b in curves)
    assert any(a != b for a, b in curves)  # two computations, not one file copied
    assert before.baseline_loss == pytest.approx(again.baseline_loss, rel=1e-5)


def test_circuits_of_both_schemas_compare_as_one_set():
    """Old schema-1 circuits mixed with schema-2 ones of the other tasks, as a reproduction upgraded task by task."""
    from circuitlab.report.comparison import compare

    old = {p.name for p in OLD_REPRODUCTION}
    paths = OLD_REPRODUCTION + [p for p in COMMITTED if p.parent.parent.name == "smollm2-135m" and p.name not in old]
    assert {json.loads(p.read_text())["schema_version"] for p in paths} == {1, 2}
    circuits = [Circuit.load(p) for p in paths]  # loaded, every one is a schema-2 object
    assert len(circuits) == 13 and {c.schema_version for c in circuits} == {2}
    result = compare(circuits)
    assert result.distribution.sum() == 30 * 9 and all(c.all_docs is not None for c in circuits)


@pytest.mark.parametrize("edit, message", [
    (lambda d: "not json {", "malformed circuit file"),
    (lambda d: json.dumps([1]), "expected a JSON object"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "schema_version"}), "no schema_version"),
    (lambda d: json.dumps({**d, "schema_version": SCHEMA_VERSION + 1}), "newer than this circuitlab"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "model"}), "KeyError"),
    (lambda d: json.dumps({**d, "heads": {"2": [9]}}), "head out of range"),
    (lambda d: json.dumps({**d, "heads": {"4": [0]}}), "head out of range"),
    (lambda d: json.dumps({**d, "selections": [{"heads": {}}]}), "malformed circuit"),
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
