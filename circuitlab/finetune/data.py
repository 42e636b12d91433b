"""Training data: each document's text as token ids, the order of every epoch, the loss, and the same order and
padding as the `Dataset`/`Sampler`/collator the HF `Trainer` reads. (Which docs: `circuitlab.finetune.splits`.)"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from circuitlab.core.errors import ConfigError
from circuitlab.evaluate.scoring import pad_batch
from circuitlab.tasks import Doc


class Tokens(list):
    """A training text's token ids, of which the first `n_prompt` are context only: no loss is taken on
    them (answer-only training; 0 = the whole text is trained on)."""

    def __init__(self, ids, n_prompt: int = 0):
        super().__init__(ids)
        self.n_prompt = n_prompt


def encode_docs(tokenizer, docs: list[Doc], max_len: int, eos: bool = False,
                answer_only: bool = False) -> list[Tokens]:
    """The training text of each doc, `prompt + choices[gold]`, as token ids cut at `max_len`; with `eos`,
    the official code's EOS appended where the cut left room and the text does not end in it already
    (alpaca-lora's `tokenize(..., add_eos_token=True)`). With `answer_only`, the prompt's tokens (those the
    text shares with the prompt tokenized alone) carry no loss; a text the cut leaves no answer token in is
    refused."""
    out = []
    for d in docs:
        ids = tokenizer(d.prompt + d.target).input_ids[:max_len]
        if eos and len(ids) < max_len and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        n_prompt = len(os.path.commonprefix([ids, tokenizer(d.prompt).input_ids])) if answer_only else 0
        if n_prompt >= len(ids):
            raise ConfigError("max_len", f"{max_len} leaves no answer token of document {d.index} to train on")
        out.append(Tokens(ids, n_prompt))
    return out


def n_targets(seqs: list[list[int]]) -> int:
    """Predicted tokens in a batch: every token but each sequence's first (and an answer-only text's prompt)."""
    return sum(len(s) - max(1, getattr(s, "n_prompt", 0)) for s in seqs)


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


class TokenDataset(torch.utils.data.Dataset):
    """Token id lists as the items the collator pads."""

    def __init__(self, seqs: list[list[int]]):
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.seqs[i], "n_prompt": getattr(self.seqs[i], "n_prompt", 0)}


class EpochOrderSampler(torch.utils.data.Sampler):
    """`epoch_order(n, seed, epoch)`: the Trainer (through accelerate) calls `set_epoch` before every epoch,
    also the one a resumed run restarts in, so every epoch sees the documents in circuitlab's order and a
    resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch))


class PadCollator:
    """Right-pads a micro-batch as `summed_loss` does; labels are the ids with the pads (and an answer-only
    text's prompt tokens) at -100 (the model shifts them), so the loss covers the rest of the text. Pads are
    found by length, not by id: the pad token may be EOS, which the official protocol trains on."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, Tensor]:
        ids, mask = pad_batch([it["input_ids"] for it in items], self.pad_id)
        labels = ids.masked_fill(mask == 0, -100)
        for row, it in enumerate(items):
            labels[row, : it.get("n_prompt", 0)] = -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
