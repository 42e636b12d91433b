"""A model's dimensions before its weights load, so every check against the model's shape runs without importing
transformers or torch: the tiny models' from their definition, and otherwise the model's config.json read as JSON
where it is on disk (the embedded model's cache, a local directory, the Hugging Face cache). Only a model whose
config is nowhere on disk asks transformers, which may ask the hub; with the hub out of reach, that is one line
at once (the command is then refused in about a second, not after transformers' import)."""

from __future__ import annotations

import json
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import cache_dir, read_json_object, safetensors_problem
from circuitlab.models import hub
from circuitlab.models.identity import ModelDims
from circuitlab.models.names import TINY_CONFIGS, TINY_SHAPE, ModelSource, resolve


def config_file(src: ModelSource) -> Path | None:
    """The model's config.json on this machine, if it is there."""
    if src.kind == "embedded":
        path = cache_dir() / "smollm2-135m" / "config.json"
    elif src.kind == "local":
        path = Path(src.hf_id) / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache  # lighter than transformers; only for hub ids

        found = try_to_load_from_cache(src.hf_id, "config.json")
        path = Path(found) if isinstance(found, str) else None
    return path if path is not None and path.is_file() else None


def model_dims(name: str | ModelSource) -> ModelDims:
    hub.check_env_flags()  # every job asks this before its model loads: a bad flag is refused before any work
    src = resolve(name) if isinstance(name, str) else name
    if src.kind == "tiny":
        return ModelDims.of_config({**TINY_SHAPE, **TINY_CONFIGS[src.name]})
    path = config_file(src)
    if path is not None:
        if src.kind == "local":
            check_weight_files(path.parent)
        return ModelDims.of_config(model_config_json(path))
    if src.kind == "hub" and hub.local_only():  # not on disk and no hub to ask: say so before importing transformers
        raise hub.hub_error(f"Hugging Face hub model {src.hf_id!r}", OSError(), local=True)
    from circuitlab.models.sources import model_config  # nowhere on disk: transformers reads it (or the hub)

    return ModelDims.of_config(model_config(src))


def stored_dtype(name: str | ModelSource) -> str:
    """The precision the model's checkpoint is stored in (config.json's `dtype`, `torch_dtype` before
    transformers 5), float32 when it says none. Rewriting a checkpoint (merge, export) loads it so: float32 on the
    CPU would double a bf16 7B model to 27 GB, more than a 24 GB machine holds, and save it twice as large."""
    src = resolve(name) if isinstance(name, str) else name
    path = config_file(src) if src.kind != "tiny" else None
    config = json.loads(path.read_text()) if path is not None else {}
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


DIM_FIELDS = ("num_hidden_layers", "num_attention_heads", "hidden_size")


def model_config_json(path: Path) -> dict:
    """A model's config.json, refused in one line when it is not one (another tool's config, an adapter's, a
    number where a count must be), before transformers would fail on it with a traceback."""
    config = read_json_object(path, "model config")
    bad = [k for k in DIM_FIELDS if not (isinstance(config.get(k), int) and not isinstance(config.get(k), bool)
                                         and config[k] > 0)]
    if bad:
        raise CircuitlabError(f"{path} is not a model's config.json: no positive integer {', '.join(bad)}")
    return config


def check_weight_files(directory: Path) -> None:
    """The safetensors files of a local model directory, their headers checked (an empty or truncated file is one
    line naming it, not a failure halfway through loading)."""
    for f in sorted(directory.glob("*.safetensors")):
        problem = safetensors_problem(f)
        if problem:
            raise CircuitlabError(f"model weights {problem}")
