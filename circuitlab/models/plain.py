"""The model `circuitlab finetune` trains: a plain Hugging Face causal LM and its tokenizer, no bridge.

PEFT wraps the real `nn.Linear` layers of a plain `AutoModelForCausalLM`, and the HF `Trainer` (with
`torchrun` / `accelerate launch`) drives it; a TransformerBridge would hide those layers under
`._original_component` and keep both out. `PlainModel` answers what circuitlab's scoring and circuit
files ask of a `LoadedModel` (`hf_model`, `tokenizer`, `config`, `dims`, `device`, `fingerprint`), so
evaluation runs on it unchanged. Nothing here imports TransformerLens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from circuitlab.models.config import ModelConfig
from circuitlab.models.view import HFModelView
from circuitlab.models.names import resolve
from circuitlab.models.placement import placement
from circuitlab.models.sources import load_hf


@dataclass(eq=False)
class PlainModel(HFModelView):
    name: str
    hf_id: str
    revision: str | None
    hf_model: object  # transformers PreTrainedModel (PEFT layers are injected into it in place)
    tokenizer: object
    bridge: None = None  # what `LoadedModel` holds a TransformerBridge in: none here

    @property
    def dtype_name(self) -> str:
        return str(next(self.hf_model.parameters()).dtype).removeprefix("torch.")


def load_plain(name: str, device: str | None = "cpu", dtype: str | torch.dtype = "auto", revision: str | None = None,
               device_map: str | None = None, max_memory: str | None = None) -> PlainModel:
    """`name` as a plain HF model, placed like `circuitlab.models.load_model` places it. Under torchrun,
    `cuda` is this process's own GPU (cuda:LOCAL_RANK), where the Trainer would move it anyway."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    src = resolve(name)
    where = placement(device, dtype, device_map, max_memory)
    model, tok = load_hf(src, revision=revision, where=where)
    if not where.dispatched:
        model = model.to(where.device)
    return PlainModel(name=name, hf_id=src.public_id, revision=revision, hf_model=model, tokenizer=tok)


def as_plain(model: "PlainModel | ModelConfig | str | HFModelView") -> PlainModel:
    """`model` itself when it is plain; a `ModelConfig` or a name loaded as it says; for a bridged model, the
    same weights loaded again without a bridge (the bridge patches the HF model's modules, which PEFT must wrap
    itself)."""
    if isinstance(model, PlainModel):
        return model
    if isinstance(model, HFModelView):
        dtype = str(next(model.hf_model.parameters()).dtype).removeprefix("torch.")
        return load_plain(model.name, str(model.device), dtype, model.revision)
    config = model if isinstance(model, ModelConfig) else ModelConfig(model=model)
    return load_plain(config.model, config.device, config.dtype, device_map=config.device_map,
                      max_memory=config.max_memory)
