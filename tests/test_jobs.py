"""The job layer without the CLI: each job is one library call that takes a model by name, checks its inputs, loads
the model, runs, writes its result, and on a second call with the same settings hands back what it wrote."""

import json

import pytest

import circuitlab as cl
from circuitlab.finetune import finetune

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = [{"clean": "12 + 5 =", "corrupted": "12 - 5 =", "answer": " 17"},
         {"clean": "31 + 40 =", "corrupted": "31 - 40 =", "answer": " 71"}]


def test_locate_task(tmp_path):
    config, sampling = cl.LocateConfig(n_per_layer=1), cl.SampleConfig(n=3, max_docs=12)
    circuit = cl.locate_task("tiny-llama", "capitals", sampling=sampling, config=config, out=tmp_path / "c.json")
    assert circuit.source == tmp_path / "c.json" and len(circuit.samples) <= 3 and len(circuit.heads) == 4
    again = cl.locate_task("tiny-llama", "capitals", sampling=sampling, config=config, out=tmp_path / "c.json")
    assert again.to_dict() == circuit.to_dict()


def test_edges_task(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    config = cl.EdgesConfig(method="eap", top_n=20)
    circuit = cl.edges_task(cl.ModelConfig(model="tiny-llama"), pairs_file=pairs, config=config, out=tmp_path / "e.json")
    assert circuit.n_edges <= 20 and (tmp_path / "e.safetensors").is_file()
    assert cl.edges_task("tiny-llama", pairs_file=pairs, config=config, out=tmp_path / "e.json").made_from == circuit.made_from


def test_finetune_and_track(tmp_path):
    config = cl.TrainConfig(model="tiny-llama", task="capitals", method="lora", rank=4, batch_size=4, epochs=1,
                            max_train=8, eval_limit=4, warmup_steps=0)
    result = finetune("tiny-llama", config, tmp_path / "run", options=cl.RunOptions(save_every=1), progress=False)
    assert result.train.steps == 2 and (tmp_path / "run" / "result.json").is_file()
    assert finetune("tiny-llama", config, tmp_path / "run", progress=False) == result
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    track = cl.track(tmp_path / "run", tmp_path / "track", pairs_file=pairs, config=cl.EdgesConfig(method="eap"),
                     png=False, progress=False, log=lambda line: None)
    assert [s.step for s in track.steps] == [0, 1, 2] and (tmp_path / "track" / "track.json").is_file()


def test_evaluate_task(tmp_path):
    result = cl.evaluate_task("tiny-llama", "capitals", cl.EvalConfig(limit=5), out=tmp_path / "r.json")
    assert result.n_docs == 5 and json.loads((tmp_path / "r.json").read_text())["metrics"] == result.metrics


def test_reproduce(tmp_path):
    config = cl.ReproduceConfig(samples=2, heads_per_layer=1, max_docs=8, all_docs=3, random_seeds=(0,))
    result = cl.reproduce("tiny-llama", "capitals", None, tmp_path, config, png=False, progress=False,
                          log=lambda line: None)
    assert set(result.circuits) == {"capitals"} and result.readme.is_file()
    assert (tmp_path / "circuits" / "capitals.json").is_file()
    assert not (tmp_path / "circuits" / "capitals.json.partial").exists()
