"""Fine-tuning: HeadMap, the PEFT baselines (LoRA, DoRA) and their combinations, as in the paper.

`config` (the table of methods, TrainConfig, RunOptions), `heads` (which heads HeadMap maps), `plain` (the
plain HF model it trains, no bridge), `wrap` (the method as one PEFT adapter), `data` (texts, held-out
split, order, loss), `trainer` (the HF Trainer with circuitlab's order and learning rates), `run`
(`train_and_eval`: one resumable run directory). `adapters` + `loop` + `checkpoint`: the earlier training
path over a TransformerBridge, kept as the reference the Trainer path is tested and benchmarked against.
"""

from circuitlab.finetune.adapters import Adapters, build_adapters
from circuitlab.finetune.config import HEAD_MODES, METHODS, RunOptions, TrainConfig
from circuitlab.finetune.heads import choose_heads
from circuitlab.finetune.plain import PlainModel, load_plain
from circuitlab.finetune.run import EvalRecord, RunResult, TrainRecord, train_and_eval

__all__ = ["HEAD_MODES", "METHODS", "Adapters", "EvalRecord", "PlainModel", "RunOptions", "RunResult", "TrainConfig",
           "TrainRecord", "build_adapters", "choose_heads", "load_plain", "train_and_eval"]
