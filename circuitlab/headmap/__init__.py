"""HeadMap (paper, Section 5): map the outputs of a circuit's heads into the residual stream.

Shaped like a PEFT tuner: `HeadMapConfig` (what), `HeadMapLayer` (the per-layer math),
`HeadMapModel` (one layer per circuit layer plus the wiring into a bridge or a plain HF model).
"""

from circuitlab.headmap.config import VARIANTS, HeadMapConfig
from circuitlab.headmap.layer import HeadMapLayer
from circuitlab.headmap.model import METHODS, HeadMapModel, Shape, decoder_layers

__all__ = ["VARIANTS", "METHODS", "HeadMapConfig", "HeadMapLayer", "HeadMapModel", "Shape", "decoder_layers"]
