"""How the model reads a locating sample: `prompt + target[:-1]`, the last `len(target)` positions predicting
the target tokens (nothing after the last one is fed), and how the samples' losses make a set's loss.

The `official` protocol (`circuitlab.core.protocol`) follows the official code: the locating target is the
gold continuation plus the EOS token, and a set's loss is the mean over all its target tokens (HF's `labels`
loss over a batch) instead of the mean of the samples' mean target NLLs (Eq. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from circuitlab.circuits.circuit import Sample
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.protocol import Protocol, get_protocol
from circuitlab.evaluate.scoring import Encoded as Pair, encode_pair, max_length, model_input


@dataclass(frozen=True)
class Encoded:
    """A sample as the model reads it: `ids` = context + target[:-1]; the last `len(targets)`
    positions predict the target tokens."""

    ids: tuple[int, ...]
    targets: tuple[int, ...]


def encode_samples(model, samples: list[Sample] | list[Encoded], eos: bool = False,
                   corrupted: bool = False) -> list[Encoded]:
    """Samples as token ids (already encoded ones, e.g. the random tokens of a benchmark, as they are).
    `eos`: the tokenizer's EOS token ends every target (the official code's locating target).
    `corrupted`: each sample's corrupted prompt in place of its prompt, followed by the same target
    tokens; it must have the prompt's token length, so that position i of the corrupted run stands
    for position i of the sample's own (what the `corrupted` ablation patches in)."""
    if samples and all(isinstance(s, Encoded) for s in samples):
        return list(samples)
    eos_id = model.tokenizer.eos_token_id
    if eos and eos_id is None:
        raise CircuitlabError("the official protocol's locating target ends with EOS, but the tokenizer has none")
    limit = max_length(model)
    out = []
    for i, s in enumerate(samples):
        enc = encode_pair(model.tokenizer, s.prompt, s.target)
        if corrupted:
            context = encode_pair(model.tokenizer, s.corrupted, s.target).context if s.corrupted else None
            if context is None or len(context) != len(enc.context):
                what = "has none" if context is None else f"is {len(context)} tokens, the prompt {len(enc.context)}"
                raise CircuitlabError(f"sample {i} ({s.prompt[:40]!r}): its corrupted prompt {what}; the "
                                      "corrupted ablation needs one of the prompt's token length")
            enc = Pair(context, enc.continuation)
        if eos:
            enc = Pair(enc.context, enc.continuation + (eos_id,))
        ids = model_input(enc, limit)
        if not enc.continuation or not enc.context or len(enc.continuation) > len(ids):
            raise CircuitlabError(f"sample {i} ({s.prompt[:40]!r} -> {s.target!r}): needs a non-empty "
                                  "prompt and target that fit in the model's context")
        out.append(Encoded(tuple(ids), tuple(enc.continuation)))
    return out


def set_loss(per_sample: Sequence[float], n_tokens: Sequence[int] | None = None) -> float:
    """The loss of a sample set from each sample's mean target NLL: their mean (Eq. 5), or with
    `n_tokens` (each sample's target length) the mean over all the set's target tokens, the official
    code's batch `labels` loss, in which a long target weighs more."""
    if n_tokens is None:
        return math.fsum(per_sample) / len(per_sample)
    return math.fsum(m * n for m, n in zip(per_sample, n_tokens)) / sum(n_tokens)


def encode_set(model, samples: list[Sample] | list[Encoded], protocol: str | Protocol
               ) -> tuple[list[Encoded], list[int] | None, list[float]]:
    """What an evaluator reads of a sample set under `protocol` (its name is resolved here, the evaluators'
    one entrance; a run hands the object): the samples encoded (the target EOS-ended or not) and how their
    losses make the set's loss (`loss_weights`)."""
    rules = get_protocol(protocol)
    encoded = encode_samples(model, samples, eos=rules.locate_target_eos)
    return (encoded, *loss_weights(encoded, rules))


def loss_weights(encoded: Sequence[Encoded], protocol: Protocol) -> tuple[list[int] | None, list[float]]:
    """(the `n_tokens` argument of `set_loss`, each sample's weight in the set's loss) under `protocol`."""
    if protocol.locate_loss == "token_mean":
        n_tokens = [len(e.targets) for e in encoded]
        return n_tokens, [n / sum(n_tokens) for n in n_tokens]
    return None, [1 / len(encoded)] * len(encoded)
