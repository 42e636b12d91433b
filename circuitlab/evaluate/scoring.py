"""Log-likelihood scoring of continuations, exactly as lm-evaluation-harness tokenizes and scores them.

A request is a (context, continuation) pair. Its tokens are those of `context + continuation`;
the continuation's tokens are the ones after the tokens of `context` (trailing spaces of the
context move to the continuation first). Sequences are right-padded, so padding never changes a
score; only the positions that predict continuation tokens go through the unembedding.

Under the `official` protocol (`circuitlab.core.protocol`) requests are encoded as the official code's
lm-evaluation-harness 0.3 did: context and continuation apart, without special tokens; its choice
lists, tie rules and `acc_norm` lengths apply too (`score_docs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from circuitlab.core.progress import progress_bar

from circuitlab.evaluate.config import BATCH_SIZE
from circuitlab.models.view import HFModelView
from circuitlab.core.protocol import DEFAULT_PROTOCOL, Protocol, get_protocol
from circuitlab.tasks import Doc, Task




@dataclass(frozen=True)
class Encoded:
    """A request as token ids: the model reads `context + continuation[:-1]`."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    logprob: float  # sum over the continuation's tokens
    n_tokens: int
    greedy: bool  # every continuation token is the argmax


@dataclass
class DocScore:
    """All choices of one document scored; the target is the gold choice."""

    index: int
    logprobs: list[float]
    n_tokens: list[int]
    char_lens: list[int]
    gold: int
    pred: int
    pred_norm: int

    @property
    def correct(self) -> bool:
        return self.pred == self.gold

    @property
    def target_loss(self) -> float:
        """Mean NLL of the gold continuation's tokens (the paper's Eq. 5)."""
        return -self.logprobs[self.gold] / self.n_tokens[self.gold]


def encode_pair(tokenizer, context: str, continuation: str) -> Encoded:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer(context + continuation).input_ids
    ctx = tokenizer(context).input_ids
    return Encoded(tuple(ctx), tuple(whole[len(ctx):]))


def encode_separately(tokenizer, context: str, continuation: str) -> Encoded:
    """lm-evaluation-harness 0.3 (before PR #531), as the official code evaluated: each string encoded
    on its own without special tokens (no BOS), an empty context read as the EOS token. For a
    SentencePiece tokenizer " A" then becomes two tokens, not the one that follows a context."""
    ctx = tokenizer(context, add_special_tokens=False).input_ids if context else [tokenizer.eos_token_id]
    return Encoded(tuple(ctx), tuple(tokenizer(continuation, add_special_tokens=False).input_ids))


def max_length(model: HFModelView) -> int:
    return getattr(model.config, "max_position_embeddings", None) or 2048


def model_input(enc: Encoded, limit: int) -> list[int]:
    """The tokens fed to the model, cut from the left to the model's length like lm-eval."""
    return list(enc.context + enc.continuation)[-(limit + 1):][:-1]


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def shared_inputs(inputs: list[list[int]], groups: list) -> tuple[list[list[int]], list[int]]:
    """Map every input to a carrier sequence that starts with it, so each forward is run once.

    A causal model's logits at the positions of a prefix do not depend on what follows, so a
    request whose input is a prefix of another's in the same group (the single-token choices
    " A", " B" of one question all read the same context) is scored from that one's forward.
    Exact, like lm-evaluation-harness's grouping of requests by context.
    """
    carriers: list[list[int]] = []
    carrier_of = [0] * len(inputs)
    by_group: dict = {}
    for i in sorted(range(len(inputs)), key=lambda i: -len(inputs[i])):
        mine = by_group.setdefault(groups[i], [])
        n = len(inputs[i])
        found = next((c for c in mine if carriers[c][:n] == inputs[i]), None)
        if found is None:
            carriers.append(inputs[i])
            found = len(carriers) - 1
            mine.append(found)
        carrier_of[i] = found
    return carriers, carrier_of


def hf_target_logits(
    model: HFModelView, ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"],
    rows: Int[Tensor, " target"], cols: Int[Tensor, " target"],
) -> Float[Tensor, "target vocab"]:
    """Logits at chosen positions only, through the HF model (whose layers the bridge hooks)."""
    dev = model.device
    hidden = model.hf_model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
    return model.hf_model.lm_head(hidden[rows.to(hidden.device), cols.to(hidden.device)])  # where the last block left it


