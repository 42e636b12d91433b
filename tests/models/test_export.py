"""`export-model` writes a directory other tools load, whatever their transformers version."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from circuitlab.models import load_plain
from circuitlab.models.export import export_model, save_model


def test_the_exported_config_carries_rope_theta_for_transformers_4(tmp_path):
    """transformers 5 writes `rope_parameters` only, and transformers 4 runs RoPE at its default base 10,000
    without `rope_theta` (found when the EAP-IG library's scores on an exported SmolLM2, base 100,000, did
    not match). The legacy key is written; transformers 5 reads the same parameters back."""
    tok = load_plain("tiny-llama").tokenizer
    hf = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                      vocab_size=len(tok), rope_parameters={"rope_type": "default",
                                                                             "rope_theta": 500_000.0}))
    save_model(hf, tok, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["rope_theta"] == 500_000.0
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.rope_parameters == hf.config.rope_parameters


def test_the_exported_tokenizer_names_a_class_transformers_4_and_5_both_know(tmp_path):
    """transformers 5 records `TokenizersBackend`, which transformers 4 cannot load (found running the EAP-IG
    library on an exported model); both know `PreTrainedTokenizerFast`, and it tokenizes as before."""
    out = export_model("tiny-llama", tmp_path / "m")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    text = "Question: What is the capital of France?\nAnswer: Paris"
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == load_plain("tiny-llama").tokenizer(text).input_ids
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
