"""A model as circuitlab uses it: a TransformerBridge over a Hugging Face causal LM, and its tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitlab.models.config import ModelConfig
from circuitlab.models.device import DEFAULT_DEVICE
from circuitlab.models.names import resolve
from circuitlab.models.placement import placement
from circuitlab.models.sources import load_hf, torch_dtype
from circuitlab.models.view import HFModelView


@dataclass(eq=False)
class LoadedModel(HFModelView):
    """A bridge, its tokenizer and where it came from."""

    name: str
    hf_id: str
    revision: str | None
    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object

    @property
    def hf_model(self):
        return self.bridge.original_model


def as_bridged(model: "LoadedModel | ModelConfig | str", command: str = "this command",
               before_bridge=None) -> LoadedModel:
    """`model` itself when loaded, else loaded as its `ModelConfig` says (a name: on the CPU, dtype auto), in
    this process's part of the machine when torchrun started several (`ModelConfig.start`). `before_bridge`:
    a change to the HF model before the bridge wraps it (`ungroup_kv_heads`)."""
    if isinstance(model, LoadedModel):
        return model
    _, config = (model if isinstance(model, ModelConfig) else ModelConfig(model=model)).start(command)
    return load_model(config.model, config.device, config.dtype, device_map=config.device_map,
                      max_memory=config.max_memory, before_bridge=before_bridge)


def load_model(
    name: str,
    device: str | torch.device | None = DEFAULT_DEVICE,
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    device_map: str | dict | None = None,
    max_memory: str | None = None,
    before_bridge=None,
) -> LoadedModel:
    """Load `name` as a TransformerBridge (eager attention, raw HF weights) plus its tokenizer: on one
    `device`, or dispatched by `device_map` (accelerate's semantics; `max_memory` "0=20GiB,cpu=60GiB").
    `dtype` "auto" is bfloat16 on CUDA and float32 elsewhere."""
    src = resolve(name)
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    dmap = json.dumps(device_map) if isinstance(device_map, dict) else device_map
    where = placement(None if device is None else str(device), dtype, dmap, max_memory)
    model, tok = load_hf(src, revision=revision, where=where)
    if not where.dispatched:
        model = model.to(where.device)
    if before_bridge is not None:
        before_bridge(model)
    return bridge_hf(name, model, tok, torch_dtype(where.dtype), revision)


def bridge_hf(name: str, hf_model, tokenizer, dtype: torch.dtype | None = None,
              revision: str | None = None) -> LoadedModel:
    """A TransformerBridge over an HF model already in memory (placed where it should run): how
    `load_model` finishes, and how a model whose weights were changed first (a fine-tuning checkpoint's
    adapter merged in) becomes a `LoadedModel`. `name` resolves the bridge architecture and the hub id;
    `dtype` defaults to the model's own."""
    src = resolve(name)
    dtype = dtype if dtype is not None else hf_model.dtype
    bridge = TransformerBridge.boot_transformers(src.bridge_name, hf_model=hf_model, tokenizer=tokenizer, dtype=dtype)
    bridge.eval()
    return LoadedModel(name=name, hf_id=src.public_id, revision=revision, bridge=bridge, tokenizer=tokenizer)
