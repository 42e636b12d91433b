"""The pipeline on the tiny model: its numbers agree with independent computations, and it resumes."""


import pytest

from circuitlab import reproduce as rp
from circuitlab.circuit import Circuit, Sample
from circuitlab.cli import main
from circuitlab.locate import PlainEvaluator
from circuitlab.masking import HeadMask
from circuitlab.models import load_model
from circuitlab.scoring import score_docs
from circuitlab.tasks import get_task, load_docs

CONFIG = rp.ReproduceConfig(samples=3, heads_per_layer=1, max_docs=16, all_docs=4, random_seeds=(0, 1))


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def run(model, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    logs = []
    result = rp.reproduce(model, ["capitals", "hellaswag"], data_dir, out, CONFIG, command="circuitlab reproduce X",
                          png=False, progress=False, log=logs.append)
    return result, out, logs


def test_locating_split(data_dir):
    assert rp.locating_split("sst2", data_dir) == "train"
    assert rp.locating_split("hellaswag", data_dir) == "validation"
    assert rp.locating_split("boolq", data_dir) == "validation"
    assert rp.locating_split("capitals", data_dir) == "train"


def test_parse_tasks():
    assert rp.parse_tasks("all") == list(rp.PAPER_TASKS) and len(rp.PAPER_TASKS) == 13
    assert rp.parse_tasks("sst2, piqa,sst2") == ["sst2", "piqa"]
    with pytest.raises(rp.CircuitlabError, match="unknown task"):
        rp.parse_tasks("sst2,nope")


def test_outputs(run):
    result, out, _ = run
    assert set(result.circuits) == {"capitals", "hellaswag"}
    c = result.circuits["hellaswag"]
    assert c.task.split == "validation" and c.strategy == "layer-conditioned"
    assert {"single", "conditioned"} <= set(c.scores) and set(c.curves) == {"greedy", "random"}
    seeds = c.extra["random_seed_curves"]
    assert c.curves["random"] == pytest.approx([(a + b) / 2 for a, b in zip(seeds["0"], seeds["1"])])
    names = {p.name for p in out.iterdir()}
    assert {"fig1_hellaswag.html", "fig4_single_head_losses.html", "fig5_layer_conditioned_losses.html",
            "fig6_loss_curves.html", "fig7_samples_vs_all_docs.html", "fig8_jaccard_similarity.html",
            "fig9_circuit_patterns.html", "fig2a_overlap_rate.html", "README.md"} <= names
    assert not list((out / "circuits").glob("*.partial.json"))  # checkpoints go once a task is done
    readme = (out / "README.md").read_text()
    assert "circuitlab reproduce X" in readme and "hellaswag: no training split offline" in readme
    assert "Not run yet: boolq" in readme
    saved = Circuit.load(out / "circuits" / "hellaswag.json")
    assert saved.head_list == c.head_list and saved.extra["all_docs"] == c.extra["all_docs"]


def test_all_docs_curve_matches_independent_computations(run, model, data_dir):
    """The all-docs baseline equals the scoring module's target losses; its end point the plain
    algorithm's loss with every layer's circuit heads masked."""
    c = run[0].circuits["hellaswag"]
    every = c.extra["all_docs"]
    docs = load_docs(get_task("hellaswag"), "validation", data_dir, limit=CONFIG.all_docs)
    assert every["n_docs"] == len(docs) == 4 and len(every["loss_curve"]) == model.n_layers
    unmasked = [s.target_loss for s in score_docs(model, docs, progress=False)]
    assert every["baseline_loss"] == pytest.approx(sum(unmasked) / len(unmasked), rel=1e-4)
    plain = PlainEvaluator(model, [Sample(d.prompt, d.target, d.index) for d in docs])
    assert every["loss_curve"][-1] == pytest.approx(plain.loss(HeadMask.of(c.heads)), rel=1e-4)
    assert every["loss_curve"][0] == pytest.approx(plain.loss(HeadMask.of({0: c.heads[0]})), rel=1e-4)


def test_rerun_skips_finished_tasks(run, model, data_dir):
    result, out, _ = run
    path = out / "circuits" / "capitals.json"
    before = path.stat().st_mtime_ns
    logs = []
    again = rp.reproduce(model, ["capitals"], data_dir, out, CONFIG, png=False, progress=False, log=logs.append)
    assert path.stat().st_mtime_ns == before and any("skipped" in line for line in logs)
    assert again.circuits["capitals"].to_dict() == result.circuits["capitals"].to_dict()


def test_killed_task_resumes_with_the_same_result(run, model, data_dir, tmp_path, monkeypatch):
    real = rp.all_docs_curve

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after all three strategies, before the task's JSON

    monkeypatch.setattr(rp, "all_docs_curve", killed)
    with pytest.raises(KeyboardInterrupt):
        rp.reproduce_task(model, "capitals", data_dir, tmp_path, CONFIG, progress=False, log=lambda s: None)
    assert len(list((tmp_path / "circuits").glob("capitals.*.partial.json"))) == 3
    assert not (tmp_path / "circuits" / "capitals.json").exists()
    monkeypatch.setattr(rp, "all_docs_curve", real)
    resumed = rp.reproduce_task(model, "capitals", data_dir, tmp_path, CONFIG, progress=False, log=lambda s: None)
    assert resumed.extra["resumed_steps"] > 0
    full = run[0].circuits["capitals"]
    assert resumed.heads == full.heads and resumed.samples == full.samples
    for a, b in ((resumed.scores, full.scores), (resumed.curves, full.curves), (resumed.loss_curve, full.loss_curve),
                 (resumed.extra["all_docs"]["loss_curve"], full.extra["all_docs"]["loss_curve"])):
        assert numbers(a) == pytest.approx(numbers(b), rel=1e-6)  # CPU matmuls may differ in the last bit


def numbers(x) -> list[float]:
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in numbers(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in numbers(item)]
    return [x]


def test_changed_settings_are_not_reused(run, model, data_dir):
    _, out, _ = run
    key = CONFIG.key(model, "capitals", "train")
    assert rp.finished(out / "circuits" / "capitals.json", key) is not None
    other = rp.ReproduceConfig(**{**CONFIG.__dict__, "samples": 5}).key(model, "capitals", "train")
    assert rp.finished(out / "circuits" / "capitals.json", other) is None


def test_cli_bad_input(tmp_path, capsys):
    assert main(["reproduce", "--model", "tiny-llama", "--tasks", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--samples", "0",
                 "--out", str(tmp_path)]) == 2
    assert "--samples must be a positive number" in capsys.readouterr().err
    assert main(["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--seeds", "a,b",
                 "--out", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())


def test_summary_table_reads_the_circuits(run):
    circuits = run[0].circuits
    table = rp.summary_table(list(circuits.values()))
    for name, c in circuits.items():
        row = table.loc[name]
        assert row["unmasked"] == c.baseline_loss and row["layer-conditioned"] == c.loss_curve[-1]
        assert row["greedy"] == c.curves["greedy"][-1] and row["random (mean)"] == c.curves["random"][-1]
        for column, other in (("above greedy", c.curves["greedy"]), ("above random", c.curves["random"])):
            above = [k for k in range(len(other)) if c.loss_curve[k] > other[k]]
            assert row[column] == f"{len(above)}/{c.model.n_layers}"
