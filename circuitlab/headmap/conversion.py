"""Take a trained HeadMap adapter out of circuitlab: export it, merge it into o_proj, or write it as a stock
PEFT LoRA (as PEFT's own `tuners/lora` conversions).

The MHA variant (Eq. 8) is linear in z before the residual add, so it folds into W_O:

    W_O z + s * (U (D z_sel + b_D) + b_U) = (W_O + s * U D P) z + s * (U b_D + b_U)

where P picks the selected heads' columns. `merge` does exactly that through PEFT's `merge_and_unload` (the
constant goes into an o_proj bias), and `save_lora` writes the same map as a standard PEFT LoRA on o_proj:
lora_A = D spread over the selected heads' input columns (zeros elsewhere), lora_B = U with bias
U b_D + b_U (PEFT's `lora_bias`), scaling alpha / r = s. The hidden-state variant (Eq. 7) adds its
output after the MLP, which no weight of the model sees, so it cannot be merged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import (check_writable, copy_atomic, output_lock, read_json_object, write_dir_atomic,
                                write_text_atomic)
from circuitlab.headmap.cards import headmap_card, lora_card
from circuitlab.headmap.config import HeadMapConfig
from circuitlab.headmap.adapter import load, read_config
from circuitlab.headmap.dirs import AdapterDir, is_adapter_dir
from circuitlab.headmap.layer import HS_CANNOT_MERGE, HeadMapLayer
from circuitlab.headmap.tuner import maps
from circuitlab.models.llama import decoder_layers
from circuitlab.models.dims import stored_dtype
from circuitlab.models.export import save_model
from circuitlab.models.plain import load_plain


COMBINED_NOT_LORA = ("this adapter holds LoRA/DoRA layers besides the HeadMap map (a headmap-mha+lora or +dora run), "
                     "which --lora does not write; `circuitlab merge` folds both into a stock model")


def headmap_dir(source: str | Path | AdapterDir) -> tuple[AdapterDir, HeadMapConfig]:
    """The HeadMap adapter of `source` (an adapter directory, a run directory's `adapter/`, or its record) and its
    config, read once and checked whole before any model loads; or one line saying what it is instead."""
    if not isinstance(source, AdapterDir):
        source = Path(source)
        if not (is_adapter_dir(source) or is_adapter_dir(source / "adapter")) and (source / "result.json").is_file():
            method = read_json_object(source / "result.json", "run result").get("method")
            raise CircuitlabError(f"run {source} (method {method}) has no HeadMap adapter to export; "
                                  "export works on headmap-mha and headmap-hs runs")
    adapter = AdapterDir.read(source)
    config = read_config(adapter)  # a HeadMap adapter, or one line saying what it is instead
    adapter.check_weights()  # whole, before any model loads
    return adapter, config


def new_dir(out: str | Path, command: str) -> Path:
    """`out`, checked to be a directory that can be made and holds nothing yet (nothing of the user's is replaced)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CircuitlabError(f"--out {out} already exists and is not empty; {command} writes a new directory")
    return check_writable(out, "dir")


def base_model(adapter: AdapterDir, config: HeadMapConfig, model_name: str | None) -> tuple:
    """The adapter's base model as a plain HF model (and its tokenizer): `model_name`, else the one it names, in
    the precision its checkpoint is stored in (what a merged model is saved in)."""
    name = model_name or (config.base_model or {}).get("name")
    if name is None:
        raise CircuitlabError(f"{adapter.path} names no base model: give --model")
    plain = load_plain(name, dtype=stored_dtype(name))
    return plain.hf_model, plain.tokenizer


def export(run: str | Path, out: str | Path, lora: bool = False, model_name: str | None = None) -> list[Path]:
    """The adapter in PEFT's format, its circuit JSON and a README saying how to load it, into the new directory
    `out`; with `lora`, also the MHA variant as a stock PEFT LoRA on o_proj in `out/lora`. Everything is read and
    checked before anything is written, and `out` appears whole or not at all."""
    out = new_dir(out, "export")
    src, config = headmap_dir(run)
    if lora and not config.variant.mergeable:
        raise CircuitlabError(HS_CANNOT_MERGE)
    if lora and config.lora:
        raise CircuitlabError(COMBINED_NOT_LORA)
    with output_lock(out):  # one writer of `out`; what a killed export left beside it is removed first
        new_dir(out, "export")
        return _export(src, out, config, lora, model_name)


def _export(src: AdapterDir, out: Path, config: HeadMapConfig, lora: bool, model_name: str | None) -> list[Path]:
    hf, _ = base_model(src, config, model_name)
    peft_model = load(hf, src)
    base_id = (config.base_model or {}).get("hf_id")

    def fill(tmp: Path) -> None:
        peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
        write_text_atomic(tmp / "README.md", headmap_card(config, base_id))
        if (src.path.parent / "circuit.json").is_file():
            copy_atomic(src.path.parent / "circuit.json", tmp / "circuit.json")
        if lora:
            save_lora(peft_model, tmp / "lora", base_id)
            write_text_atomic(tmp / "lora" / "README.md", lora_card(config, base_id))

    write_dir_atomic(out, fill)
    return sorted(p for p in out.rglob("*") if p.is_file())


def merge(source: str | Path, out: str | Path, model_name: str | None = None, check: bool = True) -> Path:
    """Load the adapter's base model, merge the MHA adapter into o_proj, save a stock HF model (+ tokenizer)."""
    out = new_dir(out, "merge")
    src, config = headmap_dir(source)
    if not config.variant.mergeable:
        raise CircuitlabError(HS_CANNOT_MERGE)
    with output_lock(out):  # one writer of `out`; what a killed merge left beside it is removed first
        new_dir(out, "merge")
        hf, tok = base_model(src, config, model_name)
        merged = load(hf, src, check=check).merge_and_unload()
        return write_dir_atomic(out, lambda tmp: save_model(merged, tok, tmp))


# -- PEFT LoRA on o_proj ---------------------------------------------------------------------------


@torch.no_grad()
def lora_state(layer: HeadMapLayer, n_inputs: int) -> dict[str, Tensor]:
    """One layer's map as lora_A [r, n_inputs], lora_B [d_model, r] and lora_B's bias [d_model]."""
    A = torch.zeros(layer.down.out_features, n_inputs, dtype=torch.float32)
    A[:, layer.columns()] = layer.down.weight.float().cpu()
    bias = layer.up.weight.double() @ layer.down.bias.double() + layer.up.bias.double()
    return {"A": A, "B": layer.up.weight.float().cpu().clone(), "bias": bias.float().cpu()}


@torch.no_grad()
def save_lora(peft_model, out: Path, base_id: str | None = None) -> Path:
    """Write a HeadMap-MHA PEFT model's maps as a PEFT LoRA on o_proj that `PeftModel.from_pretrained` loads
    onto the base model; the base model is unwrapped again afterwards."""
    from peft import LoraConfig, get_peft_model

    config = peft_model.peft_config["default"]
    if not config.variant.mergeable:
        raise CircuitlabError(HS_CANNOT_MERGE)
    if config.lora:
        raise CircuitlabError(COMBINED_NOT_LORA)
    trained = maps(peft_model)
    base = peft_model.unload()  # the plain model, HeadMap's layers taken out (their weights are in `trained`)
    lora = LoraConfig(r=config.r, lora_alpha=config.scaling * config.r, lora_dropout=0.0, lora_bias=True,
                      target_modules=["o_proj"], layers_to_transform=sorted(trained),
                      base_model_name_or_path=base_id, task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT warns that lora_bias cannot merge into a bias-less o_proj: see the card
        warnings.filterwarnings("ignore", message=".*lora_bias.*")
        as_lora = get_peft_model(base, lora)
    as_lora.peft_config["default"].base_model_name_or_path = base_id
    layers = decoder_layers(as_lora.base_model.model)
    n_inputs = layers[0].self_attn.o_proj.in_features
    for layer, m in trained.items():
        t = lora_state(m, n_inputs)
        o = layers[layer].self_attn.o_proj
        o.lora_A["default"].weight.copy_(t["A"])
        o.lora_B["default"].weight.copy_(t["B"])
        o.lora_B["default"].bias.copy_(t["bias"])
    with warnings.catch_warnings():  # lora_B's bias is 1-D by design, not a DeepSpeed shard
        warnings.filterwarnings("ignore", message=".*invalid shape.*")
        as_lora.save_pretrained(str(out), save_embedding_layers=False)
    as_lora.unload()
    return out
