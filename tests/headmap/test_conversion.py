"""Export, merge and PEFT LoRA: four ways to run one MHA adapter give the same logits."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from circuitlab.cli import main
from circuitlab.errors import CircuitlabError
from circuitlab.finetune import TrainConfig, train_and_eval
from circuitlab.models import weight_fingerprint
from circuitlab.headmap import HeadMapConfig, HeadMapModel, attach, base_info, detach, load_adapter, save_adapter
from circuitlab.headmap.conversion import HS_CANNOT_MERGE, export, load_plain, merge, merge_headmap
from circuitlab.models import cache_dir, load_model
from tests.helpers import IDS
from tests.helpers import randomize as randomize_all


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(hm: HeadMapModel) -> HeadMapModel:
    return randomize_all(hm, seed=7, scale=0.3)


def four_ways(tmp_path: Path, name: str, heads: dict, scaling: float) -> dict[str, torch.Tensor]:
    """Logits of: bridge + adapter, plain + attach, merged (saved and reloaded), plain + PEFT LoRA."""
    from peft import PeftModel

    bridged = load_model(name)
    hm = randomize(HeadMapModel.for_model(HeadMapConfig(variant="mha", heads=heads, r=8, scaling=scaling), bridged.config))
    run = tmp_path / "run"
    save_adapter(hm, run / "adapter", base_info(bridged.hf_model, name, bridged.hf_id, bridged.fingerprint()),
                 extra={"method": "headmap-mha"})
    out = {}
    with torch.no_grad():
        out["base"] = bridged.hf_model(IDS).logits
        with hm.on_bridge(bridged.bridge):
            out["bridge"] = bridged.hf_model(IDS).logits
        plain, _ = load_plain(name)
        attach(plain, run / "adapter")
        out["attach"] = plain(IDS).logits
        detach(plain)
        export(run, tmp_path / "exported", peft=True)
        merge(tmp_path / "exported", tmp_path / "merged")
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", attn_implementation="eager").eval()
        out["merged"] = merged(IDS).logits
        fresh, _ = load_plain(name)
        out["peft"] = PeftModel.from_pretrained(fresh, tmp_path / "exported").eval()(input_ids=IDS).logits
    return out


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
def test_bridge_attach_merge_and_peft_agree_on_tiny_models(tmp_path, name):
    logits = four_ways(tmp_path, name, {0: [1, 3], 1: [0], 3: [2, 3]}, scaling=1.5)
    assert (logits["bridge"] - logits["base"]).abs().max() > 1e-2
    for way in ("attach", "merged", "peft"):
        torch.testing.assert_close(logits[way], logits["bridge"], atol=1e-4, rtol=0, msg=way)


@pytest.mark.smollm2
def test_bridge_attach_merge_and_peft_agree_on_smollm2(tmp_path):
    load_model("smollm2-135m")  # makes sure the safetensors cache exists
    assert (cache_dir() / "smollm2-135m" / "model.safetensors").is_file()
    logits = four_ways(tmp_path, "smollm2-135m", {3: [0, 4], 17: [8], 29: [1, 2]}, scaling=1.0)
    assert (logits["bridge"] - logits["base"]).abs().max() > 1e-2
    for way in ("attach", "merged", "peft"):
        torch.testing.assert_close(logits[way], logits["bridge"], atol=1e-4, rtol=0, msg=way)


def test_merge_folds_into_o_proj_only(tmp_path):
    plain, _ = load_plain("tiny-llama")
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    hm = randomize(HeadMapModel.for_model(HeadMapConfig(variant="mha", heads={2: [1]}, r=4), plain.config))
    merge_headmap(plain, hm)
    after = plain.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.2.self_attn.o_proj.weight"}
    w_new, w_old = after["model.layers.2.self_attn.o_proj.weight"], before["model.layers.2.self_attn.o_proj.weight"]
    assert torch.equal(w_new[:, :16], w_old[:, :16]) and torch.equal(w_new[:, 32:], w_old[:, 32:])  # head 1 only
    new_biases = {k for k in after if k not in before}
    assert {k for k in new_biases if k.endswith("o_proj.bias")} == {f"model.layers.{i}.self_attn.o_proj.bias" for i in range(4)}
    assert plain.config.attention_bias is True
    assert all(torch.count_nonzero(after[k]) == 0 for k in new_biases if "layers.2.self_attn.o_proj" not in k)


def test_hidden_state_variant_cannot_merge(tmp_path):
    plain, _ = load_plain("tiny-llama")
    hm = randomize(HeadMapModel.for_model(HeadMapConfig(variant="hs", heads={0: [0]}, r=4), plain.config))
    with pytest.raises(CircuitlabError, match="hidden-state variant .* cannot be merged"):
        merge_headmap(plain, hm)
    save_adapter(hm, tmp_path / "hs", base_info(plain, "tiny-llama"), extra={"method": "headmap-hs"})
    with pytest.raises(CircuitlabError, match="cannot be merged"):
        merge(tmp_path / "hs", tmp_path / "merged")
    with pytest.raises(CircuitlabError, match="cannot be merged"):
        export(tmp_path / "hs", tmp_path / "out", peft=True)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "out").exists()
    assert "attach" in HS_CANNOT_MERGE


def test_export_from_a_finetune_run_via_cli(tmp_path, capsys):
    model = load_model("tiny-llama")
    cfg = TrainConfig(model="tiny-llama", task="capitals", method="headmap-hs", heads="random", heads_per_layer=1,
                      rank=4, scaling=2.0, batch_size=4, epochs=1, max_train=4, eval_limit=4, warmup_steps=0)
    train_and_eval(model, cfg, tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    config = json.loads((tmp_path / "exp" / "headmap_config.json").read_text())
    assert config["variant"] == "hs" and config["method"] == "headmap-hs" and config["rank"] == 4
    assert config["scaling"] == 2.0 and len(config["heads"]) == 4
    assert config["base_model"]["name"] == "tiny-llama" and config["base_model"]["fingerprint"] == weight_fingerprint(load_plain("tiny-llama")[0])
    assert json.loads((tmp_path / "exp" / "circuit.json").read_text())["heads"] == config["heads"]
    hm, _ = load_adapter(tmp_path / "exp")
    run_hm, _ = load_adapter(tmp_path / "run" / "adapter")
    assert all(torch.equal(hm.state_dict()[k], run_hm.state_dict()[k]) for k in hm.state_dict())
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 2
    assert "cannot be merged" in capsys.readouterr().err


def test_export_refuses_runs_without_a_headmap_adapter(tmp_path, capsys):
    model = load_model("tiny-llama")
    cfg = TrainConfig(model="tiny-llama", task="capitals", method="base", eval_limit=2)
    train_and_eval(model, cfg, tmp_path / "base", progress=False)
    assert main(["export", str(tmp_path / "base"), "--out", str(tmp_path / "x")]) == 2
    assert "method base) has no HeadMap adapter" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "neither a finetune run" in capsys.readouterr().err
