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


def test_an_adapters_result_records_and_prints_what_it_ran_with(lora_run, tmp_path, capsys):
    """Its kind, name and fingerprint are in the result's identity and its summary line, so its score is never
    taken for the base model's; a copy of its files is the same adapter, changed weights are another."""
    import shutil

    from circuitlab.headmap.dirs import AdapterDir
    from tests.helpers import run_cli

    run, _ = lora_run
    out = tmp_path / "a.json"
    code, stdout, _ = run_cli(capsys, "eval", "--model", "tiny-llama", "--task", "capitals", "--limit", "3",
                              "--adapter", run, "--out", out)
    doc = json.loads(out.read_text())
    record = doc["adapter"]
    assert code == 0 and record["kind"] == "lora" and record["name"] == str(run) and doc["made_from"]["adapter"] == record
    assert f"lora adapter {run} ({record['fingerprint']})" in stdout
    with pytest.raises(CircuitlabError, match="differs in: adapter"):  # the base model's score into the same file
        evaluate_task("tiny-llama", "capitals", EvalConfig(limit=3), out=out, progress=False)

    copy = tmp_path / "copy"
    shutil.copytree(run / "adapter", copy)
    assert AdapterDir.read(copy).record == {"kind": "lora", "name": str(copy), "fingerprint": record["fingerprint"]}
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    dora = AdapterDir.read(copy).record
    assert dora["kind"] == "dora" and dora["fingerprint"] != record["fingerprint"]
    (copy / "adapter_config.json").write_text(json.dumps(config))
    weights = bytearray((copy / "adapter_model.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "adapter_model.safetensors").write_bytes(bytes(weights))
    assert AdapterDir.read(copy).record["fingerprint"] != record["fingerprint"]


def test_an_adapters_files_are_parsed_once_per_evaluation(lora_run, tmp_path, monkeypatch):
    """`eval --adapter` reads the adapter directory once into one record (`AdapterDir`) and hands it on: its config
    file and its run's result.json are each parsed once, for the checks, the result's record and the loading alike
    (PEFT's own read of adapter_config.json when it loads the weights is PEFT's, not counted here)."""
    from pathlib import Path

    from tests.headmap.test_adapter import legacy

    reads: list[str] = []
    read_text = Path.read_text

    def counting(self, *args, **kwargs):
        reads.append(self.name)
        return read_text(self, *args, **kwargs)

    run, _ = lora_run
    monkeypatch.setattr(Path, "read_text", counting)
    result = evaluate_task("tiny-llama", "capitals", EvalConfig(adapter=str(run), limit=3), progress=False)
    assert result.adapter["kind"] == "lora"
    assert (reads.count("adapter_config.json"), reads.count("result.json")) == (1, 1)

    monkeypatch.setattr(Path, "read_text", read_text)
    directory, _ = legacy(tmp_path, "hs")  # circuitlab's earlier format
    reads.clear()
    monkeypatch.setattr(Path, "read_text", counting)
    result = evaluate_task("tiny-llama", "capitals", EvalConfig(adapter=str(directory), limit=3), progress=False)
    assert result.adapter["kind"] == "headmap-hs"
    assert reads.count("headmap_config.json") == 1
