"""Greedy generation and the `exact_match` metric of the generated-answer tasks (circuitlab.tasks.arithmetic).

A doc of such a task has one choice, the answer (" 42"). Ranking one choice says nothing, so the model
must write it: greedy decoding of the continuation of the prompt, for the answer's token count plus
`EXTRA_TOKENS` (SmolLM2 writes one token per digit; the slack lets a longer, wrong number show), cut
at the first newline or EOS. The doc is right when the stripped text's leading integer is the answer.

Prompts are encoded as `circuitlab.evaluate.scoring` encodes contexts (the tokenizer's own special tokens), are
left-padded into batches (so every row's next token sits in the last column) and decoded by the plain
Hugging Face model, with its KV cache. Each row stops at its own budget, so a result does not depend on the batch it ran in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from circuitlab.core.progress import progress_bar

from circuitlab.evaluate.config import BATCH_SIZE
from circuitlab.evaluate.scoring import encode_pair
from circuitlab.tasks import Doc

EXTRA_TOKENS = 3  # tokens generated beyond the answer's own count
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Generation:
    """One doc's greedy continuation and whether it gives the doc's answer."""

    index: int
    answer: str  # the gold choice, e.g. " 42"
    generated: str  # the decoded continuation, cut before the first newline or EOS
    correct: bool


def leading_integer(text: str) -> int | None:
    """The integer the stripped text starts with (`-` sign included), else None."""
    m = _INTEGER.match(text.strip())
    return int(m.group()) if m else None


def is_exact_match(generated: str, answer: str) -> bool:
    """The generated text's leading integer equals the answer's (" 42" matches "42\\n...", "42." and
    " 42 apples", not "421" or "4 2")."""
    got, want = leading_integer(generated), leading_integer(answer)
    return got is not None and got == want


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def _stops(tokenizer, token: int) -> bool:
    return token == tokenizer.eos_token_id or "\n" in tokenizer.decode([token])


@torch.no_grad()
def greedy_batch(model, prompts: list[list[int]], budgets: list[int], cache: bool | None = None) -> list[list[int]]:
    """The greedy continuation tokens of each prompt, at most its budget, up to (without) a stop token.

    With the cache (`cache` None or True) the prompts run once and each later step feeds only the new tokens
    against Hugging Face's KV cache, as `generate` does, about 5x fewer token-forwards for a short answer after
    a long prompt; with `cache=False` every step is a full forward of the whole sequence. The attention of an
    HF model patched by a TransformerBridge does not fill the cache (`generate` on it reads each new token as
    if nothing came before it): a cache that does not hold the prompt after the first step is dropped and the
    full forwards taken. Both give the same tokens (tests/tasks/test_arithmetic.py)."""
    hf, tok = model.hf_model, model.tokenizer
    cache = cache is not False
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    out: list[list[int]] = [[] for _ in prompts]
    done = [b <= 0 for b in budgets]
    new, past = ids, None  # the tokens this step feeds: all of them at first, then only the last one if cached
    while not all(done):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        step = hf(input_ids=new, attention_mask=mask, position_ids=pos[:, -new.shape[1]:], cache=past,
                  use_cache=cache, logits_to_keep=1)
        nxt = step.logits[:, -1].argmax(-1).to(ids.device)
        for i, t in enumerate(nxt.tolist()):
            if done[i]:
                continue
            if _stops(tok, t):
                done[i] = True
            else:
                out[i].append(t)
                done[i] = len(out[i]) >= budgets[i]
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if past is None and cache:  # the first step: did the forward fill the cache with the prompt?
            filled = step.cache
            cache = filled is not None and filled.get_seq_length() == new.shape[1]
        new, past = (nxt[:, None], step.cache) if cache else (ids, None)
    return out


def generate_answers(model, docs: list[Doc], batch_size: int = BATCH_SIZE, progress: bool = True,
                     extra_tokens: int = EXTRA_TOKENS, cache: bool | None = None) -> list[Generation]:
    """Every doc's greedy continuation (longest prompts first, so batches pad little), in doc order."""
    encs = [encode_pair(model.tokenizer, d.prompt, d.target) for d in docs]
    budgets = [len(e.continuation) + extra_tokens for e in encs]
    order = sorted(range(len(docs)), key=lambda i: -len(encs[i].context))
    tokens: list[list[int]] = [[] for _ in docs]
    bar = progress_bar(progress, total=len(docs), desc="generating", unit="doc", leave=False)
    was_training = model.hf_model.training
    model.hf_model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, t in zip(chunk, greedy_batch(model, [list(encs[i].context) for i in chunk],
                                                [budgets[i] for i in chunk], cache)):
                tokens[i] = t
            bar.update(len(chunk))
    finally:
        model.hf_model.train(was_training)
        bar.close()
    out = []
    for d, t in zip(docs, tokens):
        text = model.tokenizer.decode(t, skip_special_tokens=True)
        out.append(Generation(d.index, d.target, text, is_exact_match(text, d.target)))
    return out
