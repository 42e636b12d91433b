"""Export, merge and PEFT LoRA: the ways to run one MHA adapter out of circuitlab give the same logits."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from circuitlab.cli import main
from circuitlab.core.errors import CircuitlabError
from circuitlab.finetune import TrainConfig, finetune
from circuitlab.headmap import HeadMapConfig, base_info, maps, register
from circuitlab.headmap.conversion import export, merge
from circuitlab.headmap.layer import HS_CANNOT_MERGE
from circuitlab.core.io import cache_dir
from circuitlab.models import load_hf, load_model, weight_fingerprint
from tests.helpers import IDS

pytestmark = pytest.mark.usefixtures("one_thread")
register()


def saved_adapter(directory: Path, name: str, variant: str, heads: dict, scaling: float = 1.0) -> torch.Tensor:
    """A HeadMap adapter with random maps saved as `circuitlab finetune` saves it; returns its logits."""
    pm = get_peft_model(load_hf(name)[0], HeadMapConfig(variant=variant, heads=heads, r=8, scaling=scaling))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in maps(pm).values():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        want = pm(input_ids=IDS).logits
    pm.peft_config["default"].base_model = base_info(load_hf(name)[0], name, name)
    pm.save_pretrained(directory)
    return want


def three_ways(tmp_path: Path, name: str, heads: dict, scaling: float) -> dict[str, torch.Tensor]:
    """Logits of: the adapter, merged (saved and reloaded as a stock model), the stock PEFT LoRA export."""
    out = {"adapter": saved_adapter(tmp_path / "run" / "adapter", name, "mha", heads, scaling)}
    export(tmp_path / "run", tmp_path / "exported", lora=True)  # with gradients enabled, as the CLI runs it
    merge(tmp_path / "exported", tmp_path / "merged")
    with torch.no_grad():
        out["base"] = load_hf(name)[0](IDS).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", attn_implementation="eager").eval()
        out["merged"] = merged(IDS).logits
        out["lora"] = PeftModel.from_pretrained(load_hf(name)[0], tmp_path / "exported" / "lora").eval()(
            input_ids=IDS).logits
    return out


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
def test_adapter_merge_and_lora_agree_on_tiny_models(tmp_path, name):
    logits = three_ways(tmp_path, name, {0: [1, 3], 1: [0], 3: [2, 3]}, scaling=1.5)
    assert (logits["adapter"] - logits["base"]).abs().max() > 1e-2
    for way in ("merged", "lora"):
        torch.testing.assert_close(logits[way], logits["adapter"], atol=1e-4, rtol=0, msg=way)


@pytest.mark.smollm2
def test_adapter_merge_and_lora_agree_on_smollm2(tmp_path):
    load_model("smollm2-135m")  # makes sure the safetensors cache exists
    assert (cache_dir() / "smollm2-135m" / "model.safetensors").is_file()
    logits = three_ways(tmp_path, "smollm2-135m", {3: [0, 4], 17: [8], 29: [1, 2]}, scaling=1.0)
    assert (logits["adapter"] - logits["base"]).abs().max() > 1e-2
    for way in ("merged", "lora"):
        torch.testing.assert_close(logits[way], logits["adapter"], atol=1e-4, rtol=0, msg=way)


def test_merge_folds_into_o_proj_only(tmp_path):
    saved_adapter(tmp_path / "a", "tiny-llama", "mha", {2: [1]})
    before = load_hf("tiny-llama")[0].state_dict()
    merge(tmp_path / "a", tmp_path / "merged")
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.2.self_attn.o_proj.weight"}
    w_new, w_old = after["model.layers.2.self_attn.o_proj.weight"], before["model.layers.2.self_attn.o_proj.weight"]
    assert torch.equal(w_new[:, :16], w_old[:, :16]) and torch.equal(w_new[:, 32:], w_old[:, 32:])  # head 1 only
    new_biases = {k for k in after if k not in before}
    assert {k for k in new_biases if k.endswith("o_proj.bias")} == {f"model.layers.{i}.self_attn.o_proj.bias" for i in range(4)}
    assert all(torch.count_nonzero(after[k]) == 0 for k in new_biases if "layers.2.self_attn.o_proj" not in k)


def test_hidden_state_variant_cannot_merge(tmp_path):
    saved_adapter(tmp_path / "hs", "tiny-llama", "hs", {0: [0]})
    with pytest.raises(CircuitlabError, match="cannot be merged"):
        merge(tmp_path / "hs", tmp_path / "merged")
    with pytest.raises(CircuitlabError, match="cannot be merged"):
        export(tmp_path / "hs", tmp_path / "out", lora=True)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "out").exists()
    assert "PeftModel.from_pretrained" in HS_CANNOT_MERGE


def test_export_from_a_finetune_run_via_cli(tmp_path, capsys):
    model = load_model("tiny-llama")
    cfg = TrainConfig(model="tiny-llama", task="capitals", method="headmap-hs", heads="random", heads_per_layer=1,
                      rank=4, scaling=2.0, batch_size=4, epochs=1, max_train=4, eval_limit=4, warmup_steps=0)
    finetune(model, cfg, tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    config = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert config["peft_type"] == "HEADMAP" and config["variant"] == "hs" and config["r"] == 4
    assert config["scaling"] == 2.0 and len(config["heads"]) == 4
    assert config["base_model"]["name"] == "tiny-llama"
    assert config["base_model"]["fingerprint"] == weight_fingerprint(load_hf("tiny-llama")[0])
    assert json.loads((tmp_path / "exp" / "circuit.json").read_text())["heads"] == config["heads"]
    exported = load_file(str(tmp_path / "exp" / "adapter_model.safetensors"))
    trained = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in exported)
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 2
    assert "cannot be merged" in capsys.readouterr().err


def test_export_refuses_runs_without_a_headmap_adapter(tmp_path, capsys):
    model = load_model("tiny-llama")
    cfg = TrainConfig(model="tiny-llama", task="capitals", method="base", eval_limit=2)
    finetune(model, cfg, tmp_path / "base", progress=False)
    assert main(["export", str(tmp_path / "base"), "--out", str(tmp_path / "x")]) == 2
    assert "method base) has no adapter to export: it trained nothing" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "neither a finetune run" in capsys.readouterr().err


def test_a_headmap_plus_lora_adapter_merges_but_is_not_written_as_a_lora_alone(tmp_path, capsys):
    """`--lora` writes HeadMap's map only: for an adapter that also holds LoRA layers it would drop them."""
    pm = get_peft_model(load_hf("tiny-llama")[0], HeadMapConfig(heads={1: [2]}, r=4, lora={"r": 2,
                                                                                         "target_modules": ["v_proj"]}))
    pm.save_pretrained(tmp_path / "combined")
    assert main(["export", str(tmp_path / "combined"), "--out", str(tmp_path / "x"), "--lora"]) == 2
    assert "holds LoRA/DoRA layers besides" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["export", str(tmp_path / "combined"), "--out", str(tmp_path / "x"), "--model", "tiny-llama"]) == 0
    assert "`export --lora` writes the map alone" in (tmp_path / "x" / "README.md").read_text()
    assert main(["merge", str(tmp_path / "combined"), "--out", str(tmp_path / "x"), "--model", "tiny-llama"]) == 2
    assert "already exists and is not empty; merge writes a new directory" in capsys.readouterr().err


def test_merge_keeps_the_precision_the_checkpoint_is_stored_in(tmp_path):
    """A bf16 checkpoint merges and saves in bf16: merging in float32 on the CPU doubled a 7B model to 27 GB
    (more than a 24 GB machine holds) and wrote it twice as large."""
    from circuitlab.models.plain import load_plain

    base = load_plain("tiny-llama").hf_model.to(torch.bfloat16)
    base.save_pretrained(tmp_path / "bf16-llama")
    load_plain("tiny-llama").tokenizer.save_pretrained(tmp_path / "bf16-llama")
    name = str(tmp_path / "bf16-llama")
    saved_adapter(tmp_path / "a", name, "mha", {2: [1]})
    merge(tmp_path / "a", tmp_path / "merged")
    after = load_file(tmp_path / "merged" / "model.safetensors")
    assert {t.dtype for t in after.values()} == {torch.bfloat16}
    key = "model.layers.2.self_attn.o_proj.weight"
    w_old = base.state_dict()[key]
    assert torch.equal(after[key][:, :16], w_old[:, :16]) and not torch.equal(after[key][:, 16:32], w_old[:, 16:32])
