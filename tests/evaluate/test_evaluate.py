import json

import pytest

from circuitlab.evaluate import compute_metrics, evaluate, f1_binary, matthews_corrcoef
from circuitlab.evaluate.scoring import DocScore
from circuitlab.tasks import get_task, load_docs


def lm_eval_per_doc(model, docs, tmp_path):
    """Run lm-evaluation-harness itself on the same model and documents (a task from a local file)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"prompt": d.prompt, "choices": list(d.choices), "gold": d.gold}) + "\n" for d in docs))
    task = {
        "task": "circuitlab_agreement",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": "",  # our choices carry their leading space
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    }
    lm = HFLM(pretrained=model.hf_model, tokenizer=model.tokenizer, batch_size=4)
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], log_samples=True)
    rows = sorted(out["samples"]["circuitlab_agreement"], key=lambda r: r["doc_id"])
    return rows, out["results"]["circuitlab_agreement"]


@pytest.mark.parametrize(
    "model_fixture,task,split,n",
    [("tiny", "arc_easy", "test", 12), pytest.param("smollm2", "piqa", "validation", 6, marks=pytest.mark.smollm2)],
)
def test_agrees_with_lm_evaluation_harness_doc_by_doc(request, model_fixture, task, split, n, data_dir, tmp_path):
    model = request.getfixturevalue(model_fixture)
    docs = load_docs(task, split, data_dir, limit=n)
    result = evaluate(model, task, data_dir, split=split, limit=n, progress=False)
    rows, metrics = lm_eval_per_doc(model, docs, tmp_path)
    assert len(rows) == len(result.predictions) == n
    for ours, theirs in zip(result.predictions, rows):
        theirs_ll = [float(r[0][0]) for r in theirs["resps"]]
        assert ours.logprobs == pytest.approx(theirs_ll, abs=1e-4)
        assert (ours.pred == ours.gold) == bool(theirs["acc"])
        assert (ours.pred_norm == ours.gold) == bool(theirs["acc_norm"])
    assert result.metrics["acc"] == pytest.approx(metrics["acc,none"])
    assert result.metrics["acc_norm"] == pytest.approx(metrics["acc_norm,none"])


def test_mcc_and_f1_match_scikit_learn():
    from sklearn.metrics import f1_score, matthews_corrcoef as sk_mcc

    gold = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    pred = [1, 0, 0, 1, 1, 0, 1, 1, 1, 0]
    assert matthews_corrcoef(gold, pred) == pytest.approx(sk_mcc(gold, pred))
    assert f1_binary(gold, pred, positive=1) == pytest.approx(f1_score(gold, pred))
    assert matthews_corrcoef([1, 1], [1, 1]) == 0.0


def test_cola_reports_mcc_on_yes_as_positive():
    # choice 0 is " yes" (label 1): gold index 0 means acceptable
    scores = [
        DocScore(index=i, logprobs=[0, 0], n_tokens=[1, 1], char_lens=[4, 3], gold=g, pred=p, pred_norm=p)
        for i, (g, p) in enumerate([(0, 0), (0, 1), (1, 1), (1, 1), (0, 0)])
    ]
    m = compute_metrics(get_task("cola"), scores)
    assert m["acc"] == pytest.approx(0.8)
    assert m["mcc"] == pytest.approx(matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]))
    assert "f1" in compute_metrics(get_task("mrpc"), scores)


def test_result_json_is_written(tiny, data_dir, tmp_path):
    result = evaluate(tiny, "rte", data_dir, limit=5, progress=False)
    path = result.save(tmp_path / "r.json")
    saved = json.loads(path.read_text())
    assert saved["n_docs"] == 5 and saved["split"] == "validation"
    assert len(saved["predictions"]) == 5 and set(saved["metrics"]) == {"acc", "acc_norm"}


def test_result_json_records_the_protocol(tiny, data_dir, tmp_path):
    official = evaluate(tiny, "hellaswag", data_dir, limit=3, progress=False, protocol="official")
    saved = json.loads(official.save(tmp_path / "o.json").read_text())
    assert saved["protocol"] == "official" and all(len(p["logprobs"]) == 5 for p in saved["predictions"])
    paper = json.loads(evaluate(tiny, "hellaswag", data_dir, limit=3, progress=False).save(tmp_path / "p.json").read_text())
    assert paper["protocol"] == "paper" and all(len(p["logprobs"]) == 4 for p in paper["predictions"])


def test_unknown_protocol_is_refused_by_name():
    from circuitlab.core.errors import ConfigError
    from circuitlab.evaluate import EvalConfig

    with pytest.raises(ConfigError, match="protocol"):
        EvalConfig(protocol="nope")
    with pytest.raises(ConfigError, match="paper, official"):
        evaluate(None, "rte", docs=[], protocol="nope")
