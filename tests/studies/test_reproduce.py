"""The pipeline on the tiny model: its numbers agree with independent computations, and it resumes."""


import pytest

from circuitlab.studies import reproduce as rp
from circuitlab.core.errors import CircuitlabError
from circuitlab.studies.config import PAPER_TASKS, ReproduceConfig, locating_split, parse_tasks
from circuitlab.studies.jobs import reproduce
from circuitlab.circuits.circuit import Circuit, Sample
from circuitlab.cli import main
from circuitlab.locate import LocateConfig, PlainEvaluator, locate
from circuitlab.report.readme import summary_table
from circuitlab.circuits.heads import HeadMask
from circuitlab.models import load_model
from circuitlab.evaluate.scoring import score_docs
from circuitlab.tasks import get_task, load_docs

CONFIG = ReproduceConfig(samples=3, heads_per_layer=1, max_docs=16, all_docs=4, random_seeds=(0, 1))


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def run(model, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    logs = []
    result = reproduce(model, ["capitals", "hellaswag"], data_dir, out, CONFIG, command="circuitlab reproduce X",
                          png=False, progress=False, log=logs.append)
    return result, out, logs


def test_locating_split(data_dir, tmp_path):
    for task in ("sst2", "hellaswag", "boolq", "capitals"):  # hellaswag and boolq have train splits now
        assert locating_split(task, data_dir) == "train"
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "validation.jsonl").write_text("")
    assert locating_split("boolq", tmp_path) == "validation"  # a data directory without one


def test_parse_tasks():
    assert parse_tasks("all") == PAPER_TASKS and len(PAPER_TASKS) == 13
    assert parse_tasks("sst2, piqa,sst2") == ("sst2", "piqa")
    with pytest.raises(CircuitlabError, match="unknown task"):
        parse_tasks("sst2,nope")


def test_outputs(run, model, data_dir):
    result, out, _ = run
    assert set(result.circuits) == {"capitals", "hellaswag"}
    c = result.circuits["hellaswag"]
    assert c.task.split == "train" and c.strategy == "layer-conditioned" and c.selected_by == "conditioned"
    assert {"single", "conditioned"} <= set(c.scores)
    assert [(s.strategy, s.seed) for s in c.selections] == [("greedy", None), ("random", 0), ("random", 1)]
    # The merged selections are what those strategies locate on the same samples.
    greedy = locate(model, c.samples, LocateConfig("greedy", n_per_layer=1), progress=False)
    assert c.selections[0].heads == greedy.heads and c.scores["single"] == greedy.scores["single"]
    assert c.selections[0].loss_curve == pytest.approx(greedy.loss_curve, rel=1e-6)
    rand = locate(model, c.samples, LocateConfig("random", n_per_layer=1, seeds=(1,)), progress=False)
    assert c.selections[2].heads == rand.heads
    names = {p.name for p in out.iterdir()}
    assert {"fig1_hellaswag.html", "fig4_single_head_losses.html", "fig5_layer_conditioned_losses.html",
            "fig6_loss_curves.html", "fig7_samples_vs_all_docs.html", "fig8_jaccard_similarity.html",
            "fig9_circuit_patterns.html", "fig2a_overlap_rate.html", "README.md"} <= names
    # Checkpoints and the strategies' own circuits go once a task is done.
    assert sorted(p.name for p in (out / "circuits").iterdir()) == ["capitals.json", "hellaswag.json"]
    assert {"overlap_rate.csv", "jaccard.csv"} <= {p.name for p in (out / "tables").iterdir()}
    readme = (out / "README.md").read_text()
    assert "circuitlab reproduce X" in readme and "Not run yet: boolq" in readme
    n_train = len(load_docs("hellaswag", "train", data_dir))  # the local split's rows, in the summary table
    assert f"| hellaswag | train | {n_train} | 16 |" in readme
    saved = Circuit.load(out / "circuits" / "hellaswag.json")
    assert saved.head_list == c.head_list and saved.all_docs == c.all_docs


