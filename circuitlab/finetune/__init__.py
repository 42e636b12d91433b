"""Fine-tuning: HeadMap, the PEFT baselines (LoRA, DoRA) and their combinations, as in the paper.

`config` (the table of methods, TrainConfig), `heads` (which heads HeadMap maps), `adapters` (what a
method adds to the model), `data` (texts, order, loss), `loop` (the optimizer loop), `checkpoint`
(safetensors + JSON), `run` (`train_and_eval`: one resumable run directory).
"""

from circuitlab.finetune.adapters import Adapters, build_adapters
from circuitlab.finetune.config import HEAD_MODES, METHODS, TrainConfig
from circuitlab.finetune.heads import choose_heads
from circuitlab.finetune.run import EvalRecord, RunResult, TrainRecord, train_and_eval

__all__ = ["HEAD_MODES", "METHODS", "Adapters", "EvalRecord", "RunResult", "TrainConfig", "TrainRecord",
           "build_adapters", "choose_heads", "train_and_eval"]
