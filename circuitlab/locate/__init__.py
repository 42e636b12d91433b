"""Locating knowledge circuits: which attention heads, masked, hurt a task most (paper, Section 4).

- `config`: `LocateConfig` (checked on its own) and its `Plan` (checked against a model).
- `samples`: which samples, and how the model reads them.
- `evaluator`: the question every strategy asks, and `PlainEvaluator`, the paper's answer.
- `ablation`: what a masked head's z becomes (zero, its mean over reference docs, its corrupted-run value).
- `packing`, `blocks`, `flops`, `engine`: the `Engine`, the same answers at a fraction of the cost.
- `strategies/`: one file per algorithm, one registry.
- `steps`: typed step keys, the memo and checkpoint that make runs resumable, progress units.
- `run`: `locate()` and `locate_to(path)`.
"""

from circuitlab.locate.config import LocateConfig, Plan, default_heads_per_layer, parse_layers
from circuitlab.locate.engine import Engine
from circuitlab.locate.evaluator import Evaluator, PlainEvaluator
from circuitlab.locate.run import locate, locate_to
from circuitlab.locate.samples import SampleConfig, locating_samples, read_samples_file, samples_fingerprint
from circuitlab.locate.steps import Memo, Step, checkpoint_path
from circuitlab.locate.strategies import STRATEGY_NAMES, get_strategy

__all__ = [
    "STRATEGY_NAMES", "Engine", "Evaluator", "LocateConfig", "Memo", "Plan", "PlainEvaluator", "SampleConfig",
    "Step", "checkpoint_path", "default_heads_per_layer", "get_strategy", "locate", "locate_to",
    "locating_samples", "parse_layers", "read_samples_file", "samples_fingerprint",
]