def test_all_docs_curve_matches_independent_computations(run, model, data_dir):
    """The all-docs baseline equals the scoring module's target losses; its end point the plain
    algorithm's loss with every layer's circuit heads masked."""
    c = run[0].circuits["hellaswag"]
    every = c.all_docs
    docs = load_docs(get_task("hellaswag"), "train", data_dir, limit=CONFIG.all_docs)
    assert every.n_docs == len(docs) == 4 and len(every.loss_curve) == model.n_layers
    unmasked = [s.target_loss for s in score_docs(model, docs, progress=False)]
    assert every.baseline_loss == pytest.approx(sum(unmasked) / len(unmasked), rel=1e-4)
    plain = PlainEvaluator(model, [Sample(d.prompt, d.target, d.index) for d in docs])
    assert every.loss_curve[-1] == pytest.approx(plain.loss(HeadMask.of(c.heads)), rel=1e-4)
    assert every.loss_curve[0] == pytest.approx(plain.loss(HeadMask.of({0: c.heads[0]})), rel=1e-4)


def test_rerun_skips_finished_tasks(run, model, data_dir):
    result, out, _ = run
    path = out / "circuits" / "capitals.json"
    before = path.stat().st_mtime_ns
    logs = []
    again = reproduce(model, ["capitals"], data_dir, out, CONFIG, png=False, progress=False, log=logs.append)
    assert path.stat().st_mtime_ns == before and any("skipped" in line for line in logs)
    assert again.circuits["capitals"].to_dict() == result.circuits["capitals"].to_dict()


def test_killed_task_resumes_with_the_same_result(run, model, data_dir, tmp_path, monkeypatch):
    real = rp.all_docs_curve

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after all three strategies, before the task's JSON

    monkeypatch.setattr(rp, "all_docs_curve", killed)
    with pytest.raises(KeyboardInterrupt):
        rp.reproduce_task(model, "capitals", data_dir, tmp_path, CONFIG, progress=False, log=lambda s: None)
    parts = sorted(p.name for p in (tmp_path / "circuits" / "capitals.json.partial").iterdir())
    assert parts == ["greedy.json", "layer-conditioned.json", "random.json", "state.json"]
    monkeypatch.setattr(rp, "all_docs_curve", real)
    logs = []
    resumed = rp.reproduce_task(model, "capitals", data_dir, tmp_path, CONFIG, progress=False, log=logs.append)
    assert sum("reused" in line for line in logs) == 3  # no strategy located again
    full = run[0].circuits["capitals"]
    assert resumed.heads == full.heads and resumed.samples == full.samples
    curves = lambda c: [s.loss_curve for s in c.selections]  # noqa: E731
    for a, b in ((resumed.scores, full.scores), (curves(resumed), curves(full)), (resumed.loss_curve, full.loss_curve),
                 (resumed.all_docs.loss_curve, full.all_docs.loss_curve)):
        assert numbers(a) == pytest.approx(numbers(b), rel=1e-6)  # CPU matmuls may differ in the last bit


def numbers(x) -> list[float]:
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in numbers(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in numbers(item)]
    return [x]


def test_changed_settings_are_refused_not_overwritten(run, model, data_dir):
    _, out, _ = run
    path = out / "circuits" / "capitals.json"
    before = path.read_bytes()
    other = ReproduceConfig(**{**CONFIG.__dict__, "samples": 5})
    with pytest.raises(CircuitlabError, match="capitals.json holds a capitals circuit made with other settings "
                                              r"\(differs in: samples\)"):
        reproduce(model, ["capitals"], data_dir, out, other, png=False, progress=False, log=lambda s: None)
    assert path.read_bytes() == before


