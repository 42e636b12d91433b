"""What edge attribution measures: one number per pair, read off the logits at the answer positions.

- `logprob` (default): the answer tokens' summed log-probability, teacher-forced (multi-token answers);
- `logit-diff`: logit of the answer's token minus the corrupted answer's, at the first answer position
  where the two answers differ (pairs need `corrupted_answer`);
- `kl`: KL(clean || current) summed over the answer positions. Its gradient at the clean point is zero,
  so plain EAP (the gradient there) cannot use it; EAP-IG's interpolated points can.

The attribution target is the mean over pairs. The registry of metrics is `circuitlab.edges.config.METRICS`.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.edges.batches import PairBatch
from circuitlab.core.errors import CircuitlabError

def answer_logprobs(logits: Float[Tensor, "batch pos vocab"], batch: PairBatch) -> Float[Tensor, "n vocab"]:
    """Log-probabilities at the answer positions, in float32 (pair-major order)."""
    return torch.log_softmax(logits[batch.answer_mask].float(), dim=-1)


def per_pair(values: Float[Tensor, " n"], batch: PairBatch) -> Float[Tensor, " batch"]:
    """Sum answer-position values into one per pair."""
    owner = torch.nonzero(batch.answer_mask)[:, 0]
    return torch.zeros(len(batch), dtype=values.dtype, device=values.device).index_add(0, owner, values)


def logprob(logits, batch: PairBatch, clean=None) -> Float[Tensor, " batch"]:
    lp = answer_logprobs(logits, batch)
    return per_pair(lp.gather(1, batch.targets[batch.answer_mask][:, None])[:, 0], batch)


def first_difference(batch: PairBatch) -> Tensor:
    """[batch, pos] True at each pair's first answer position where its answer and corrupted answer differ."""
    if batch.wrong_targets is None:
        raise CircuitlabError("the logit-diff metric needs a 'corrupted_answer' in every pair")
    differ = batch.answer_mask & (batch.targets != batch.wrong_targets)
    if not differ.any(1).all():
        row = int((~differ.any(1)).nonzero()[0])
        raise CircuitlabError(f"pair {row + 1}: its answer and corrupted answer do not differ in a token "
                              "both have (e.g. ' 17' and ' 1')")
    first = differ & (differ.cumsum(1) == 1)
    return first


def logit_diff(logits, batch: PairBatch, clean=None) -> Float[Tensor, " batch"]:
    at = first_difference(batch)
    picked = logits[at].float()  # one row per pair, in pair order
    right, wrong = batch.targets[at], batch.wrong_targets[at]
    return picked.gather(1, right[:, None])[:, 0] - picked.gather(1, wrong[:, None])[:, 0]


def kl(logits, batch: PairBatch, clean: Float[Tensor, "n vocab"] | None) -> Float[Tensor, " batch"]:
    lp = answer_logprobs(logits, batch)
    return per_pair((clean.exp() * (clean - lp)).sum(-1), batch)
