"""HeadMap adapter directories: `headmap_config.json` + `adapter.safetensors`, JSON and safetensors only.

The config holds the adapter's HeadMapConfig, the method it was trained by, and its base model:
name, hub id, dimensions, weight fingerprint and a probe of sampled weight values, so an adapter is
never attached to other weights (`base_identity` + `models.check_same_model`). This is circuitlab's
own format, which `circuitlab finetune` writes; a PEFT adapter directory (adapter_config.json +
adapter_model.safetensors) comes from `save_pretrained` on a `get_peft_model(model, HeadMapConfig(...))`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from circuitlab.errors import CircuitlabError
from circuitlab.headmap.config import HeadMapConfig
from circuitlab.headmap.model import HeadMapModel
from circuitlab.io import read_json_object, write_bytes_atomic, write_json_atomic
from circuitlab.models.identity import ModelDims, ModelIdentity

CONFIG_FILE = "headmap_config.json"
WEIGHTS_FILE = "adapter.safetensors"
FORMAT = "circuitlab-headmap"
FORMAT_VERSION = 1
DIM_KEYS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")


def base_info(hf_model, name: str | None = None, hf_id: str | None = None, fingerprint: str | None = None) -> dict:
    """What an adapter records about the model it was trained on."""
    ident = ModelIdentity.of_hf(hf_model, name)
    return {"name": name, "hf_id": hf_id or getattr(hf_model.config, "_name_or_path", None),
            "fingerprint": fingerprint or ident.fingerprint, **{k: getattr(ident.dims, k) for k in DIM_KEYS},
            "probe": ident.probe}


def base_identity(base: dict) -> ModelIdentity:
    try:
        dims = ModelDims(**{k: int(base[k]) for k in DIM_KEYS})
    except (KeyError, TypeError, ValueError) as e:
        raise CircuitlabError(f"adapter config: base_model lacks a valid {e}") from None
    return ModelIdentity(base.get("name") or base.get("hf_id"), dims, base.get("fingerprint"), base.get("probe"))


def config_json(config: HeadMapConfig) -> dict:
    """The HeadMap fields of `headmap_config.json`, in the names this format has always used."""
    return {"variant": config.variant, "heads": {str(k): v for k, v in config.heads.items()}, "rank": config.r,
            "scaling": config.scaling, "seed": config.init_seed, "init_a": config.init_a}


def save_adapter(hm: HeadMapModel, directory: str | Path, base: dict, extra: dict | None = None) -> Path:
    """Write `headmap_config.json` and `adapter.safetensors` (fp32, on CPU) into `directory`."""
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in hm.state_dict().items()}
    write_bytes_atomic(directory / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT}))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config_json(hm.config), "base_model": base}
    config.update(extra or {})
    write_json_atomic(directory / CONFIG_FILE, config)
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CircuitlabError(f"adapter directory not found: {directory}")
    config = read_json_object(directory / CONFIG_FILE, "HeadMap adapter config")
    if config.get("format") != FORMAT:
        raise CircuitlabError(f"{directory / CONFIG_FILE} is not a circuitlab HeadMap adapter config")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CircuitlabError(f"{directory} has adapter format version {version!r}, newer than this circuitlab "
                              f"understands ({FORMAT_VERSION}); upgrade circuitlab")
    return config


def load_adapter(directory: str | Path) -> tuple[HeadMapModel, dict]:
    """The adapter (on CPU, fp32) and its config dict, from safetensors and JSON only."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    hm = HeadMapModel(HeadMapConfig.from_dict(config), base_identity(config.get("base_model") or {}).dims)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CircuitlabError(f"adapter weights not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CircuitlabError(f"cannot read adapter weights {path}: {e}") from None
    try:
        hm.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CircuitlabError(f"adapter weights {path} do not match its config: {first}") from None
    return hm, config


def check_base(base: dict, hf_model, what: str = "adapter") -> None:
    """Refuse a model whose dimensions or weights differ from the one `base` describes."""
    from circuitlab.models.identity import check_same_model

    check_same_model(base_identity(base), ModelIdentity.of_hf(hf_model), what, made="trained")
