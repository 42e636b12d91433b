"""Fine-tuning: HeadMap, the PEFT baselines (LoRA, DoRA), their combinations and CircuitLoRA, as in the papers.

`config` (the one table of methods, TrainConfig, RunOptions), `heads` (which heads HeadMap maps), `wrap` (the
method as one PEFT adapter), `data` (texts, held-out split, order, padding), `trainer` (the HF Trainer with
circuitlab's order and learning rates), `circuit_lora` (ranks from edge circuits), `results` (what a run
records), `job` (`finetune`: one resumable run directory).
"""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "HEAD_MODES": "config", "METHODS": "config", "RunOptions": "config", "TrainConfig": "config",
    "choose_heads": "heads", "EvalRecord": "results", "RunResult": "results", "TrainRecord": "results",
    "finetune": "job",
})
