"""What a model is: its dimensions, and whether two descriptions name the same weights.

One place answers "is this the same model?" for every artefact that belongs to one: a circuit (its
heads index this model's layers and heads, its losses come from these weights), a HeadMap adapter
(trained on these weights) and a set of circuits to compare. Dimensions must be equal; weights are
compared by an exact fingerprint, or, where both sides carry one, by a probe of sampled values that
tolerates a cast to another dtype.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

from circuitlab.errors import CircuitlabError
from circuitlab.models.llama import decoder_layers

PROBE_PATHS = (
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
PROBE_VALUES = 8


@dataclass(frozen=True)
class ModelDims:
    """The dimensions circuits and adapters depend on; read from a HF config in one place."""

    n_layers: int
    n_heads: int  # query heads per layer: the unit of masking, also under GQA
    n_kv_heads: int
    d_head: int
    d_model: int

    @classmethod
    def of_config(cls, config) -> "ModelDims":
        n_heads, d_model = config.num_attention_heads, config.hidden_size
        return cls(
            n_layers=config.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            d_head=getattr(config, "head_dim", None) or d_model // n_heads,
            d_model=d_model,
        )

    def __str__(self) -> str:
        return (f"{self.n_layers} layers x {self.n_heads} heads, {self.n_kv_heads} KV heads, "
                f"d_head {self.d_head}, d_model {self.d_model}")

    def check_heads(self, heads: Mapping[int, Iterable[int]], what: str = "head") -> None:
        """Refuse (layer, head) pairs that do not exist in a model of these dimensions."""
        for layer, hs in heads.items():
            hs = list(hs)
            bad = [h for h in hs if not 0 <= h < self.n_heads]
            if not 0 <= layer < self.n_layers or bad:
                raise CircuitlabError(f"{what} out of range: layer {layer} heads {bad or hs} "
                                      f"(the model has {self.n_layers} layers x {self.n_heads} heads)")


@dataclass(frozen=True)
class ModelIdentity:
    name: str | None
    dims: ModelDims
    fingerprint: str | None = None  # `weight_fingerprint`: exact
    probe: Mapping[str, list[float]] | None = None  # `weight_probe`: tolerant of dtype casts

    @classmethod
    def of_hf(cls, hf_model, name: str | None = None, probe: bool = True) -> "ModelIdentity":
        name = name or getattr(hf_model.config, "_name_or_path", None) or "this model"
        return cls(name, ModelDims.of_config(hf_model.config),
                   weight_fingerprint(hf_model), weight_probe(hf_model) if probe else None)


def check_same_model(expected: ModelIdentity, actual: ModelIdentity, what: str, made: str = "made") -> None:
    """Raise one line when `actual` is not the model `what` was `made` on (dimensions, then weights)."""
    e, a = expected, actual
    if e.dims != a.dims:
        raise CircuitlabError(f"{what} was {made} on {e.name} ({e.dims}), not on {a.name} ({a.dims})")
    if e.probe and a.probe:
        differs = _first_difference(e.probe, a.probe)
        if differs:
            raise CircuitlabError(f"{what} was {made} on {e.name} (weight fingerprint {e.fingerprint}), "
                                  f"but the weights differ on {a.name} (first at {differs}); use the same base model")
    elif e.fingerprint and a.fingerprint and e.fingerprint != a.fingerprint:
        raise CircuitlabError(f"{what} was {made} on {e.name} with weight fingerprint {e.fingerprint}, but the "
                              f"weights of {a.name} have fingerprint {a.fingerprint}")


def _first_difference(want: Mapping[str, list], have: Mapping[str, list]) -> str | None:
    """The first probed matrix whose values differ by more than a dtype cast can explain."""
    common = sorted(k for k in set(want) & set(have) if not k.startswith("_"))
    if not common:
        raise CircuitlabError("no weights of this model could be compared with the base model's probe")
    # Casting fp32 weights to a smaller float moves each by at most half an ulp of that dtype: allow
    # one ulp of the coarser of the two sides' dtypes (probes without `_dtype` were read in fp32).
    eps = max(torch.finfo(getattr(torch, p.get("_dtype", ["float32"])[0])).eps for p in (want, have))
    for key in common:
        a = torch.tensor(want[key], dtype=torch.float64)
        b = torch.tensor(have[key], dtype=torch.float64)
        if a.shape != b.shape or not torch.all((a - b).abs() <= eps * a.abs() + 1e-38):
            return key
    return None


def weight_fingerprint(model: torch.nn.Module) -> str:
    """A cheap hash of names, shapes and a strided sample of every parameter's values (the same for a
    model dispatched over devices, offloaded weights included)."""
    h = hashlib.sha256()
    for name, p in _state(model):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to("cpu", torch.float32).numpy()
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
