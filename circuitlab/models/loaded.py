"""A model as circuitlab uses it: a TransformerBridge over a Hugging Face causal LM, and its tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import torch

from circuitlab.models.device import DEFAULT_DEVICE
from circuitlab.models.placement import input_device, placement
from circuitlab.models.identity import ModelDims, ModelIdentity, weight_fingerprint
from circuitlab.models.names import resolve
from circuitlab.models.sources import load_hf


class HFModelView:
    """What circuitlab asks of any model it runs, read off its Hugging Face model (`self.hf_model`):
    dimensions, where inputs go, and which weights these are. A bridged `LoadedModel` and the plain
    model `circuitlab finetune` trains both answer through it."""

    hf_model: object

    @property
    def config(self):
        return self.hf_model.config

    @cached_property
    def dims(self) -> ModelDims:
        return ModelDims.of_config(self.config)

    @property
    def n_layers(self) -> int:
        return self.dims.n_layers

    @property
    def n_heads(self) -> int:
        return self.dims.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.dims.n_kv_heads

    @property
    def d_head(self) -> int:
        return self.dims.d_head

    @property
    def d_model(self) -> int:
        return self.dims.d_model

    @property
    def device(self) -> torch.device:
        """Where input ids go (a dispatched model's first device)."""
        return input_device(self.hf_model)

    def fingerprint(self) -> str:
        return weight_fingerprint(self.hf_model)

    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.dims, self.fingerprint())


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


def load_model(
    name: str,
    device: str | torch.device | None = DEFAULT_DEVICE,
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    device_map: str | dict | None = None,
    max_memory: str | None = None,
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
    return bridge_hf(name, model, tok, where.dtype, revision)


def bridge_hf(name: str, hf_model, tokenizer, dtype: torch.dtype | None = None,
              revision: str | None = None) -> LoadedModel:
    """A TransformerBridge over an HF model already in memory (placed where it should run): how
    `load_model` finishes, and how a model whose weights were changed first (a fine-tuning checkpoint's
    adapter merged in) becomes a `LoadedModel`. `name` resolves the bridge architecture and the hub id;
    `dtype` defaults to the model's own."""
    from transformer_lens.model_bridge import TransformerBridge

    src = resolve(name)
    dtype = dtype if dtype is not None else hf_model.dtype
    bridge = TransformerBridge.boot_transformers(src.bridge_name, hf_model=hf_model, tokenizer=tokenizer, dtype=dtype)
    bridge.eval()
    return LoadedModel(name=name, hf_id=src.hf_id, revision=revision, bridge=bridge, tokenizer=tokenizer)
