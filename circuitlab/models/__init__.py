"""Models: names, loading (embedded GGUF, tiny random Llamas, hub ids, local directories), devices,
and identity (dimensions, and whether two descriptions name the same weights)."""

from circuitlab.models.config import ModelConfig
from circuitlab.models.device import DTYPES, check_device, resolve_dtype
from circuitlab.models.placement import Placement, input_device, placement
from circuitlab.models.identity import ModelDims, ModelIdentity, check_same_model, weight_fingerprint, weight_probe
from circuitlab.models.llama import decoder_layers
from circuitlab.models.loaded import LoadedModel, load_model
from circuitlab.models.names import HUB_ALIASES, TINY_CONFIGS, ModelSource, resolve
from circuitlab.models.sources import cache_dir, embedded_tokenizer, load_hf, model_config, tiny_model

__all__ = [
    "DTYPES", "ModelConfig", "Placement", "input_device", "placement", "HUB_ALIASES", "TINY_CONFIGS", "LoadedModel", "ModelDims", "ModelIdentity", "ModelSource",
    "cache_dir", "check_device", "check_same_model", "decoder_layers", "embedded_tokenizer", "load_hf",
    "load_model", "model_config", "resolve", "resolve_dtype", "tiny_model",
    "weight_fingerprint", "weight_probe",
]
