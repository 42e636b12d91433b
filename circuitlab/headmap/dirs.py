"""Which directory holds an adapter, what a finetune run records about the model it trained, and what a result
records about the adapter it was made with: read before any model loads (this module imports neither torch nor
PEFT)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object
from circuitlab.models.identity import ModelDims, ModelIdentity, check_same_model

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
LEGACY_CONFIG, LEGACY_WEIGHTS, LEGACY_FORMAT = "headmap_config.json", "adapter.safetensors", "circuitlab-headmap"
DIM_KEYS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")


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


def run_model(directory: Path) -> dict | None:
    """The model a finetune run's result records (`RUN/result.json`'s `model`), for an adapter inside a run."""
    result = directory.parent / "result.json" if directory.name == "adapter" else None
    return read_json_object(result, "run result").get("model") if result is not None and result.is_file() else None


def recorded_base(directory: Path) -> dict | None:
    """The model an adapter records it was trained on: a HeadMap adapter's `base_model`, else its run's model."""
    if (directory / PEFT_CONFIG).is_file():
        base = read_json_object(directory / PEFT_CONFIG, "PEFT adapter config").get("base_model")
    else:
        base = read_json_object(directory / LEGACY_CONFIG, "HeadMap adapter config").get("base_model")
    return base if isinstance(base, dict) else run_model(directory)


def check_fits(directory: Path, dims: ModelDims, name: str | None) -> None:
    """Refuse, before the model loads, an adapter recorded as trained on a model of other dimensions (its weights
    are compared once they are loaded)."""
    base = recorded_base(directory)
    if not base or not all(isinstance(base.get(k), int) for k in DIM_KEYS):
        return
    recorded = ModelIdentity(base.get("name") or base.get("hf_id"), ModelDims(**{k: base[k] for k in DIM_KEYS}))
    check_same_model(recorded, ModelIdentity(name, dims), f"adapter {directory}", made="trained")


ADAPTER_FILES = (PEFT_CONFIG, PEFT_WEIGHTS, "adapter_model.bin", LEGACY_CONFIG, LEGACY_WEIGHTS)


def adapter_record(source: str | Path) -> dict:
    """What a result made with the adapter of `source` records of it, so its score is never taken for the base
    model's or another adapter's: its kind (the run's method for a run directory, else read from its config:
    `headmap-VARIANT`, `lora`, `dora`, another PEFT type by name), its name (`source` as given) and a fingerprint of
    its config and weights files (their bytes, so a retrained adapter in the same place is another adapter)."""
    directory = adapter_dir(source)
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        if (directory / name).is_file():
            digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    return {"kind": adapter_kind(directory), "name": str(source), "fingerprint": digest.hexdigest()[:16]}


def adapter_kind(directory: Path) -> str:
    run = directory.parent / "result.json" if directory.name == "adapter" else None
    method = read_json_object(run, "run result").get("method") if run is not None and run.is_file() else None
    if isinstance(method, str):
        return method
    peft = (directory / PEFT_CONFIG).is_file()
    config = read_json_object(directory / (PEFT_CONFIG if peft else LEGACY_CONFIG), "adapter config")
    kind = str(config.get("peft_type", "HEADMAP")) if peft else "HEADMAP"
    if kind == "HEADMAP":
        return f"headmap-{config.get('variant', 'mha')}"
    return "dora" if kind == "LORA" and config.get("use_dora") else kind.lower()


def check_weights(directory: Path) -> None:
    """An adapter directory's weights file, its safetensors header checked before anything loads it: a missing
    one would send PEFT to the hub under the directory's name, a damaged one fail in safetensors' Rust."""
    from circuitlab.core.io import safetensors_problem

    if (directory / PEFT_CONFIG).is_file():
        if (directory / "adapter_model.bin").is_file() and not (directory / PEFT_WEIGHTS).is_file():
            return  # PEFT reads it with torch.load(weights_only=True): nothing is unpickled but tensors
        weights = directory / PEFT_WEIGHTS
    else:
        weights = directory / LEGACY_WEIGHTS
    problem = safetensors_problem(weights)
    if problem:
        raise CircuitlabError(f"adapter weights {problem}")
