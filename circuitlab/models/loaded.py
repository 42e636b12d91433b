"""A model as circuitlab uses it: a TransformerBridge over a Hugging Face causal LM, and its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from circuitlab.models.device import DEFAULT_DEVICE, DEFAULT_DTYPE, check_device, resolve_dtype
from circuitlab.models.identity import ModelDims, ModelIdentity, weight_fingerprint
from circuitlab.models.names import resolve
from circuitlab.models.sources import load_hf


@dataclass(eq=False)
class LoadedModel:
    """A bridge, its tokenizer and where it came from."""

    name: str
    hf_id: str
    revision: str | None
    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object

    @property
    def hf_model(self):
        return self.bridge.original_model

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
        return next(self.hf_model.parameters()).device

    def fingerprint(self) -> str:
        return weight_fingerprint(self.hf_model)

    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.dims, self.fingerprint())


def load_model(
    name: str,
    device: str | torch.device = DEFAULT_DEVICE,
    dtype: str | torch.dtype = DEFAULT_DTYPE,
    revision: str | None = None,
) -> LoadedModel:
    """Load `name` as a TransformerBridge (eager attention, raw HF weights) plus its tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    src = resolve(name)
    device, dtype = check_device(device), resolve_dtype(dtype)
    model, tok = load_hf(src, dtype, revision)
    bridge = TransformerBridge.boot_transformers(src.bridge_name, hf_model=model.to(device), tokenizer=tok,
                                                 dtype=dtype)
    bridge.eval()
    return LoadedModel(name=name, hf_id=src.hf_id, revision=revision, bridge=bridge, tokenizer=tok)
