"""benchmarks/checkpoint.py at a small shape: a sharded checkpoint that stock transformers loads, whose weights are
the script's seeded tensors and whose tokenizer has exactly the shape's vocabulary; and circuitlab loads it
dispatched with part of it on disk, recording the model by its directory's name."""

import json

import pytest
import torch


def test_a_small_sharded_checkpoint_loads_as_written(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "cpu-small-random"
    info = checkpoint.write_checkpoint("cpu-small", out, layers=2, shard_bytes=8_000_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert info["shards"] > 1 and len(set(index["weight_map"].values())) == info["shards"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    state = model.state_dict()
    assert set(index["weight_map"]) == set(state)
    for name in ("model.layers.1.self_attn.q_proj.weight", "lm_head.weight", "model.norm.weight"):
        torch.testing.assert_close(state[name], checkpoint.tensor_for(name, tuple(state[name].shape), torch.bfloat16, 0),
                                   rtol=0, atol=0)
    assert abs(state["model.layers.0.mlp.up_proj.weight"].float().std().item() - 0.02) < 1e-3
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == model.config.vocab_size == 32000
    assert max(tok("The capital of France is Paris").input_ids) < 32000
    with pytest.raises(SystemExit):
        checkpoint.write_checkpoint("cpu-small", out, layers=2)  # never over an existing directory


def test_a_larger_vocabulary_is_reserved_tokens(checkpoint, tmp_path):
    tok = checkpoint.resized_tokenizer(50000, tmp_path)
    assert len(tok) == 50000 and tok.convert_ids_to_tokens(49999) == "<|reserved_special_token_847|>"


def test_circuitlab_runs_it_partly_offloaded_to_disk(checkpoint, tmp_path):
    from circuitlab.circuits.circuit import ModelInfo
    from circuitlab.models import load_model

    out = tmp_path / "cpu-small-random"
    checkpoint.write_checkpoint("cpu-small", out, layers=2, dtype=torch.float32)
    plain = load_model(str(out))
    dispatched = load_model(str(out), device=None, device_map="sequential", max_memory="cpu=20MB")
    assert "disk" in set(dispatched.hf_model.hf_device_map.values())
    assert ModelInfo.of(dispatched).name == "cpu-small-random"
    ids = plain.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(dispatched.hf_model(ids).logits, plain.hf_model(ids).logits, rtol=0, atol=0)
