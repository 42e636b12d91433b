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
from circuitlab.headmap.config import HeadMapConfig
from circuitlab.headmap.dirs import DIM_KEYS, LEGACY_WEIGHTS, PEFT_WEIGHTS, AdapterDir, base_identity
from circuitlab.headmap.tuner import register
from circuitlab.models.fingerprint import hf_identity
from circuitlab.models.identity import ModelDims, check_same_model
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
    if base:
        check_same_model(base_identity(base, what), hf_identity(hf_model), what, made="trained")


def headmap_adapter(source: str | Path | AdapterDir) -> AdapterDir:
    """The HeadMap adapter of `source` (read, unless it is a record already), or one line saying it is missing or
    what it is instead."""
    if not isinstance(source, AdapterDir) and not Path(source).is_dir():
        raise CircuitlabError(f"adapter directory not found: {source}")
    adapter = AdapterDir.read(source)
    adapter.headmap_dict()
    return adapter


def read_config(source: str | Path | AdapterDir) -> HeadMapConfig:
    """The HeadMap config of an adapter directory in either format; one line for anything else."""
    return HeadMapConfig.from_dict(headmap_adapter(source).config)


def load(hf_model, directory: str | Path | AdapterDir, check: bool = True, is_trainable: bool = False) -> PeftModel:
    """A plain HF model with the HeadMap adapter of `directory` (either format) as PEFT's `PeftModel`; with `check`,
    a model other than the adapter's base (dimensions or weights) is refused before anything changes."""
    return attach(hf_model, headmap_adapter(directory), check, is_trainable)


def load_any(hf_model, source: str | Path | AdapterDir, check: bool = True) -> PeftModel:
    """Any adapter circuitlab or PEFT wrote (a run directory, HeadMap's or another PEFT type's adapter directory, or
    its `AdapterDir` record) on a plain HF model, its base model checked first where the files record it."""
    return attach(hf_model, AdapterDir.read(source), check)


def attach(hf_model, adapter: AdapterDir, check: bool = True, is_trainable: bool = False) -> PeftModel:
    """The adapter of the record `adapter` injected into `hf_model` by PEFT, from the record alone (no file of it is
    parsed again here; PEFT reads its own): a HeadMap adapter's heads and the model it was trained on are checked
    against `hf_model` first, and the earlier format is rewritten as PEFT's on the way."""
    config = HeadMapConfig.from_dict(adapter.config) if adapter.is_headmap else None
    if config is not None:
        config.check(ModelDims.of_config(hf_model.config))
    expected = adapter.trained_on if check else None
    if expected is not None:
        check_same_model(expected, hf_identity(hf_model, probe=expected.probe is not None), f"adapter {adapter.path}",
                         made="trained")
    register()
    if not adapter.peft:
        with tempfile.TemporaryDirectory() as tmp:  # the earlier format, rewritten as PEFT's
            config.save_pretrained(tmp)
            save_file(legacy_state(adapter.path, config, hf_model), str(Path(tmp) / PEFT_WEIGHTS))
            return from_pretrained(hf_model, tmp, is_trainable=is_trainable)
    try:
        return from_pretrained(hf_model, str(adapter.path), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:  # shapes that do not fit, an unknown PEFT type
        if config is not None:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CircuitlabError(f"cannot load adapter {adapter.path} onto this model: {first[:300]}") from None


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


def check_peft_type(adapter: AdapterDir) -> None:
    """Refuse in one line an adapter whose PEFT type this PEFT does not know, that adds prompts instead of changing
    layers, or whose weights file is missing or damaged: from its record, before any model loads."""
    from peft import PromptLearningConfig
    from peft.utils import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    directory, kind = adapter.path, adapter.peft_type
    if adapter.peft:
        register()
        if kind not in {t.value for t in PeftType}:
            raise CircuitlabError(f"{directory} holds an adapter of PEFT type {kind!r}, which this PEFT does not know")
        if issubclass(PEFT_TYPE_TO_CONFIG_MAPPING[kind], PromptLearningConfig):
            raise CircuitlabError(f"{directory} holds a {kind} adapter, which adds prompts instead of changing the "
                                  "model's layers; circuitlab scores adapters that change the layers (LoRA, DoRA, "
                                  "HeadMap, ...)")
    adapter.check_weights()


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
