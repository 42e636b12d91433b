"""HeadMap on a model: the PEFT tuner (`HeadMapTuner`), the one way HeadMap is wired into a model, and its
registration with PEFT (`register`).

`HeadMapTuner` is what `peft.get_peft_model(model, HeadMapConfig(...))` builds on a plain Hugging Face
model: it wraps `self_attn.o_proj` of each circuit layer in a `HeadMapLinear` (and, for a variant that adds after
the MLP, HS, `mlp.down_proj` in a `HeadMapSink`), after checking every head exists, before anything is changed.

Combining with LoRA/DoRA: `HeadMapConfig(lora={...})` (LoraConfig keyword arguments) makes one adapter
holding both: the tuner injects PEFT's own LoRA layers first, then HeadMap's around them, so
`get_peft_model` trains both, `save_pretrained` writes both into one adapter_model.safetensors,
`PeftModel.from_pretrained` restores both, and `merge_and_unload` folds both (innermost first, so a
DoRA under HeadMap on o_proj normalises its own weight, as in its forward pass). The other ways were
tried against peft 0.21 and do not work: `PeftModel.add_adapter` refuses an adapter of another PEFT
type; `PeftMixedModel` (`get_peft_model(..., mixed=True)`) accepts only the types in its fixed
`COMPATIBLE_TUNER_TYPES`; and a second tuner injected into the same model (`inject_adapter_in_model`
or a second `get_peft_model`) works for training, but PEFT collects an adapter's weights from every
tuner layer of the model, so each saved adapter would also hold the other's weights.

A TransformerBridge built over a model that already holds these layers (`circuitlab.models.bridge_hf`) wraps
and calls them like any other module, so the bridge runs HeadMap through the same layers. Nothing here
imports TransformerLens.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, onload_layer
from torch import nn

from circuitlab.core.errors import CircuitlabError
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import register_peft_method

from circuitlab.headmap.config import HEADMAP, HeadMapConfig
from circuitlab.headmap.layer import (
    HS_CANNOT_MERGE,
    HeadMapLayer,
    HeadMapLinear,
    HeadMapSink,
    build_maps,
    give_attention_biases,
)
from circuitlab.models.identity import ModelDims
from circuitlab.models.llama import decoder_layers


def _find(module, cls):
    """`module` or the first of its (PEFT-wrapped) base layers that is a `cls`."""
    while module is not None and not isinstance(module, cls):
        module = getattr(module, "base_layer", None)
    return module


def plan(config: HeadMapConfig, model) -> tuple[dict[str, tuple[str, int]], dict[int, HeadMapLayer]]:
    """({module name: ("read" | "sink", layer)}, {layer: map}) for `config` on `model`.

    Refuses, as one line, heads that do not exist in the model and decoder layers that are not
    Llama-style; called before anything is injected, so a refused config leaves the model as it was."""
    dims = ModelDims.of_config(model.config)
    config.check(dims)
    layers = decoder_layers(model)
    if len(layers) != dims.n_layers:
        raise CircuitlabError(f"model has {len(layers)} decoder layers, its config says {dims.n_layers}")
    names = {id(m): n for n, m in model.named_modules()}
    targets = {}
    for layer in config.heads:
        block = layers[layer]
        targets[names[id(block.self_attn.o_proj)]] = ("read", layer)
        if config.variant.after_mlp:
            down = getattr(getattr(block, "mlp", None), "down_proj", None)
            if down is None or hasattr(block, "post_feedforward_layernorm"):
                raise CircuitlabError(f"{type(block).__name__} does not end in residual + mlp.down_proj(...), "
                                      "where the hidden-state variant adds its output; use variant mha")
            targets[names[id(down)]] = ("sink", layer)
    return targets, build_maps(config.heads, dims, config.r, config.scaling, config.init_seed, config.init_a)


def link_sinks(model) -> None:
    """Point each HeadMapSink at its decoder layer's HeadMapLinear outbox."""
    for block in decoder_layers(model):
        reader = _find(block.self_attn.o_proj, HeadMapLinear)
        sink = _find(getattr(getattr(block, "mlp", None), "down_proj", None), HeadMapSink)
        if reader is not None and sink is not None:
            sink.inbox = reader.outbox


