"""Model names: what `--model NAME` refers to, decided in one place.

A name is an alias (`smollm2-135m`, the embedded model; `llama2-7b`, `llama3-8b`; the seeded random
test models `tiny-llama`, `tiny-llama-gqa`), a Hugging Face hub id (`owner/name`) or a local directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from circuitlab.core.errors import CircuitlabError

EMBEDDED = "smollm2-135m"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_ALIASES = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
}
# Small random Llama models for fast tests: seeded, so every load gives the same weights.
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, max_position_embeddings=1024)
TINY_CONFIGS = {
    "tiny-llama": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    "tiny-llama-gqa": dict(num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2),
}


@dataclass(frozen=True)
class ModelSource:
    name: str  # as the user gave it
    kind: str  # "embedded" | "tiny" | "hub" | "local"
    hf_id: str  # the hub id, the local directory, or the tiny model's name

    @property
    def bridge_name(self) -> str:
        """The architecture name TransformerBridge is booted with (the weights are passed in)."""
        return self.hf_id if "/" in self.hf_id else "meta-llama/" + self.hf_id

    @property
    def public_id(self) -> str:
        """What artefacts record as the model's hub id: a local directory by its own name only (a machine path
        means nothing on another machine; the weight fingerprint beside it says which weights they were)."""
        return Path(self.hf_id).resolve().name if self.kind == "local" else self.hf_id

    @property
    def public_name(self) -> str:
        return self.public_id if self.kind == "local" else self.name


def public_name(name: str) -> str:
    """The name artefacts record for `--model NAME` (see `ModelSource.public_id`); a name that is not a model's
    (a benchmark's shape built in memory) as it is."""
    try:
        return resolve(name).public_name
    except CircuitlabError:
        return name


def resolve(name: str) -> ModelSource:
    if name == EMBEDDED:
        return ModelSource(name, "embedded", SMOLLM2_ID)
    if name in TINY_CONFIGS:
        return ModelSource(name, "tiny", name)
    if name in HUB_ALIASES:
        return ModelSource(name, "hub", HUB_ALIASES[name])
    if Path(name).expanduser().is_dir():
        return ModelSource(name, "local", str(Path(name).expanduser()))
    if "/" in name and not Path(name).exists() and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return ModelSource(name, "hub", name)
    known = ", ".join([EMBEDDED, *HUB_ALIASES, *TINY_CONFIGS])
    raise CircuitlabError(f"unknown model {name!r}: not {known}, a hub id (owner/name) or an existing directory")

