"""Training data: each document's text as token ids, the order of every epoch, and the loss."""

from __future__ import annotations

import torch
from torch import Tensor

from circuitlab.scoring import pad_batch
from circuitlab.tasks import Doc


def encode_docs(tokenizer, docs: list[Doc], max_len: int) -> list[list[int]]:
    """The training text of each doc, `prompt + choices[gold]`, as token ids cut at `max_len`."""
    return [tokenizer(d.prompt + d.target).input_ids[:max_len] for d in docs]


def n_targets(seqs: list[list[int]]) -> int:
    """Predicted tokens in a batch: every token but each sequence's first."""
    return sum(len(s) - 1 for s in seqs)


def summed_loss(hf_model, seqs: list[list[int]], pad_id: int, device) -> Tensor:
    """Sum over all predicted tokens of the whole text of -log p; pad positions are ignored."""
    ids, mask = pad_batch(seqs, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    logits = hf_model(input_ids=ids, attention_mask=mask).logits
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(logits.device)  # a dispatched model's last device
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
    )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()
