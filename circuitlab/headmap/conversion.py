"""Take a trained HeadMap adapter out of circuitlab: export, merge into o_proj, or write as a PEFT LoRA
(as PEFT's own `tuners/lora` conversions).

The MHA variant (Eq. 8) is linear in z before the residual add, so it folds into W_O:

    W_O z + s * (U (D z_sel + b_D) + b_U) = (W_O + s * U D P) z + s * (U b_D + b_U)

where P picks the selected heads' columns. `merge_headmap` does exactly that (the constant goes into
an o_proj bias), and `peft_lora_state` writes the same map as a standard PEFT LoRA on o_proj:
lora_A = D spread over the selected heads' input columns (zeros elsewhere), lora_B = U with bias
U b_D + b_U (PEFT's `lora_bias`), scaling alpha / r = s. The hidden-state variant (Eq. 7) adds its
output after the MLP, which no weight of the model sees, so it cannot be merged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import Tensor

from circuitlab.errors import CircuitlabError
from circuitlab.headmap.files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_base,
    load_adapter,
    read_adapter_config,
)
from circuitlab.headmap.layer import (
    HS_CANNOT_MERGE,
    HeadMapLinear,
    give_attention_biases,
)
from circuitlab.headmap.model import ATTACHED, HeadMapModel
from circuitlab.io import copy_atomic, read_json_object, write_dir_atomic
from circuitlab.models.device import DEFAULT_DEVICE, DEFAULT_DTYPE
from circuitlab.models.llama import decoder_layers

__all__ = ["HS_CANNOT_MERGE", "adapter_dir", "export", "load_plain", "merge", "merge_headmap", "save_peft_lora"]


# -- export ----------------------------------------------------------------------------------------


def adapter_dir(source: str | Path) -> Path:
    """An adapter directory: `source` itself, or `source/adapter` for a finetune run directory."""
    source = Path(source)
    if (source / CONFIG_FILE).is_file():
        return source
    if (source / "adapter" / CONFIG_FILE).is_file():
        return source / "adapter"
    result = source / "result.json"
    if result.is_file():
        method = read_json_object(result, "run result").get("method")
        raise CircuitlabError(f"run {source} (method {method}) has no HeadMap adapter to export; "
                              "export works on headmap-mha and headmap-hs runs")
    raise CircuitlabError(f"{source} is neither a finetune run directory with an adapter nor an adapter directory")


def export(run: str | Path, out: str | Path, peft: bool = False, model_name: str | None = None) -> list[Path]:
    """Write the circuit JSON, the adapter (safetensors) and its config JSON to `out`;
    with `peft`, also a PEFT LoRA adapter on o_proj (adapter_config.json + adapter_model.safetensors)."""
    src = adapter_dir(run)
    config = read_adapter_config(src)
    if "+" in str(config.get("method", "")):
        raise CircuitlabError(f"{run} is a combination run ({config['method']}): its LoRA/DoRA layers live inside "
                              "the model and are not part of a HeadMap adapter; export headmap-mha or headmap-hs runs")
    if peft and config["variant"] != "mha":
        raise CircuitlabError(HS_CANNOT_MERGE)
    hm, config = load_adapter(src)  # also proves the files are sound before anything is written
    out = Path(out)
    if out.resolve() == src.resolve():
        raise CircuitlabError("--out must differ from the run's adapter directory")
    model = None
    if peft:  # checked before anything is written
        model, _ = load_plain(model_name or config["base_model"]["name"])
        check_base(config["base_model"], model)
    written = [copy_atomic(src / name, out / name) for name in (CONFIG_FILE, WEIGHTS_FILE)]
    circuit = src.parent / "circuit.json"
    if circuit.is_file():
        written.append(copy_atomic(circuit, out / "circuit.json"))
    if model is not None:
        written += save_peft_lora(model, hm, out, config["base_model"].get("hf_id"))
    return written


# -- merge -----------------------------------------------------------------------------------------


@torch.no_grad()
def merge_headmap(model, hm: HeadMapModel):
    """Fold an MHA-variant adapter into the o_proj weights (and bias) of a plain HF model, in place:
    HeadMap's PEFT layers are attached holding `hm`'s maps, merged as `merge_and_unload` merges them,
    and taken off again."""
    if hm.config.variant != "mha":
        raise CircuitlabError(HS_CANNOT_MERGE)
    give_attention_biases(model)
    hm.attach_hf(model)
    try:
        for module in model.modules():
            if isinstance(module, HeadMapLinear):
                module.merge(adapter_names=[ATTACHED])
    finally:
        hm.detach_hf()
    return model


def merge(source: str | Path, out: str | Path, model_name: str | None = None, check: bool = True) -> Path:
    """Load the adapter's base model, merge the adapter, save a stock HF model (+ tokenizer) to `out`."""
    src = adapter_dir(source)
    config = read_adapter_config(src)
    if config["variant"] != "mha":
        raise CircuitlabError(HS_CANNOT_MERGE)
    hm, config = load_adapter(src)
    model, tok = load_plain(model_name or config["base_model"]["name"])
    if check:
        check_base(config["base_model"], model)
    merge_headmap(model, hm)
    return write_dir_atomic(out, lambda tmp: [obj.save_pretrained(tmp) for obj in (tok, model)])


