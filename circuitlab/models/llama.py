"""The one structural assumption circuitlab makes of a Hugging Face model: Llama-style decoder layers."""

from __future__ import annotations

from torch import nn

from circuitlab.core.errors import CircuitlabError


def decoder_layers(hf_model) -> nn.ModuleList:
    """The decoder layers of a Llama-style HF causal LM (each with `self_attn.o_proj`)."""
    base = hf_model.get_decoder() if hasattr(hf_model, "get_decoder") else getattr(hf_model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None or not all(hasattr(getattr(b, "self_attn", None), "o_proj") for b in layers):
        raise CircuitlabError(
            f"{type(hf_model).__name__} is not a Llama-style model (decoder layers with self_attn.o_proj)"
        )
    return layers
