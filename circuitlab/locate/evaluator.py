"""The paper's way of answering the one question every strategy asks (`strategies.base.Evaluator`).

The question: the loss of the samples with a set of heads masked, where the set is "the heads already fixed in
layers < l, plus one candidate head in layer l". `PlainEvaluator` answers it as the paper's code does (one full
forward per candidate set) and is the reference the engine (`circuitlab.locate.engine.Engine`, same interface,
same numbers) is tested against.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from circuitlab.circuits.circuit import Sample
from circuitlab.circuits.heads import HeadMask
from circuitlab.locate.ablation import Ablation
from circuitlab.locate.encoding import encode_set, set_loss
from circuitlab.locate.masking import masked_logits
from circuitlab.core.protocol import DEFAULT_PROTOCOL, Protocol as ProtocolRules
from circuitlab.evaluate.scoring import pad_batch


def check_request(n_layers: int, layer: int, base: HeadMask, heads: Sequence[int | None]) -> None:
    if not 0 <= layer <= n_layers or any(la >= layer for la in base.layers):
        raise ValueError(f"bad request: layer {layer}, base layers {base.layers}")
    if layer == n_layers and any(h is not None for h in heads):
        raise ValueError("past the last layer only the base mask can be evaluated")


class PlainEvaluator:
    """The paper's code: for each candidate set, one full forward of the model over all samples
    (the whole text prompt + target), log-probabilities at every position (as the cross-entropy
    of HF's `labels` loss in the paper's locating.py computes them), then the target tokens' NLL.
    `protocol` sets the target (EOS appended or not) and how the samples' NLLs make the set's loss;
    `ablation` what a masked head's z becomes (default: zero)."""

    def __init__(self, model, samples: list[Sample], batch_size: int | None = None,
                 on_rows: Callable[[int], None] | None = None, protocol: str | ProtocolRules = DEFAULT_PROTOCOL,
                 ablation: Ablation | None = None):
        self.model = model
        self.ablation = ablation or Ablation()
        self.encoded, self.n_tokens, _ = encode_set(model, samples, protocol)
        self.n_samples = len(samples)
        self.batch_size = batch_size or self.n_samples
        self.on_rows = on_rows or (lambda n: None)
        self.n_forwards = 0

    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        check_request(self.model.n_layers, layer, base, heads)
        return [self.loss(base if h is None else base.plus(layer, [h])) for h in heads]

    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        return [self.loss(sel.before(k + 1)) for k in layers]

    def attribution(self, layer: int, base: HeadMask) -> tuple[float, list[float]]:
        raise NotImplementedError("the plain algorithm evaluates every head; attribution needs the engine")

    @torch.no_grad()
    def loss(self, mask: HeadMask) -> float:
        per_sample = []
        for start in range(0, self.n_samples, self.batch_size):
            batch = self.encoded[start : start + self.batch_size]
            seqs = [list(e.ids) + [e.targets[-1]] for e in batch]
            ids, attn = pad_batch(seqs, self.model.tokenizer.pad_token_id)
            rows, lengths = range(start, start + len(batch)), [len(s) for s in seqs]
            replacement = lambda layer: self.ablation.padded(layer, rows, lengths, ids.shape[1])  # noqa: E731
            logp = torch.log_softmax(masked_logits(self.model, ids, attn, mask, replacement).float(), dim=-1)
            for row, e in enumerate(batch):
                end = len(e.ids)  # the position of the last target token predicts nothing
                target = torch.tensor(e.targets, device=logp.device)
                per_sample.append(-float(logp[row, end - len(e.targets) : end].gather(-1, target[:, None]).mean()))
            self.n_forwards += 1
            self.on_rows(len(batch))
        return set_loss(per_sample, self.n_tokens)
