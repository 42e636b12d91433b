"""`circuitlab lm-eval-tasks`: lm-eval, run on the task files it writes, scores every document exactly as
`circuitlab eval` (same requests, log-likelihoods, predictions and metrics), on the tiny random model."""

from __future__ import annotations

import json

import pytest

from circuitlab.cli import main
from circuitlab.evaluate import evaluate
from circuitlab.evaluate.scoring import first_argmax
from circuitlab.tasks import TASK_NAMES, get_task, load_docs
from tests.helpers import one_line_error, run_cli

LIMIT = 3  # documents per task that lm-eval scores (every document is compared as text)


@pytest.fixture(scope="module")
def written(tmp_path_factory, data_dir):
    """Every task's files, and tiny-llama saved as a plain HF directory for lm-eval's `hf` model."""
    from circuitlab.models import load_hf

    root = tmp_path_factory.mktemp("lmeval")
    model, tok = load_hf("tiny-llama")  # the same seeded weights as load_model("tiny-llama")
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    assert main(["lm-eval-tasks", "--data-dir", str(data_dir), "--out", str(root / "tasks")]) == 0
    return root


def _manager(written):
    return pytest.importorskip("lm_eval.tasks").TaskManager(include_path=str(written / "tasks"),
                                                           include_defaults=False)


@pytest.fixture(scope="module")
def lm_eval_run(written):
    """lm-eval run on the first LIMIT documents of every task."""
    lm_eval = pytest.importorskip("lm_eval")
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={written / 'model'},dtype=float32", device="cpu", batch_size=8,
            tasks=[f"circuitlab_{t}" for t in TASK_NAMES], limit=LIMIT, log_samples=True, bootstrap_iters=0,
            task_manager=_manager(written),
        )
    finally:
        torch.set_num_threads(n)


def test_lm_eval_reads_every_doc_of_every_task_as_circuitlab(written, data_dir):
    """The whole evaluation split of every task, through lm-eval's own loading and `process_docs`."""
    manager = _manager(written)
    from lm_eval.tasks import get_task_dict

    tasks = get_task_dict([f"circuitlab_{n}" for n in TASK_NAMES], manager)
    for name in TASK_NAMES:
        task = tasks[f"circuitlab_{name}"]
        theirs = [(d["index"], task.doc_to_text(d), tuple(task.doc_to_choice(d)), task.doc_to_target(d))
                  for d in task.eval_docs]
        ours = [(d.index, d.prompt, d.choices, d.gold) for d in load_docs(name, get_task(name).eval_split, data_dir)]
        assert theirs == ours, name


def _loglikelihoods(sample: dict) -> list[float]:
    """One float per choice from lm-eval's logged responses ([[(ll, is_greedy)], ...])."""
    return [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in sample["resps"]]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_lm_eval_scores_every_doc_as_circuitlab_eval(lm_eval_run, tiny, data_dir, name, one_thread):
    ours = evaluate(tiny, name, data_dir=data_dir, limit=LIMIT, progress=False)
    docs = load_docs(name, get_task(name).eval_split, data_dir, limit=LIMIT)
    samples = sorted(lm_eval_run["samples"][f"circuitlab_{name}"], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(LIMIT))
    for sample, pred, doc in zip(samples, ours.predictions, docs):
        # the same strings: context = circuitlab's prompt, continuation = its choice (leading space and all)
        assert [tuple(a) for a in sample["arguments"]] == [(doc.prompt, c) for c in doc.choices]
        lls = _loglikelihoods(sample)
        assert lls == pytest.approx(pred.logprobs, abs=1e-4, rel=0)
        assert first_argmax(lls) == pred.pred and int(sample["target"]) == pred.gold == doc.gold
    theirs = lm_eval_run["results"][f"circuitlab_{name}"]
    for metric, value in ours.metrics.items():
        assert theirs[f"{metric},none"] == pytest.approx(value, abs=1e-12), metric