class HeadMapTuner(BaseTuner):
    """PEFT's model class for HeadMap (registered as "headmap"; see the module docstring)."""

    prefix: str = "headmap_"
    tuner_layer_cls = BaseTunerLayer  # HeadMap's layers and the LoRA layers of `HeadMapConfig.lora`
    target_module_mapping: ClassVar[dict] = {}

    def _prepare_adapter_config(self, peft_config: HeadMapConfig, model_config: dict) -> HeadMapConfig:
        return peft_config  # the targets follow from `heads` and the model (`inject_adapter`)

    def inject_adapter(self, model: nn.Module, adapter_name: str, autocast_adapter_dtype: bool = True,
                       low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        """LoRA first (if configured), then HeadMap around it; a given `state_dict` is not needed to
        find HeadMap's modules (they follow from the config), so it is not used."""
        config = self.peft_config[adapter_name]
        self._plan = plan(config, model)  # refuses bad heads before anything changes
        config.target_modules = sorted(self._plan[0])
        try:
            if config.lora:
                self._inject_lora(model, config, adapter_name)
            super().inject_adapter(model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                                   low_cpu_mem_usage=low_cpu_mem_usage)
        finally:
            self._plan = None
        link_sinks(model)

    @staticmethod
    def _inject_lora(model: nn.Module, config: HeadMapConfig, adapter_name: str) -> None:
        """PEFT's LoRA layers under the same adapter name, seeded by `init_seed`."""
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(**config.lora)
        lora.inference_mode = config.inference_mode
        # LoRA's throwaway tuner would add its config to a `peft_config` dict it finds on the model (this
        # tuner's, from a first adapter) and leaves its own there: hide ours meanwhile, then put it back.
        previous = model.__dict__.pop("peft_config", None)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.init_seed)
                inject_adapter_in_model(lora, model, adapter_name=adapter_name)
        finally:
            model.__dict__.pop("peft_config", None)
            if previous is not None:
                model.peft_config = previous

    def _create_and_replace(self, peft_config: HeadMapConfig, adapter_name: str, target: nn.Module,
                            target_name: str, parent: nn.Module, current_key: str, **kwargs) -> None:
        targets, maps = self._plan
        role, layer = targets[current_key]
        if role == "read":
            if isinstance(target, HeadMapLinear):
                target.update_layer(adapter_name, maps[layer], peft_config.variant, peft_config.inference_mode)
                return
            new = HeadMapLinear(target, adapter_name, maps[layer], peft_config.variant, peft_config.inference_mode)
        else:
            if isinstance(target, HeadMapSink):
                target.update_layer(adapter_name)
                return
            new = HeadMapSink(target, adapter_name)
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)  # an added adapter is not trainable until set active
        self._replace_module(parent, target_name, new, target)

    def delete_adapter(self, adapter_name: str) -> None:
        """As PEFT's, then one choice of active adapters for every layer: HeadMap's adapters wrap
        different modules, so the layers PEFT asks may not all know the remaining adapters."""
        super().delete_adapter(adapter_name)
        active = [a for a in self.active_adapters if a in self.peft_config] or sorted(self.peft_config)[:1]
        if active:
            self.set_adapter(active)

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """`...o_proj.headmap_map.<adapter>.down.weight` -> `...o_proj.headmap_map.down.weight` (PEFT's
        default expects the adapter name second to last); LoRA's keys as PEFT writes them."""
        marker = f".headmap_map.{adapter_name}."
        if marker in key:
            return key.replace(marker, ".headmap_map.", 1)
        return super()._remove_adapter_name_from_key(key, adapter_name)

    # -- merging ---------------------------------------------------------------------------------

    def _merge_innermost_first(self, adapter_names: list[str] | None, safe_merge: bool) -> None:
        names = [n for n in (adapter_names or self.active_adapters) if n in self.peft_config]
        if any(not self.peft_config[n].variant.mergeable for n in names):
            raise CircuitlabError(HS_CANNOT_MERGE)
        self._check_merge_allowed()
        if names:
            give_attention_biases(self.model)
        layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        for module in reversed(layers):  # modules() lists a wrapper before the layers it wraps
            with onload_layer(module):
                module.merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        self._merge_innermost_first(adapter_names, safe_merge)

    def _unload_and_optionally_merge(self, merge: bool = True, progressbar: bool = False, safe_merge: bool = False,
                                     adapter_names: list[str] | None = None):
        if merge:
            self._merge_innermost_first(adapter_names, safe_merge)
        return super()._unload_and_optionally_merge(merge=False, progressbar=progressbar, adapter_names=adapter_names)


def register() -> None:
    """Make PEFT know HeadMap (`peft_type` "HEADMAP"): `get_peft_model(model, HeadMapConfig(...))` and
    `PeftModel.from_pretrained` of a HeadMap adapter directory work after it. Called by circuitlab wherever it
    builds or loads a HeadMap adapter; call it once before using HeadMap with PEFT directly. Idempotent."""
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(HEADMAP) is None:
        register_peft_method(name="headmap", config_cls=HeadMapConfig, model_cls=HeadMapTuner, prefix="headmap_")


def maps(peft_model, adapter: str = "default") -> dict[int, HeadMapLayer]:
    """Layer -> the trained map of `adapter` inside a PEFT model (LoRA on o_proj sits inside HeadMap's wrapper)."""
    config = peft_model.peft_config[adapter]
    layers = decoder_layers(peft_model.get_base_model())
    return {layer: _find(layers[layer].self_attn.o_proj, HeadMapLinear).headmap_map[adapter] for layer in config.heads}