def test_cli_bad_input(tmp_path, capsys):
    assert main(["reproduce", "--model", "tiny-llama", "--tasks", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--samples", "0",
                 "--out", str(tmp_path)]) == 2
    assert "--samples must be a positive integer" in capsys.readouterr().err
    assert main(["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--seeds", "a,b",
                 "--out", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())


def test_summary_table_reads_the_circuits(run):
    circuits = run[0].circuits
    table = summary_table(list(circuits.values()))
    for name, c in circuits.items():
        row = table.loc[name]
        greedy = c.selections[0].loss_curve
        rand = [(a + b) / 2 for a, b in zip(c.selections[1].loss_curve, c.selections[2].loss_curve)]
        assert row["unmasked"] == c.baseline_loss and row["layer-conditioned"] == c.loss_curve[-1]
        assert row["greedy"] == greedy[-1] and row["random (mean)"] == pytest.approx(rand[-1])
        for column, other in (("above greedy", greedy), ("above random", rand)):
            above = [k for k in range(len(other)) if c.loss_curve[k] - other[k] > 1e-5 * abs(other[k])]
            assert row[column] == f"{len(above)}/{c.model.n_layers}"


def test_a_point_within_float_rounding_is_not_above():
    """Layer 0 of layer-conditioned and greedy masks the same heads: its two losses differ by rounding alone
    (up to 9.7e-7 of the loss in figures/smollm2-135m; 2e-6 here), and the count must not turn on which way it
    rounded."""
    from circuitlab.report.readme import _points_above

    assert _points_above([1.0 + 2e-6, 5.0, 9.0], [1.0, 4.0, 9.5]) == "1/3"
    assert _points_above([1.0 - 2e-6, 5.0, 9.0], [1.0, 4.0, 9.5]) == "1/3"
    assert _points_above([1.001, 5.0, 9.6], [1.0, 4.0, 9.5]) == "3/3"


def test_redraw_draws_again_from_the_circuits_without_a_model(run, data_dir, tmp_path, monkeypatch):
    """`--redraw` after an upgrade: the same figures and tables from the circuits in OUT, no model loaded; a
    circuit with no recorded settings is used and named; one with other settings is refused."""
    import json
    import shutil

    _, out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out / "circuits", copy / "circuits")
    doc = json.loads((copy / "circuits" / "hellaswag.json").read_text())
    doc.pop("run")  # as circuits from before they recorded their settings
    (copy / "circuits" / "hellaswag.json").write_text(json.dumps(doc))
    monkeypatch.setattr(rp, "as_bridged", lambda *a, **k: pytest.fail("redraw loaded a model"))
    result = reproduce("tiny-llama", ["capitals", "hellaswag"], data_dir, copy, CONFIG, command="X --redraw",
                       png=False, progress=False, log=lambda s: None, redraw=True)
    drawn = sorted(p.name for p in copy.iterdir() if p.suffix == ".html")
    assert drawn == sorted(p.name for p in out.iterdir() if p.suffix == ".html")
    for table in sorted((out / "tables").glob("*.csv")):
        assert (copy / "tables" / table.name).read_text() == table.read_text()
    readme = result.readme.read_text()
    assert "X --redraw" in readme and "those of hellaswag were made by an earlier circuitlab" in readme
    with pytest.raises(CircuitlabError, match=r"other settings \(differs in: samples\)"):
        reproduce("tiny-llama", ["capitals"], data_dir, copy, ReproduceConfig(**{**CONFIG.__dict__, "samples": 5}),
                  png=False, progress=False, log=lambda s: None, redraw=True)
    with pytest.raises(CircuitlabError, match=r"located on tiny-llama \(tiny-llama\), not on tiny-llama-gqa"):
        reproduce("tiny-llama-gqa", ["capitals"], data_dir, copy, CONFIG, png=False, progress=False,
                  log=lambda s: None, redraw=True)
    with pytest.raises(CircuitlabError, match="is missing: run without --redraw"):
        reproduce("tiny-llama", ["capitals", "boolq"], data_dir, tmp_path / "empty", CONFIG, png=False,
                  progress=False, log=lambda s: None, redraw=True)


@pytest.mark.parametrize("extra", [[], ["--no-png"], ["--plotlyjs", "inline", "--redraw"], ["--samples", "5", "--dtype",
                                                                                               "bfloat16", "--no-png"]])
def test_the_readmes_command_parses_back_to_the_same_options(extra):
    """What the README records as the command that reproduces a run: the same options, every one that was given
    (figure options included); only the device is left out."""
    import shlex

    from circuitlab.cli import build_parser
    from circuitlab.cli.studies import command_line

    args = build_parser().parse_args(["reproduce", "--model", "tiny-llama", "--tasks", "capitals", "--out", "o",
                                      "--device", "cpu", *extra])
    again = build_parser().parse_args(shlex.split(command_line(args))[1:])
    assert {**vars(args), "device": None} == {**vars(again), "device": None}
