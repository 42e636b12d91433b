"""Which weights these are, read off a loaded model: an exact fingerprint and a dtype-tolerant probe.

`weight_fingerprint` hashes names, shapes and a strided sample of every parameter (the same for a model
dispatched over devices, offloaded weights included); `weight_probe` keeps a few values of each key matrix,
which `circuitlab.models.identity.check_same_model` compares within a cast's rounding.
"""

from __future__ import annotations

import hashlib

import torch

from circuitlab.models.identity import ModelDims, ModelIdentity
from circuitlab.models.llama import decoder_layers

PROBE_PATHS = (
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
PROBE_VALUES = 8


def hf_identity(hf_model, name: str | None = None, probe: bool = True) -> ModelIdentity:
    """The identity of a Hugging Face model in memory: its dimensions, fingerprint and (with `probe`) probe."""
    name = name or getattr(hf_model.config, "_name_or_path", None) or "this model"
    return ModelIdentity(name, ModelDims.of_config(hf_model.config), weight_fingerprint(hf_model),
                         weight_probe(hf_model) if probe else None)


def weight_fingerprint(model: torch.nn.Module, cast: torch.dtype | None = None) -> str:
    """A cheap hash of names, shapes and a strided sample of every parameter's values (the same for a
    model dispatched over devices, offloaded weights included). With `cast`, the sample is first cast to
    that dtype: the fingerprint the same weights have when loaded in it (a cast to a smaller float)."""
    h = hashlib.sha256()
    for name, p in _state(model):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to("cpu")
        sample = (sample.to(cast) if cast is not None else sample).to(torch.float32).numpy()
        h.update(f"{name}:{tuple(p.shape)}".encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


def _state(model: torch.nn.Module):
    """The state dict's (name, tensor) pairs by name; weights accelerate offloaded are read back one
    module at a time."""
    for name, t in sorted(model.state_dict().items()):
        if t.device.type == "meta":
            from accelerate.utils import align_module_device

            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            with align_module_device(owner, "cpu"):
                t = getattr(owner, leaf).detach().to("cpu", copy=True)
        yield name, t


def _weight(module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
    return getattr(module, "weight", None)


def weight_probe(hf_model, n: int = PROBE_VALUES) -> dict[str, list]:
    """`n` values at evenly spaced positions of each key weight matrix, as float32 numbers, plus the
    dtype they were read in (`_dtype`), which sets how far a cast may move them.

    Reads weights through attribute paths, so it gives the same probe for a plain HF model, the same
    model patched by a TransformerBridge, or one with PEFT layers injected (whose `.weight` is the base's).
    Weights offloaded to the meta device are left out.
    """
    embed = hf_model.get_input_embeddings().weight
    tensors = {"embed_tokens": embed}
    for i, block in enumerate(decoder_layers(hf_model)):
        for path in PROBE_PATHS:
            w = _weight(block, path)
            if w is not None:
                tensors[f"layers.{i}.{path}"] = w
    probe: dict[str, list] = {"_dtype": [str(embed.dtype).removeprefix("torch.")]}
    for name, w in tensors.items():
        if w.device.type == "meta":
            continue
        flat = w.detach().reshape(-1)
        idx = (torch.arange(n) * (flat.numel() - 1)) // max(n - 1, 1)  # exact integer positions, ends included
        probe[name] = flat[idx.to(flat.device)].to("cpu", torch.float32).tolist()
    return probe