# -- PEFT LoRA on o_proj ---------------------------------------------------------------------------


def peft_lora_config(hm: HeadMapModel, base_id: str | None = None):
    from peft import LoraConfig

    return LoraConfig(
        r=hm.config.r, lora_alpha=hm.config.scaling * hm.config.r, lora_dropout=0.0, lora_bias=True,
        target_modules=["o_proj"], layers_to_transform=sorted(int(k) for k in hm.layers),
        base_model_name_or_path=base_id, task_type="CAUSAL_LM",
    )


@torch.no_grad()
def peft_lora_state(hm: HeadMapModel, n_inputs: int) -> dict[int, dict[str, Tensor]]:
    """Per layer: lora_A weight [r, n_inputs], lora_B weight [d_model, r] and bias [d_model]."""
    out = {}
    for key, layer in hm.layers.items():
        A = torch.zeros(layer.down.out_features, n_inputs, dtype=torch.float32)
        A[:, layer.columns()] = layer.down.weight.float()
        bias = layer.up.weight.double() @ layer.down.bias.double() + layer.up.bias.double()
        out[int(key)] = {"A": A, "B": layer.up.weight.float().clone(), "bias": bias.float()}
    return out


def save_peft_lora(model, hm: HeadMapModel, out: Path, base_id: str | None = None) -> list[Path]:
    """Write the adapter as a PEFT LoRA that `PeftModel.from_pretrained(model, out)` loads."""
    from peft import get_peft_model

    n_inputs = hm.dims.n_heads * hm.dims.d_head
    peft_model = get_peft_model(model, peft_lora_config(hm, base_id))
    layers = decoder_layers(peft_model.base_model.model)
    for layer, t in peft_lora_state(hm, n_inputs).items():
        o = layers[layer].self_attn.o_proj
        o.lora_A["default"].weight.copy_(t["A"])
        o.lora_B["default"].weight.copy_(t["B"])
        o.lora_B["default"].bias.copy_(t["bias"])
    names = ("adapter_config.json", "adapter_model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:  # PEFT writes in place; each file then moves in whole
        peft_model.save_pretrained(tmp)
        written = [copy_atomic(Path(tmp) / name, out / name) for name in names]
    peft_model.unload()  # leave `model` as it was
    return written


# -- plain base models (no bridge) -----------------------------------------------------------------


def load_plain(name: str, dtype: str | torch.dtype = DEFAULT_DTYPE, device: str = DEFAULT_DEVICE):
    """(AutoModelForCausalLM, tokenizer) for a circuitlab model name, without a TransformerBridge."""
    from circuitlab.models import load_hf

    model, tok = load_hf(name, dtype)
    return model.to(device), tok
