"""What circuitlab asks of any model it runs, read off its Hugging Face model: dimensions, where inputs go, and
which weights these are. A bridged `LoadedModel` and the plain model fine-tuning trains both answer through it."""

from __future__ import annotations

from functools import cached_property

import torch

from circuitlab.models.fingerprint import weight_fingerprint
from circuitlab.models.identity import ModelDims, ModelIdentity


def input_device(hf_model) -> torch.device:
    """Where a model's input ids go: the device its embedding computes on."""
    dmap = getattr(hf_model, "hf_device_map", None)
    if dmap:
        for name in ("model.embed_tokens", "model", ""):
            if name in dmap:
                target = dmap[name]
                return torch.device(f"cuda:{target}" if isinstance(target, int) else
                                    "cpu" if target == "disk" else target)
    weight = hf_model.get_input_embeddings().weight
    return weight.device if weight.device.type != "meta" else torch.device("cpu")


class HFModelView:
    """The questions every model circuitlab runs answers, from its Hugging Face model (`self.hf_model`)."""

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
