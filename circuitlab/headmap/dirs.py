"""An adapter directory read once into one typed record, `AdapterDir`: which directory holds the adapter, its format
(PEFT's or circuitlab's earlier HeadMap one), its config, what its finetune run records, and the checks that need
nothing but its files. Everything that asks about an adapter (eval --adapter, merge, export, track) reads it here
once and hands the record on, so no caller re-opens a file or repeats a format branch; the heavy half
(`headmap.adapter`) loads with PEFT from the record. This module imports neither torch nor PEFT."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object, safetensors_problem
from circuitlab.headmap.variant import Variant
from circuitlab.models.identity import ModelDims, ModelIdentity, check_same_model

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
LEGACY_CONFIG, LEGACY_WEIGHTS, LEGACY_FORMAT = "headmap_config.json", "adapter.safetensors", "circuitlab-headmap"
DIM_KEYS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")
ADAPTER_FILES = (PEFT_CONFIG, PEFT_WEIGHTS, "adapter_model.bin", LEGACY_CONFIG, LEGACY_WEIGHTS)


def is_adapter_dir(directory: Path) -> bool:
    return (directory / PEFT_CONFIG).is_file() or (directory / LEGACY_CONFIG).is_file()


def adapter_dir(source: str | Path) -> Path:
    """An adapter directory: `source` itself, or `source/adapter` for a finetune run directory."""
    source = Path(source)
    for directory in (source, source / "adapter"):
        if is_adapter_dir(directory):
            return directory
    raise CircuitlabError(f"{source} is neither a finetune run directory with an adapter nor an adapter directory "
                          "(adapter_config.json)")


def base_identity(base: dict, what: str = "adapter") -> ModelIdentity:
    """The model a HeadMap config's `base_model` describes (dimensions, fingerprint, probe), or one line naming
    what it lacks."""
    try:
        dims = ModelDims(**{k: int(base[k]) for k in DIM_KEYS})
    except (KeyError, TypeError, ValueError) as e:
        raise CircuitlabError(f"{what} config: base_model lacks a valid {e}") from None
    return ModelIdentity(base.get("name") or base.get("hf_id"), dims, base.get("fingerprint"), base.get("probe"))


@dataclass(frozen=True)
class AdapterDir:
    """One adapter directory, its files read once (`read`): everything circuitlab asks of it before (and while)
    loading it. `config` is its config file as parsed (adapter_config.json, or headmap_config.json for the earlier
    format, checked to be one this circuitlab reads, with the task type PEFT's files carry); `run` the result.json
    of the finetune run it sits in, if any."""

    source: str  # as the user gave it: what a result names the adapter by
    path: Path  # the adapter directory (`source`, or `source/adapter` for a run directory)
    peft: bool  # PEFT's format (adapter_config.json); False: circuitlab's earlier HeadMap format
    config: dict = field(repr=False)
    run: dict | None = field(default=None, repr=False)

    @classmethod
    def read(cls, source: str | Path | AdapterDir) -> AdapterDir:
        """The adapter of `source` (an adapter directory or a finetune run directory), each of its JSON files parsed
        once; a record passed in is returned as it is, so a caller may hand either on."""
        if isinstance(source, AdapterDir):
            return source
        directory = adapter_dir(source)
        peft = (directory / PEFT_CONFIG).is_file()
        what = "PEFT adapter config" if peft else "HeadMap adapter config"
        config = read_json_object(directory / (PEFT_CONFIG if peft else LEGACY_CONFIG), what)
        result = directory.parent / "result.json"
        run = read_json_object(result, "run result") if directory.name == "adapter" and result.is_file() else None
        return cls(str(source), directory, peft, config if peft else _legacy(directory, config), run)

    # -- what it is ------------------------------------------------------------------------------------------------

    @property
    def peft_type(self):
        """PEFT's name of its method (`HEADMAP`, `LORA`, ...; as written, so possibly not a string)."""
        return self.config.get("peft_type") if self.peft else "HEADMAP"

    @property
    def is_headmap(self) -> bool:
        return self.peft_type == "HEADMAP"

    @property
    def variant(self) -> Variant | None:
        """A HeadMap adapter's variant (None for any other method)."""
        return Variant.of(self.config.get("variant", "mha")) if self.is_headmap else None

    @property
    def kind(self) -> str:
        """What a result calls it: the run's method for an adapter inside a run, else read from its config
        (`headmap-VARIANT`, `lora`, `dora`, another PEFT type by name)."""
        method = (self.run or {}).get("method")
        if isinstance(method, str):
            return method
        if self.is_headmap:
            return self.variant.method
        return "dora" if self.peft_type == "LORA" and self.config.get("use_dora") else str(self.peft_type).lower()

    @property
    def run_model(self) -> dict | None:
        """The model its finetune run records (`RUN/result.json`'s `model`); None outside a run."""
        return (self.run or {}).get("model")

    @property
    def base(self) -> dict | None:
        """The model it records it was trained on: a HeadMap adapter's `base_model`, else its run's model."""
        base = self.config.get("base_model")
        return base if isinstance(base, dict) else self.run_model

    @property
    def trained_on(self) -> ModelIdentity | None:
        """The model whose weights it must be loaded onto, as far as its files say (None: not recorded): a HeadMap
        adapter's `base_model` (refused when malformed), else its run's model when that records a fingerprint. A run
        records a probe of sampled weights (earlier runs only the exact fingerprint), compared within a dtype cast's
        rounding, so a run trained in float32 is scored in bf16 too."""
        if self.is_headmap:
            base = self.config.get("base_model")
            return base_identity(base) if base else None
        run = self.run_model
        if not run or not run.get("fingerprint") or not all(isinstance(run.get(k), int) for k in DIM_KEYS):
            return None
        probe = run.get("probe") if isinstance(run.get("probe"), dict) else None
        return ModelIdentity(run.get("name"), ModelDims(**{k: run[k] for k in DIM_KEYS}), run["fingerprint"], probe)

    @property
    def weights(self) -> Path | None:
        """Its weights file; None for a PEFT adapter saved as adapter_model.bin alone (PEFT reads that with
        torch.load(weights_only=True): nothing is unpickled but tensors)."""
        if not self.peft:
            return self.path / LEGACY_WEIGHTS
        if (self.path / "adapter_model.bin").is_file() and not (self.path / PEFT_WEIGHTS).is_file():
            return None
        return self.path / PEFT_WEIGHTS

    @cached_property
    def fingerprint(self) -> str:
        """Its config and weights files' bytes, hashed (so a retrained adapter in the same place is another
        adapter); computed once, when first asked."""
        digest = hashlib.sha256()
        for name in ADAPTER_FILES:
            if (self.path / name).is_file():
                digest.update(name.encode() + b"\0" + (self.path / name).read_bytes())
        return digest.hexdigest()[:16]

    @property
    def record(self) -> dict:
        """What a result made with it records of it, so its score is never taken for the base model's or another
        adapter's: its kind, its name (`source` as given) and its fingerprint."""
        return {"kind": self.kind, "name": self.source, "fingerprint": self.fingerprint}

    # -- checks before any model loads -----------------------------------------------------------------------------

    def check_fits(self, dims: ModelDims, name: str | None) -> None:
        """Refuse a model of other dimensions than the one it records it was trained on (its weights are compared
        once they are loaded)."""
        base = self.base
        if not base or not all(isinstance(base.get(k), int) for k in DIM_KEYS):
            return
        recorded = ModelIdentity(base.get("name") or base.get("hf_id"), ModelDims(**{k: base[k] for k in DIM_KEYS}))
        check_same_model(recorded, ModelIdentity(name, dims), f"adapter {self.path}", made="trained")

    def check_weights(self) -> None:
        """Its weights file's safetensors header, checked before anything loads it: a missing one would send PEFT to
        the hub under the directory's name, a damaged one fail in safetensors' Rust."""
        problem = safetensors_problem(self.weights) if self.weights is not None else None
        if problem:
            raise CircuitlabError(f"adapter weights {problem}")

    def headmap_dict(self) -> dict:
        """Its config as `HeadMapConfig.from_dict` reads it, or one line when it is not a HeadMap adapter."""
        if not self.is_headmap:
            raise CircuitlabError(f"{self.path} holds a {self.peft_type} adapter, not a HeadMap one")
        return self.config


def _legacy(directory: Path, d: dict) -> dict:
    """circuitlab's earlier headmap_config.json, checked to be one this circuitlab reads, as PEFT's config would
    have it (`HeadMapConfig.from_dict` reads its own spelling of the other fields: `rank`, `seed`)."""
    if d.get("format") != LEGACY_FORMAT:
        raise CircuitlabError(f"{directory / LEGACY_CONFIG} is not a circuitlab HeadMap adapter config")
    if not isinstance(d.get("format_version", 0), int) or d.get("format_version", 0) > 1:
        raise CircuitlabError(f"{directory} has adapter format version {d.get('format_version')!r}, newer than this "
                              "circuitlab understands (1); upgrade circuitlab")
    if "+" in str(d.get("method", "")):
        raise CircuitlabError(f"{directory} comes from a combination run ({d['method']}): its LoRA/DoRA part was "
                              "never saved in this format")
    return {**d, "task_type": "CAUSAL_LM", "base_model": d.get("base_model")}
