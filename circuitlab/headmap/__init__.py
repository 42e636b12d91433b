"""HeadMap (paper, Section 5): map the outputs of a circuit's heads into the residual stream.

Shaped like a PEFT tuner: `config` (HeadMapConfig: what), `layer` (HeadMapLayer: the per-layer
math), `model` (HeadMapModel: one layer per circuit layer plus the wiring into a bridge or a plain
HF model); `files` (the adapter directory), `hf` (attach to a plain HF model), `conversion`
(export, merge into o_proj, PEFT LoRA).
"""

from circuitlab.headmap.config import VARIANTS, HeadMapConfig
from circuitlab.headmap.files import base_info, check_base, load_adapter, read_adapter_config, save_adapter
from circuitlab.headmap.hf import attach, attached, detach
from circuitlab.headmap.layer import HeadMapLayer
from circuitlab.headmap.model import HeadMapModel

__all__ = [
    "VARIANTS", "HeadMapConfig", "HeadMapLayer", "HeadMapModel", "attach", "attached", "base_info", "check_base",
    "detach", "load_adapter", "read_adapter_config", "save_adapter",
]