@torch.no_grad()
def score_requests(
    model: HFModelView,
    requests: list[tuple[str, str]],
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    separately: bool = False,
) -> list[Score]:
    """Score (context, continuation) pairs; longest first so batches pad little. `separately`: encode
    them as the official code's harness did (`encode_separately`)."""
    encode = encode_separately if separately else encode_pair
    encs = [encode(model.tokenizer, c, x) for c, x in requests]
    limit = max_length(model)
    inputs = [model_input(e, limit) for e in encs]
    carriers, carrier_of = shared_inputs(inputs, [e.context for e in encs])
    readers: list[list[int]] = [[] for _ in carriers]
    for i, c in enumerate(carrier_of):
        readers[c].append(i)
    pad_id = model.tokenizer.pad_token_id
    scores: list[Score | None] = [None] * len(encs)
    bar = progress_bar(progress, total=len(encs), desc="scoring", unit="req", leave=False)
    for start in range(0, len(carriers), batch_size):
        chunk = range(start, min(start + batch_size, len(carriers)))
        ids, mask = pad_batch([carriers[c] for c in chunk], pad_id)
        reqs = [(row, i) for row, c in enumerate(chunk) for i in readers[c]]
        rows, cols, targets = [], [], []
        for row, i in reqs:
            n_in, n = len(inputs[i]), len(encs[i].continuation)
            rows += [row] * n
            cols += range(n_in - n, n_in)
            targets += encs[i].continuation
        logits = hf_target_logits(model, ids, mask, torch.tensor(rows), torch.tensor(cols))
        logp = torch.log_softmax(logits.float(), dim=-1)
        target = torch.tensor(targets, device=logp.device)
        tok_logp = logp.gather(-1, target[:, None])[:, 0]
        greedy = logp.argmax(-1) == target
        sizes = [len(encs[i].continuation) for _, i in reqs]
        for (_, i), lp, g in zip(reqs, tok_logp.split(sizes), greedy.split(sizes)):
            scores[i] = Score(float(lp.sum()), len(lp), bool(g.all()))
        bar.update(len(reqs))
    bar.close()
    return scores


def score_docs(
    model: HFModelView, docs: list[Doc], batch_size: int = BATCH_SIZE, progress: bool = True,
    protocol: str | Protocol = DEFAULT_PROTOCOL, task: Task | None = None,
) -> list[DocScore]:
    """Every choice of every doc scored. Under the official protocol `task` (when given) supplies the
    official harness's choice list and tie rule (`Task.official_choices`, `Task.official_tie_second`)."""
    p = get_protocol(protocol)
    choices_of = [official_choices(d, task, p) for d in docs]
    requests = [(d.prompt, c) for d, cs in zip(docs, choices_of) for c in cs]
    flat = iter(score_requests(model, requests, batch_size, progress, separately=p.encode_separately))
    second_on_ties = p.official_ties and task is not None and task.official_tie_second
    out = []
    for d, choices in zip(docs, choices_of):
        s = [next(flat) for _ in choices]
        logprobs = [x.logprob for x in s]
        char_lens = [len(c[1:]) if p.acc_norm_without_space and c.startswith(" ") else len(c) for c in choices]
        norm = [lp / max(n, 1) for lp, n in zip(logprobs, char_lens)]
        out.append(
            DocScore(
                index=d.index,
                logprobs=logprobs,
                n_tokens=[x.n_tokens for x in s],
                char_lens=char_lens,
                gold=d.gold,
                pred=(0 if logprobs[0] > logprobs[1] else 1) if second_on_ties else first_argmax(logprobs),
                pred_norm=first_argmax(norm),
            )
        )
    return out


def first_argmax(values: list[float]) -> int:
    """The index of the largest value, the first one on ties (numpy's argmax, lm-eval's rule)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def official_choices(doc: Doc, task: Task | None, protocol: Protocol) -> tuple[str, ...]:
    """The choices scored: the doc's, or where the official harness scored others (HellaSwag's five
    letters for four endings, so " E" can win and make a doc wrong) those."""
    if protocol.hellaswag_five_choices and task is not None and task.official_choices is not None:
        return task.official_choices
    return doc.choices
