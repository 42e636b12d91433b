"""Locating knowledge circuits: which attention heads, masked, hurt a task most (paper, Section 4).

- `config`: `LocateConfig` (checked on its own; no torch) and `plan` (the config against a model's dimensions).
- `samples`: which samples (`SampleConfig`, samples files, the paper's selection); `encoding`: how the
  model reads them and how their losses make a set's loss.
- `masking`: heads masked through `hook_z`; `ablation`: what a masked head's z becomes.
- `evaluator`: `PlainEvaluator`, the paper's answer to the question every strategy asks.
- `packing`, `blocks`, `flops`, `engine`: the `Engine`, the same answers at a fraction of the cost.
- `strategies/`: one file per algorithm, one registry.
- `steps`: typed step keys, the memo that makes runs resumable, progress units.
- `resolved`: `ResolvedRun`, the protocol, plan and model identity resolved once and handed down.
- `run`: `locate()` and `locate_to(path)`; `job`: `locate_task`, samples selected then located.
"""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "LocateConfig": "config", "default_heads_per_layer": "config", "parse_layers": "config", "Plan": "plan",
    "SampleConfig": "samples", "read_samples_file": "samples", "samples_fingerprint": "samples",
    "STRATEGY_NAMES": "strategies", "get_strategy": "strategies", "Memo": "steps", "Step": "steps",
    "Engine": "engine", "Evaluator": "strategies", "PlainEvaluator": "evaluator",
    "locate": "run", "locate_to": "run", "locating_samples": "selection", "locate_task": "job",
})
