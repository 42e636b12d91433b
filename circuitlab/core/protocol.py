"""The two protocols circuitlab can follow: the paper's text (`paper`) and the paper's official code
(`official`), point by point as `../shared/spec/tasks.md`, section "The official code's protocol",
writes them out. Every command that locates, fine-tunes or evaluates takes `--protocol NAME` and
every result file records the name, so two results are comparable only when their protocols match.

`paper` is the default: it is what the paper's text defines (Eq. 5's per-sample answer loss, the
correctness filter, current lm-evaluation-harness scoring), what circuitlab's committed circuits and
results were made with, and what a user comparing against current lm-eval numbers expects.
`official` reproduces what produced the paper's tables. Precision is not part of a protocol: it stays
the separate `--dtype` choice (the official code locates in bf16 and evaluates in fp16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from circuitlab.core.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    """Each field is one point where the official code differs from the paper's text."""

    name: str
    # locating (locating.py): the gold continuation's tokens plus an appended EOS token, and the loss
    # averaged over the tokens of a batch (not per sample first)
    locate_target_eos: bool
    locate_loss: str  # "sample_mean" (Eq. 5) | "token_mean" (HF's labels loss over the batch)
    # sample selection (sample_w_loss_llama2.py): the lowest-loss docs, correct or not
    correctness_filter: bool
    # fine-tuning (HeadMap_*.py, HF Trainer)
    train_eos: bool  # EOS appended to every training text
    held_out: bool  # validation split for ARC-e, ARC-c, OBQA; 10 % of train held out otherwise
    eval_every: int | None  # evaluation loss every N steps, and the best checkpoint restored at the end
    max_grad_norm: float | None  # gradient clipping (Trainer's default 1.0)
    down_init_a: float  # kaiming_uniform_(Down.weight, a=...): 0 in the official code, sqrt(5) = nn.Linear's
    # evaluation (lm-evaluation-harness 0.3 before PR #531)
    encode_separately: bool  # context and continuation encoded apart, no special tokens (no BOS)
    hellaswag_five_choices: bool  # " A" .. " E" scored although there are four endings
    official_ties: bool  # BoolQ, CoLA, SST-2, WNLI, MRPC: a tie goes to the second choice; RTE's to " True"
    acc_norm_without_space: bool  # acc_norm divides by the choice's length without its leading space


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(
        name="paper", locate_target_eos=False, locate_loss="sample_mean", correctness_filter=True,
        train_eos=False, held_out=False, eval_every=None, max_grad_norm=None, down_init_a=math.sqrt(5),
        encode_separately=False, hellaswag_five_choices=False, official_ties=False, acc_norm_without_space=False,
    ),
    "official": Protocol(
        name="official", locate_target_eos=True, locate_loss="token_mean", correctness_filter=False,
        train_eos=True, held_out=True, eval_every=200, max_grad_norm=1.0, down_init_a=0.0,
        encode_separately=True, hellaswag_five_choices=True, official_ties=True, acc_norm_without_space=True,
    ),
}
PROTOCOL_NAMES = tuple(PROTOCOLS)
DEFAULT_PROTOCOL = "paper"


def get_protocol(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ConfigError("protocol", f"must be one of {', '.join(PROTOCOL_NAMES)}; got {name!r}")
    return PROTOCOLS[name]
