"""What `circuitlab eval` is asked to do (no torch: the CLI reads it before anything loads)."""

from __future__ import annotations

from dataclasses import dataclass

from circuitlab.core.protocol import DEFAULT_PROTOCOL, PROTOCOL_NAMES
from circuitlab.core.settings import check_settings, setting

BATCH_SIZE = 16  # sequences per scoring forward


@dataclass
class EvalConfig:
    split: str | None = setting(None, "split to evaluate (default: the task's evaluation split)")
    limit: int | None = setting(None, "evaluate only the first N documents", minimum=1)
    batch_size: int = setting(BATCH_SIZE, "sequences per forward", minimum=1)
    protocol: str = setting(DEFAULT_PROTOCOL, "paper: current lm-eval scoring; official: the official code's "
                                              "lm-eval 0.3 (docs/protocols.md)", choices=PROTOCOL_NAMES)
    adapter: str | None = setting(None, "evaluate the model with this adapter: a finetune run directory, or any PEFT "
                                        "adapter directory (HeadMap, LoRA, DoRA, an exported LoRA)", metavar="DIR")

    def __post_init__(self) -> None:
        check_settings(self)


