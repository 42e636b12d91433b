"""HeadMap (paper, Section 5): map the outputs of a circuit's heads into the residual stream.

Laid out like a PEFT tuner, and registered with PEFT as the method "headmap" on import, so that on a
plain `transformers` causal LM of the Llama family:

    config = HeadMapConfig.from_circuit(circuit, variant="mha", r=32)
    model = peft.get_peft_model(model, config)        # trains only the maps
    model.save_pretrained(DIR)                         # adapter_config.json + adapter_model.safetensors
    model = peft.PeftModel.from_pretrained(base, DIR)  # after `import circuitlab`
    merged = model.merge_and_unload()                  # "mha" folds into o_proj; "hs" refuses

`config` (HeadMapConfig: what), `layer` (HeadMapLayer: the per-layer math, and HeadMap's PEFT layers),
`model` (HeadMapTuner: PEFT's model class; HeadMapModel: one adapter's maps, wired into a bridge or a
plain HF model); `files` (circuitlab's adapter directory), `hf` (attach to a plain HF model),
`conversion` (export, merge into o_proj, PEFT LoRA).
"""

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import register_peft_method

from circuitlab.headmap.config import HEADMAP, VARIANTS, HeadMapConfig
from circuitlab.headmap.files import (
    base_info,
    check_base,
    load_adapter,
    read_adapter_config,
    save_adapter,
)
from circuitlab.headmap.hf import attach, attached, detach
from circuitlab.headmap.layer import HeadMapLayer, HeadMapLinear, HeadMapSink
from circuitlab.headmap.model import HeadMapModel, HeadMapTuner

if PEFT_TYPE_TO_CONFIG_MAPPING.get(HEADMAP) is None:  # once per process, also if this module is reloaded
    register_peft_method(name="headmap", config_cls=HeadMapConfig, model_cls=HeadMapTuner, prefix="headmap_")

__all__ = [
    "VARIANTS", "HeadMapConfig", "HeadMapLayer", "HeadMapLinear", "HeadMapModel", "HeadMapSink", "HeadMapTuner",
    "attach", "attached", "base_info", "check_base", "detach", "load_adapter", "read_adapter_config", "save_adapter",
]
