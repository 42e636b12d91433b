"""HeadMap as a registered PEFT method on plain Hugging Face Llama models (no TransformerLens on this path):
get_peft_model -> train -> save_pretrained -> PeftModel.from_pretrained -> merge_and_unload, checked
against a forward pass with the map added by torch hooks and written-out arithmetic."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForCausalLM

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.heads import HeadMask
from circuitlab.headmap import HeadMapConfig, HeadMapLinear, register
from circuitlab.models import load_hf
from tests.helpers import IDS

REPO = Path(__file__).resolve().parents[2]
HEADS = {"tiny-llama": {0: [1, 3], 2: [0], 3: [2, 3]}, "tiny-llama-gqa": {0: [1, 6], 2: [0], 3: [2, 7]},
         "smollm2-135m": {3: [0, 4], 17: [8], 29: [1, 2]}}
TINY = ["tiny-llama", "tiny-llama-gqa"]
ALL = [*TINY, pytest.param("smollm2-135m", marks=pytest.mark.smollm2)]
LORA = {"r": 4, "target_modules": ["v_proj", "up_proj", "down_proj"]}  # the paper's HeadMap + LoRA (V, U, D)

pytestmark = pytest.mark.usefixtures("one_thread")
register()


def fresh(name: str):
    return load_hf(name)[0]


def trained(name: str, variant: str, steps: int = 1, **kw):
    """get_peft_model on a fresh base, then `steps` SGD steps, so Up (and LoRA's B) are not zero."""
    pm = get_peft_model(fresh(name), HeadMapConfig.from_circuit(HEADS[name], variant=variant, r=4, scaling=1.5, **kw))
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        pm(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
    return pm


def maps(pm) -> dict[int, torch.nn.Module]:
    layers = pm.get_base_model().model.layers
    return {la: layers[la].self_attn.o_proj.headmap_map["default"] for la in pm.peft_config["default"].heads}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def by_hand(name: str, pm, variant: str) -> torch.Tensor:
    """A fresh base model plus s * (U (D z_sel + b_D) + b_U), z_sel read from o_proj's input by a forward
    pre-hook and added by a forward hook to o_proj's output ("mha") or the decoder layer's ("hs")."""
    base = fresh(name)
    s = pm.peft_config["default"].scaling
    d = base.config.hidden_size // base.config.num_attention_heads
    z, handles = {}, []
    for layer, m in maps(pm).items():
        D, bD, U, bU = (t.detach().clone() for t in (m.down.weight, m.down.bias, m.up.weight, m.up.bias))
        heads = pm.peft_config["default"].heads[layer]
        block = base.model.layers[layer]

        def read(module, args, layer=layer):
            z[layer] = args[0]

        def add(module, args, out, layer=layer, D=D, bD=bD, U=U, bU=bU, heads=heads):
            x = z.pop(layer)
            z_sel = torch.cat([x[..., h * d : (h + 1) * d] for h in heads], dim=-1)
            delta = s * ((z_sel @ D.T + bD) @ U.T + bU)
            return (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta

        handles.append(block.self_attn.o_proj.register_forward_pre_hook(read))
        handles.append((block.self_attn.o_proj if variant == "mha" else block).register_forward_hook(add))
    try:
        return logits(base)
    finally:
        for h in handles:
            h.remove()


# -- training, saving, loading ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_train_save_load_round_trip(tmp_path, name, variant):
    pm = get_peft_model(fresh(name), HeadMapConfig.from_circuit(HEADS[name], variant=variant, r=4))
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(".headmap_map.default." in n for n in trainable)
    assert len(trainable) == 4 * len(HEADS[name])  # Down and Up, weight and bias, per layer
    frozen = {n: p.detach().clone() for n, p in pm.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    pm(input_ids=IDS, labels=IDS).loss.backward()
    opt.step()
    assert all(torch.count_nonzero(m.up.weight) > 0 for m in maps(pm).values())
    assert all(torch.equal(p, frozen[n]) for n, p in pm.named_parameters() if n in frozen)
    want = logits(pm)
    assert (want - logits(fresh(name))).abs().max() > 1e-3

    pm.save_pretrained(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "HEADMAP" and saved["variant"] == variant and saved["r"] == 4
    assert saved["heads"] == {str(k): v for k, v in HEADS[name].items()}
    loaded = PeftModel.from_pretrained(fresh(name), tmp_path / "adapter")
    assert loaded.peft_config["default"].heads == HEADS[name]  # int layer keys again
    torch.testing.assert_close(logits(loaded), want, atol=0, rtol=0)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_forward_equals_the_map_added_by_hand(name, variant):
    pm = trained(name, variant)
    got = logits(pm)
    assert (got - logits(fresh(name))).abs().max() > 1e-3
    torch.testing.assert_close(got, by_hand(name, pm, variant), atol=1e-5, rtol=0)


# -- merging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_mha_merges_into_o_proj(tmp_path, name):
    pm = trained(name, "mha")
    unmerged = logits(pm)
    layers = pm.get_base_model().model.layers
    old = {la: layers[la].self_attn.o_proj.get_base_layer().weight.detach().clone() for la in HEADS[name]}
    folds = {la: (m.scaling * m.up.weight.double() @ m.down.weight.double(), m.columns()) for la, m in maps(pm).items()}
    merged = pm.merge_and_unload()
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    assert not any("headmap" in k for k in merged.state_dict())
    atol = 1e-5 if name in TINY else 1e-4  # fp32 rounding of the folded weight; SmolLM2's logits are larger
    torch.testing.assert_close(logits(merged), unmerged, atol=atol, rtol=0)
    for layer, (fold, cols) in folds.items():
        w = merged.model.layers[layer].self_attn.o_proj.weight
        torch.testing.assert_close(w[:, cols].double(), old[layer][:, cols].double() + fold, atol=1e-6, rtol=0)
        others = torch.ones(w.shape[1], dtype=torch.bool)
        others[cols] = False
        assert torch.equal(w[:, others], old[layer][:, others])
    merged.save_pretrained(tmp_path / "merged")  # a stock model: o_proj's bias holds the constant term
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", attn_implementation="eager")
    torch.testing.assert_close(logits(reloaded), unmerged, atol=atol, rtol=0)


def test_hidden_state_variant_refuses_to_merge_in_one_line():
    pm = trained("tiny-llama", "hs")
    before = logits(pm)
    for merge in (pm.merge_and_unload, pm.merge_adapter):
        with pytest.raises(CircuitlabError, match="hidden-state variant .* cannot be merged") as e:
            merge()
        assert "\n" not in str(e.value)
    assert isinstance(pm.get_base_model().model.layers[0].self_attn.o_proj, HeadMapLinear)
    torch.testing.assert_close(logits(pm), before, atol=0, rtol=0)


# -- HeadMap + LoRA / DoRA -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_combined_with_lora_trains_saves_and_loads_both(tmp_path, variant):
    name = "tiny-llama-gqa"
    pm = get_peft_model(fresh(name), HeadMapConfig.from_circuit(HEADS[name], variant=variant, r=4, lora=LORA))
    trainable = {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    assert {n.split(".default")[0].rsplit(".", 1)[-1] for n in trainable} == {"headmap_map", "lora_A", "lora_B"}
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # LoRA's B and HeadMap's Up start at zero: after step 1 every part has a gradient
        opt.zero_grad()
        pm(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
    assert all(not torch.equal(p, trainable[n]) for n, p in pm.named_parameters() if n in trainable)
    want = logits(pm)
    pm.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora"] == LORA
    loaded = PeftModel.from_pretrained(fresh(name), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded), want, atol=0, rtol=0)
    with torch.no_grad():  # the same HeadMap weights without the LoRA part give other logits: both were saved
        for n, p in loaded.named_parameters():
            if "lora_B" in n:
                p.zero_()
    assert (logits(loaded) - want).abs().max() > 1e-3


def test_combined_with_dora_on_o_proj_merges():
    """DoRA on o_proj sits inside HeadMap's wrapper; merging folds it first, then the map."""
    pm = trained("tiny-llama", "mha", steps=2, lora={"r": 4, "target_modules": ["o_proj", "up_proj"], "use_dora": True})
    assert isinstance(pm.get_base_model().model.layers[0].self_attn.o_proj, HeadMapLinear)
    unmerged = logits(pm)
    merged = pm.merge_and_unload()
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    torch.testing.assert_close(logits(merged), unmerged, atol=1e-5, rtol=0)


# -- PEFT's other switches -------------------------------------------------------------------------


@pytest.mark.parametrize("checkpointing", ["reentrant", "non-reentrant"])
def test_gradient_checkpointing_and_disabling(checkpointing):
    """The "hs" map crosses the MLP (o_proj -> down_proj) inside one decoder layer, which checkpointing
    runs twice; the gradients must not change. Disabled adapters give the base model's logits."""

    def grads(checkpoint: bool):
        model = fresh("tiny-llama").train()
        if checkpoint:
            model.gradient_checkpointing_enable({"use_reentrant": checkpointing == "reentrant"})
        pm = get_peft_model(model, HeadMapConfig(variant="hs", heads=HEADS["tiny-llama"], r=4, lora=LORA))
        with torch.no_grad():
            for p in pm.parameters():
                if p.requires_grad:
                    p.add_(0.1)  # every part non-zero
            with pm.disable_adapter():
                assert torch.equal(pm(input_ids=IDS).logits, logits(fresh("tiny-llama")))
        pm(input_ids=IDS, labels=IDS).loss.backward()
        return {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}

    want, got = grads(False), grads(True)
    assert want.keys() == got.keys() and all(g.abs().sum() > 0 for g in want.values())
    for n, g in want.items():
        torch.testing.assert_close(got[n], g, atol=1e-6, rtol=1e-5, msg=n)


def test_several_adapters(tmp_path):
    pm = trained("tiny-llama", "mha")
    pm.add_adapter("b", HeadMapConfig(variant="hs", heads={2: [1], 3: [0]}, r=2, lora=LORA))
    pm.set_adapter("b")
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(0.2)
    b = logits(pm)
    pm.set_adapter("default")
    a = logits(pm)
    assert (a - b).abs().max() > 1e-3
    pm.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(fresh("tiny-llama"), tmp_path)
    loaded.load_adapter(tmp_path / "b", adapter_name="b")
    torch.testing.assert_close(logits(loaded), a, atol=0, rtol=0)
    loaded.set_adapter("b")
    torch.testing.assert_close(logits(loaded), b, atol=0, rtol=0)
    loaded.delete_adapter("b")
    assert loaded.active_adapters == ["default"]
    torch.testing.assert_close(logits(loaded), a, atol=0, rtol=0)


# -- bad input, config, registration ---------------------------------------------------------------


def snapshot(model) -> tuple:
    return ([type(m) for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()], hasattr(model, "peft_config"))


@pytest.mark.parametrize("heads", [{9: [0]}, {0: [4]}, {1: [0], 3: [-1]}])
def test_heads_not_in_the_model_are_refused_before_anything_changes(heads):
    model = fresh("tiny-llama")
    before = snapshot(model)
    for config in (HeadMapConfig(heads=heads), HeadMapConfig(heads=heads, variant="hs", lora=LORA)):
        with pytest.raises(CircuitlabError, match="out of range") as e:
            get_peft_model(model, config)
        assert "\n" not in str(e.value)
    after = snapshot(model)
    assert before[0] == after[0] and before[2:] == after[2:]
    assert before[1].keys() == after[1].keys() and all(torch.equal(v, after[1][k]) for k, v in before[1].items())


def test_an_adapter_for_a_bigger_model_is_refused(tmp_path):
    get_peft_model(fresh("tiny-llama-gqa"), HeadMapConfig(heads={0: [7]})).save_pretrained(tmp_path / "gqa")
    with pytest.raises(CircuitlabError, match="out of range"):
        PeftModel.from_pretrained(fresh("tiny-llama"), tmp_path / "gqa")


def test_config_round_trips_and_is_built_from_a_circuit(tmp_path):
    heads = {3: [2, 0], 1: [1]}
    info = ModelInfo("tiny-llama", "tiny-llama", None, "f", 4, 4, 4, 16, 64)
    circuit = Circuit(info, TaskInfo("capitals", "train"), [], "hand-made", 2, heads)
    config = HeadMapConfig.from_circuit(circuit, variant="hs", r=8, lora=LORA)
    assert config.heads == {1: [1], 3: [0, 2]} and config.task_type == "CAUSAL_LM"
    assert HeadMapConfig.from_circuit(HeadMask.of(heads), variant="hs", r=8, lora=LORA) == config
    assert HeadMapConfig.from_dict({"variant": "hs", "heads": heads, "rank": 8, "seed": 0, "task_type": "CAUSAL_LM",
                                    "lora": LORA}) == config  # circuitlab's earlier adapter files
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["heads"] == {"1": [1], "3": [0, 2]}
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, HeadMapConfig) and loaded == config
    assert HeadMapConfig.from_dict(config.to_dict()) == config
    with pytest.raises(CircuitlabError, match="variant"):
        HeadMapConfig(variant="mlp", heads=heads)
    with pytest.raises(CircuitlabError, match="bad LoRA options"):
        HeadMapConfig(heads=heads, lora={"rank": 4})


def test_from_circuit_refuses_a_circuit_located_on_another_model():
    """A circuit records the model it was located on (`ModelInfo.of` a bridged model, as `locate` writes it).
    `model=` refuses other dimensions always, and other weights on a bridged model; a plain model's weights
    cannot be compared with a bridged model's fingerprint (other state-dict names), so only its shape is."""
    from circuitlab.models import load_model, load_plain

    bridged, plain = load_model("tiny-llama"), load_plain("tiny-llama")
    heads = {1: [0, 2]}
    circuit = Circuit(ModelInfo.of(bridged), TaskInfo("capitals", "train"), [], "hand-made", 2, heads)
    for model in (bridged, plain, plain.hf_model):
        assert HeadMapConfig.from_circuit(circuit, model=model).heads == heads
    for model in (load_plain("tiny-llama-gqa"), load_plain("tiny-llama-gqa").hf_model):
        with pytest.raises(CircuitlabError, match="located on tiny-llama"):
            HeadMapConfig.from_circuit(circuit, model=model)  # other dimensions
    other = load_model("tiny-llama")
    with torch.no_grad():
        other.hf_model.model.layers[1].mlp.up_proj.weight.mul_(1.01)
    with pytest.raises(CircuitlabError, match="weight"):
        HeadMapConfig.from_circuit(circuit, model=other)


def test_registration_is_one_explicit_call_and_import_circuitlab_stays_cheap(tmp_path):
    get_peft_model(fresh("tiny-llama"), HeadMapConfig(heads={1: [2]})).save_pretrained(tmp_path)
    code = (
        "import sys, circuitlab\n"
        "assert not {'peft', 'torch'} & set(sys.modules), 'import circuitlab is not cheap'\n"
        "import torch; from peft import PeftModel; from circuitlab.models import tiny_model\n"
        f"try:\n    PeftModel.from_pretrained(tiny_model('tiny-llama')[0], {str(tmp_path)!r})\n"
        "except KeyError:\n    pass\nelse:\n    raise SystemExit('registered without being asked')\n"
        "from circuitlab.headmap import register; register(); register()\n"
        f"m = PeftModel.from_pretrained(tiny_model('tiny-llama')[0], {str(tmp_path)!r}); m(torch.tensor([[1, 2, 3]]))\n"
        "assert type(m.base_model).__name__ == 'HeadMapTuner'\n"
        "assert not any(k.startswith('transformer_lens') for k in sys.modules), 'transformer_lens imported'\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
