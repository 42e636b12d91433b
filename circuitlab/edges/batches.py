"""Clean/corrupted pairs as token ids, right-padded into batches: what the methods, metrics and the evaluator read."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from circuitlab.core.errors import CircuitlabError
from circuitlab.edges.pairs import Pair
from circuitlab.evaluate.scoring import encode_pair, pad_batch


@dataclass
class PairBatch:
    """Pairs as token ids, right-padded: `clean` and `corrupted` differ only in their prompts.
    `answer_mask[b, p]` marks the positions whose next token is an answer token (what the metrics read);
    `targets[b, p]` is that next token there."""

    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    answer_mask: Bool[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    wrong_targets: Int[Tensor, "batch pos"] | None = None  # the corrupted answer's tokens, where given

    def __len__(self) -> int:
        return self.clean.shape[0]

    def to(self, device) -> "PairBatch":
        return PairBatch(*(None if t is None else t.to(device) for t in (
            self.clean, self.corrupted, self.attention_mask, self.answer_mask, self.targets, self.wrong_targets)))


def encode_pairs(tokenizer, pairs: list[Pair], offset: int = 0) -> PairBatch:
    """Token ids of every pair; a corrupted prompt whose token count differs from its clean prompt's is
    refused with the pair's number (`offset` + its index, counted from 1)."""
    clean, corrupted, answers, wrongs = [], [], [], []
    for i, p in enumerate(pairs):
        enc = encode_pair(tokenizer, p.clean, p.answer)
        bad = encode_pair(tokenizer, p.corrupted, p.answer)
        if len(bad.context) != len(enc.context):
            raise CircuitlabError(f"pair {offset + i + 1}: the clean prompt has {len(enc.context)} tokens, the "
                                  f"corrupted one {len(bad.context)}; they must be equally long")
        seq = list(enc.context + enc.continuation)
        clean.append(seq)
        corrupted.append(list(bad.context + enc.continuation))
        answers.append((len(enc.context), enc.continuation))
        if p.corrupted_answer is not None:
            wrongs.append(encode_pair(tokenizer, p.clean, p.corrupted_answer).continuation)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = pad_batch(clean, pad)
    bad_ids, _ = pad_batch(corrupted, pad)
    answer_mask = torch.zeros_like(ids, dtype=torch.bool)
    targets = torch.zeros_like(ids)
    for b, (n, cont) in enumerate(answers):
        answer_mask[b, n - 1: n - 1 + len(cont)] = True
        targets[b, n - 1: n - 1 + len(cont)] = torch.tensor(cont)
    wrong = None
    if len(wrongs) == len(pairs):
        wrong = targets.clone()  # past the corrupted answer's end: no difference to read
        for b, ((n, cont), w) in enumerate(zip(answers, wrongs)):
            k = min(len(w), len(cont))
            wrong[b, n - 1: n - 1 + k] = torch.tensor(w[:k])
    return PairBatch(ids, bad_ids, mask, answer_mask, targets, wrong)
