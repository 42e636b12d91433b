"""Adapter directories: PEFT's (adapter_config.json + adapter_model.safetensors), the one format circuitlab writes,
for HeadMap and for any other PEFT method; circuitlab's earlier HeadMap format (headmap_config.json +
adapter.safetensors) still loads; and a `circuitlab finetune` run directory stands for its `adapter/`.

Loading checks the base model first: a HeadMap adapter records the model it was trained on
(`HeadMapConfig.base_model`: dimensions, weight fingerprint, a probe of sampled weights), a run directory records
it in its result, and other weights are refused in one line, as is an adapter whose shapes do not fit. JSON and
safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from peft import PeftModel
from safetensors.torch import load_file, save_file

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object
from circuitlab.headmap.config import HeadMapConfig
from circuitlab.headmap.dirs import (DIM_KEYS, LEGACY_CONFIG, LEGACY_FORMAT, LEGACY_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS,
                                     adapter_dir, check_weights, run_model)
from circuitlab.headmap.tuner import register
from circuitlab.models.fingerprint import hf_identity
from circuitlab.models.identity import ModelDims, ModelIdentity, check_same_model
from circuitlab.models.llama import decoder_layers



def base_info(hf_model, name: str | None = None, hf_id: str | None = None, fingerprint: str | None = None,
              revision: str | None = None) -> dict:
    """What an adapter records about the model it was trained on: its alias and hub id (never a cache path),
    revision, dimensions, weight fingerprint and probe."""
    ident = hf_identity(hf_model, name)
    return {"name": name, "hf_id": hf_id or getattr(hf_model.config, "_name_or_path", None), "revision": revision,
            "fingerprint": fingerprint or ident.fingerprint, **{k: getattr(ident.dims, k) for k in DIM_KEYS},
            "probe": ident.probe}


def check_base(base: dict | None, hf_model, what: str = "adapter") -> None:
    """Refuse a model whose dimensions or weights differ from the one `base` describes (None: not recorded)."""
    if not base:
        return
    try:
        dims = ModelDims(**{k: int(base[k]) for k in DIM_KEYS})
    except (KeyError, TypeError, ValueError) as e:
        raise CircuitlabError(f"{what} config: base_model lacks a valid {e}") from None
    recorded = ModelIdentity(base.get("name") or base.get("hf_id"), dims, base.get("fingerprint"), base.get("probe"))
    check_same_model(recorded, hf_identity(hf_model), what, made="trained")


def read_config(directory: str | Path) -> HeadMapConfig:
    """The HeadMap config of an adapter directory in either format; one line for anything else."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CircuitlabError(f"adapter directory not found: {directory}")
    if (directory / PEFT_CONFIG).is_file():
        d = read_json_object(directory / PEFT_CONFIG, "PEFT adapter config")
        if d.get("peft_type") != "HEADMAP":
            raise CircuitlabError(f"{directory} holds a {d.get('peft_type')} adapter, not a HeadMap one")
        return HeadMapConfig.from_dict(d)
    d = read_json_object(directory / LEGACY_CONFIG, "HeadMap adapter config")
    if d.get("format") != LEGACY_FORMAT:
        raise CircuitlabError(f"{directory / LEGACY_CONFIG} is not a circuitlab HeadMap adapter config")
    if not isinstance(d.get("format_version", 0), int) or d.get("format_version", 0) > 1:
        raise CircuitlabError(f"{directory} has adapter format version {d.get('format_version')!r}, newer than this "
                              "circuitlab understands (1); upgrade circuitlab")
    if "+" in str(d.get("method", "")):
        raise CircuitlabError(f"{directory} comes from a combination run ({d['method']}): its LoRA/DoRA part was "
                              "never saved in this format")
    return HeadMapConfig.from_dict({**d, "task_type": "CAUSAL_LM", "base_model": d.get("base_model")})


def load(hf_model, directory: str | Path, check: bool = True, is_trainable: bool = False) -> PeftModel:
    """A plain HF model with the adapter of `directory` (either format) as PEFT's `PeftModel`; with `check`, a
    model other than the adapter's base (dimensions or weights) is refused before anything changes."""
    directory = Path(directory)
    config = read_config(directory)
    config.check(ModelDims.of_config(hf_model.config))
    if check:
        check_base(config.base_model, hf_model)
    register()
    if (directory / PEFT_CONFIG).is_file():
        return from_pretrained(hf_model, str(directory), is_trainable=is_trainable)
    with tempfile.TemporaryDirectory() as tmp:  # the earlier format, rewritten as PEFT's
        config.save_pretrained(tmp)
        save_file(legacy_state(directory, config, hf_model), str(Path(tmp) / PEFT_WEIGHTS))
        return from_pretrained(hf_model, tmp, is_trainable=is_trainable)


