"""`eval --adapter`: a run's adapter scored again on the plain model, checked against the run's base model within a
dtype cast, and the caller's model left as it was."""

import json

import pytest
import torch

from circuitlab.core.errors import CircuitlabError
from circuitlab.evaluate import EvalConfig
from circuitlab.evaluate.job import evaluate_task
from circuitlab.finetune import finetune
from circuitlab.models import load_plain
from circuitlab.models.config import ModelConfig
from tests.finetune.common import cfg
from tests.helpers import IDS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("lora") / "run"
    result = finetune(load_plain("tiny-llama"), cfg(method="lora", lr=5e-2, eval_limit=6), run, progress=False)
    return run, result


def test_a_run_scored_again_gives_its_own_predictions_and_leaves_the_model_as_it_was(lora_run):
    run, result = lora_run
    model = load_plain("tiny-llama")
    with torch.no_grad():
        before = model.hf_model(IDS).logits
    again = evaluate_task(model, "capitals", EvalConfig(adapter=str(run), limit=6), progress=False)
    assert [p.pred for p in again.predictions] == result.eval.preds
    assert again.metrics == result.eval.metrics
    with torch.no_grad():
        assert torch.equal(model.hf_model(IDS).logits, before)  # the adapter's layers were taken out again
    assert not any("lora_" in name for name, _ in model.hf_model.named_parameters())


def test_the_base_check_tolerates_a_dtype_and_refuses_other_weights(lora_run, tmp_path):
    run, result = lora_run
    bf16 = evaluate_task(ModelConfig(model="tiny-llama", dtype="bfloat16"), "capitals",
                         EvalConfig(adapter=str(run), limit=6), progress=False)  # trained in float32
    assert len(bf16.predictions) == 6
    other = tmp_path / "other"
    (other / "adapter").mkdir(parents=True)
    for f in (run / "adapter").iterdir():
        (other / "adapter" / f.name).write_bytes(f.read_bytes())
    doc = json.loads((run / "result.json").read_text())
    key = sorted(k for k in doc["model"]["probe"] if not k.startswith("_"))[0]
    doc["model"]["probe"][key] = [x * 1.5 + 0.1 for x in doc["model"]["probe"][key]]  # as if other weights
    (other / "result.json").write_text(json.dumps(doc))
    with pytest.raises(CircuitlabError, match="weights differ"):
        evaluate_task("tiny-llama", "capitals", EvalConfig(adapter=str(other), limit=6), progress=False)
