"""`merge` and `export` of the LoRA family (lora, dora, circuit-lora): the merged stock model and the exported
adapter give the logits of the adapter on its base model, computed by PEFT unmerged."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from circuitlab.finetune import finetune
from circuitlab.models import load_hf
from tests.finetune.common import cfg
from tests.helpers import IDS, one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def stock_adapter(directory, **lora) -> torch.Tensor:
    """A PEFT LoRA on tiny-llama with random A and B (B is zero when trained from scratch), saved; its logits."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], **lora)
    pm = get_peft_model(load_hf("tiny-llama")[0], config)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                randomize_(p)
        want = pm(input_ids=IDS).logits
    pm.save_pretrained(directory)
    return want


def randomize_(p, g=torch.Generator().manual_seed(3)):
    p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def unmerged(directory) -> torch.Tensor:
    with torch.no_grad():
        return PeftModel.from_pretrained(load_hf("tiny-llama")[0], str(directory)).eval()(input_ids=IDS).logits


def merged_logits(directory) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert not any("lora" in n for n, _ in model.named_parameters())  # a stock model, nothing of PEFT left
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("kind,lora", [("dora", {"use_dora": True}),
                                       ("circuit-lora", {"rank_pattern": {"layers.1.self_attn.o_proj": 8,
                                                                          "layers.2.mlp.down_proj": 2}})])
def test_a_stock_adapter_merges_and_exports_exactly(kind, lora, tmp_path, capsys):
    want = stock_adapter(tmp_path / "adapter", **lora)
    code, out, err = run_cli(capsys, "merge", tmp_path / "adapter", "--out", tmp_path / "merged", "--model",
                             "tiny-llama")
    assert code == 0, err
    torch.testing.assert_close(merged_logits(tmp_path / "merged"), want, atol=1e-4, rtol=1e-4)
    code, _, err = run_cli(capsys, "export", tmp_path / "adapter", "--out", tmp_path / "exported", "--lora")
    assert code == 0, err
    for where in (tmp_path / "exported", tmp_path / "exported" / "lora"):
        torch.testing.assert_close(unmerged(where), want)


def test_a_lora_run_merges_onto_the_model_it_trained(tmp_path, capsys):
    run = tmp_path / "run"
    finetune("tiny-llama", cfg(method="lora", lr=5e-2, eval_limit=2), run, progress=False)
    want = unmerged(run / "adapter")
    assert not torch.allclose(want, load_hf("tiny-llama")[0](input_ids=IDS).logits)  # it trained: B is not zero
    code, _, err = run_cli(capsys, "merge", run, "--out", tmp_path / "merged")  # the base model read from the run
    assert code == 0, err
    torch.testing.assert_close(merged_logits(tmp_path / "merged"), want, atol=1e-4, rtol=1e-4)
    one_line_error(capsys, ["merge", run, "--out", tmp_path / "merged"], "already exists and is not empty")
    one_line_error(capsys, ["merge", run, "--out", tmp_path / "gqa", "--model", "tiny-llama-gqa"], "adapter")
    assert not (tmp_path / "gqa").exists()