def legacy_state(directory: Path, config: HeadMapConfig, hf_model) -> dict:
    """adapter.safetensors' `layers.{l}.{down,up}.{weight,bias}` under the names PEFT saves them by."""
    path = directory / LEGACY_WEIGHTS
    if not path.is_file():
        raise CircuitlabError(f"adapter weights not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CircuitlabError(f"cannot read adapter weights {path}: {e}") from None
    names = {id(m): n for n, m in hf_model.named_modules()}
    o_proj = {layer: names[id(b.self_attn.o_proj)] for layer, b in enumerate(decoder_layers(hf_model))}
    want = {f"layers.{la}.{part}.{kind}" for la in config.heads for part in ("down", "up") for kind in ("weight", "bias")}
    if set(state) != want:
        raise CircuitlabError(f"adapter weights {path} do not match its config (layers {sorted(config.heads)})")
    out = {}
    for key, tensor in state.items():
        _, layer, rest = key.split(".", 2)
        out[f"base_model.model.{o_proj[int(layer)]}.headmap_map.{rest}"] = tensor
    return out


def load_any(hf_model, source: str | Path, check: bool = True) -> PeftModel:
    """Any adapter circuitlab or PEFT wrote (a run directory, HeadMap's or another PEFT type's adapter directory)
    on a plain HF model, its base model checked first where the files record it."""
    directory = adapter_dir(source)
    if (directory / PEFT_CONFIG).is_file() and read_json_object(directory / PEFT_CONFIG, "PEFT adapter config").get(
            "peft_type") != "HEADMAP":
        recorded = run_model(directory)
        if check and recorded and recorded.get("fingerprint") and all(isinstance(recorded.get(k), int) for k in DIM_KEYS):
            # A run records a probe of sampled weights (earlier runs only the exact fingerprint): compared within a
            # dtype cast's rounding, so a run trained in float32 is scored in bf16 too.
            probe = recorded.get("probe") if isinstance(recorded.get("probe"), dict) else None
            check_same_model(ModelIdentity(recorded.get("name"), ModelDims(**{k: recorded[k] for k in DIM_KEYS}),
                                           recorded["fingerprint"], probe), hf_identity(hf_model, probe=probe is not None),
                             f"adapter {directory}", made="trained")
        try:
            return from_pretrained(hf_model, str(directory))
        except (RuntimeError, ValueError, KeyError) as e:  # shapes that do not fit, an unknown PEFT type
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CircuitlabError(f"cannot load adapter {directory} onto this model: {first[:300]}") from None
    return load(hf_model, directory, check=check)


def check_peft_type(source: str | Path) -> Path:
    """The adapter directory of `source`, refused in one line when its PEFT type is not one this PEFT knows (read
    from its JSON, before any model loads)."""
    from peft import PromptLearningConfig
    from peft.utils import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    directory = adapter_dir(source)
    if (directory / PEFT_CONFIG).is_file():
        register()
        kind = read_json_object(directory / PEFT_CONFIG, "PEFT adapter config").get("peft_type")
        if kind not in {t.value for t in PeftType}:
            raise CircuitlabError(f"{directory} holds an adapter of PEFT type {kind!r}, which this PEFT does not know")
        if issubclass(PEFT_TYPE_TO_CONFIG_MAPPING[kind], PromptLearningConfig):
            raise CircuitlabError(f"{directory} holds a {kind} adapter, which adds prompts instead of changing the "
                                  "model's layers; circuitlab scores adapters that change the layers (LoRA, DoRA, "
                                  "HeadMap, ...)")
    check_weights(directory)
    return directory


def from_pretrained(hf_model, directory: str, **kwargs) -> PeftModel:
    """`PeftModel.from_pretrained`, with a pickle it refuses to load (an `adapter_model.bin` that holds more than
    tensors: PEFT reads it with `weights_only=True`, so nothing runs) as one line naming the file."""
    import pickle

    try:
        return PeftModel.from_pretrained(hf_model, directory, **kwargs)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CircuitlabError(f"{Path(directory) / 'adapter_model.bin'}: refused to unpickle it (only tensors are "
                              f"loaded from pickles): {first[:200]}") from None