def test_writes_every_task_and_lm_eval_indexes_them(capsys, data_dir, tmp_path):
    lm_eval_tasks = pytest.importorskip("lm_eval.tasks")

    code, out, _ = run_cli(capsys, "lm-eval-tasks", "--data-dir", data_dir, "--out", tmp_path / "t")
    assert code == 0 and "circuitlab_capitals" in out
    names = {f"circuitlab_{n}" for n in TASK_NAMES}
    assert {p.stem for p in (tmp_path / "t").glob("*.yaml")} == names
    manager = lm_eval_tasks.TaskManager(include_path=str(tmp_path / "t"), include_defaults=False)
    assert names <= set(manager.all_tasks) and "circuitlab" in manager.all_tasks
    # data from the data directory, the packaged task's rows beside the YAMLs
    assert str(data_dir.resolve() / "siqa" / "validation.jsonl") in (tmp_path / "t" / "circuitlab_siqa.yaml").read_text()
    rows = [json.loads(x) for x in (tmp_path / "t" / "data" / "capitals" / "validation.jsonl").read_text().splitlines()]
    assert len(rows) == len(load_docs("capitals", "validation"))
    # a rerun replaces the files and keeps what else is in the directory
    (tmp_path / "t" / "mine.txt").write_text("keep")
    assert run_cli(capsys, "lm-eval-tasks", "--data-dir", data_dir, "--tasks", "rte", "--out", tmp_path / "t")[0] == 0
    assert (tmp_path / "t" / "mine.txt").read_text() == "keep"


def test_without_data_dir_the_tasks_read_the_hub_dataset(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("CIRCUITLAB_DATA", raising=False)
    assert run_cli(capsys, "lm-eval-tasks", "--tasks", "boolq,capitals", "--out", tmp_path / "t")[0] == 0
    text = (tmp_path / "t" / "circuitlab_boolq.yaml").read_text()
    assert 'dataset_path: "super_glue"' in text and 'dataset_name: "boolq"' in text
    assert "dataset_path: json" in (tmp_path / "t" / "circuitlab_capitals.yaml").read_text()


def test_f1_and_mcc_aggregate_as_circuitlab():
    from circuitlab.evaluate import compute_metrics
    from circuitlab.evaluate.lmeval import f1, mcc
    from circuitlab.evaluate.scoring import DocScore

    pairs = [(0, 0), (0, 1), (1, 1), (1, 0), (0, 0), (1, 1), (1, 1)]  # (gold index, predicted index)
    scores = [DocScore(i, [0.0, 0.0], [1, 1], [4, 3], g, p, p) for i, (g, p) in enumerate(pairs)]
    assert f1(pairs) == compute_metrics(get_task("mrpc"), scores)["f1"]
    assert mcc(pairs) == compute_metrics(get_task("cola"), scores)["mcc"]


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--tasks", "sst2,nope", "--data-dir", "{data}"], "--tasks has unknown task 'nope'"),
        (["--tasks", "sst2", "--data-dir", "{tmp}/missing"], "does not exist"),
        (["--tasks", "sst2", "--data-dir", "{tmp}/empty"], "no 'validation' split"),
        (["--tasks", "boolq", "--split", "test", "--data-dir", "{data}"], "no 'test' split"),
        (["--tasks", "capitals", "--split", "test"], "no 'test' split"),
        (["--tasks", "sst2", "--data-dir", "{tmp}/bad"], "missing field 'sentence'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, data_dir, tmp_path, argv, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad" / "sst2").mkdir(parents=True)
    (tmp_path / "bad" / "sst2" / "validation.jsonl").write_text('{"label": 1}\n')
    argv = [a.format(data=data_dir, tmp=tmp_path) for a in argv]
    one_line_error(capsys, ["lm-eval-tasks", *argv, "--out", tmp_path / "out"], fragment)
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_one_line(capsys, data_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["lm-eval-tasks", "--data-dir", data_dir, "--out", tmp_path / "file"], "is a file")
    one_line_error(capsys, ["lm-eval-tasks", "--data-dir", data_dir, "--out", tmp_path / "file" / "sub"],
                   "cannot be created")
    assert (tmp_path / "file").read_text() == "x"


def test_the_peft_adapters_among_lm_evals_model_arguments_are_found_in_every_spelling():
    from circuitlab.evaluate.lmeval import peft_args

    assert peft_args(["run", "--model_args", "pretrained=B,peft=A1", "--tasks", "t"]) == ["A1"]
    assert peft_args(["run", "-a", "pretrained=B", "peft=A2", "dtype=float32", "--tasks", "t"]) == ["A2"]
    assert peft_args(["run", "--model_args=pretrained=B,peft=A3"]) == ["A3"]
    assert peft_args(["run", "--model_args", '{"pretrained": "B", "peft": "A4"}']) == ["A4"]
    assert peft_args(["run", "--model_args", "pretrained=B", "--tasks", "peft=x"]) == []  # not a model argument
    assert peft_args(["run", "--model_args", "{not json"]) == []
