"""The engine: exact masked losses at a fraction of the plain algorithm's cost.

The trunk (the residual stream entering layer l, with the base heads of layers < l masked) is
computed once and advanced layer by layer; the candidates of layer l replicate it along the batch
(a hook_z hook zeroes each row's candidate head) and run only layers l..L-1. Rows (candidate x
sample) are packed into forwards of up to `max_batch_tokens` tokens (`packing`). Only the target
positions are read out: the last Llama block computes its queries and MLP there alone (keys and
values need every position), and the final norm and unembedding run only there, once for all of a
call's forwards. Its losses equal `PlainEvaluator`'s within float tolerance (tests/locate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from circuitlab.circuit import Sample
from circuitlab.errors import ConfigError
from circuitlab.heads import HeadMask
from circuitlab.locate import blocks
from circuitlab.locate.evaluator import check_request
from circuitlab.locate.flops import FlopCount
from circuitlab.locate.packing import Pack, pack
from circuitlab.locate.samples import encode_samples, set_loss
from circuitlab.masking import hook_z_name, keep_matrix, zero_heads_hook

NAN = float("nan")
MAX_BATCH_TOKENS = 4096  # padded tokens per forward


@dataclass
class Trunk:
    layer: int  # the residual stream entering this layer
    mask: HeadMask  # heads masked in layers < layer
    hidden: list[Tensor]  # per sample, [pos, d_model]


def sample_of(row) -> int:
    """Rows are a sample index, or (sample, what the row carries: a candidate or a curve step)."""
    return row[0] if isinstance(row, tuple) else row


class Engine:
    def __init__(self, model, samples: list[Sample], max_batch_tokens: int = MAX_BATCH_TOKENS,
                 on_rows: Callable[[int], None] | None = None):
        if max_batch_tokens < 1:
            raise ConfigError("max_batch_tokens", f"must be a positive integer, got {max_batch_tokens}")
        self.model = model
        self.encoded = encode_samples(model, samples)
        self.n_samples = len(samples)
        self.lengths = [len(e.ids) for e in self.encoded]
        self.max_batch_tokens = max_batch_tokens
        self.on_rows = on_rows or (lambda n: None)
        self.flops = FlopCount(model)
        self._trunk: Trunk | None = None
        self._llama = getattr(model.config, "model_type", None) == "llama"

    # -- the Evaluator interface

    @torch.no_grad()
    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        check_request(self.model.n_layers, layer, base, heads)
        trunk = self._trunk_at(layer, base)
        nll = [[NAN] * self.n_samples for _ in heads]
        rows, picked = [], []
        for p in self._pack([(s, c) for c in range(len(heads)) for s in range(self.n_samples)]):
            hidden, kwargs = blocks.packed_inputs(self.model, p, [trunk[s] for s, _ in p.rows])
            masked = [(k, [heads[c]]) for k, (_, c) in enumerate(p.rows) if heads[c] is not None]
            picked.append(self._run_to_targets(layer, hidden, kwargs, self._hooks(layer, p, masked), p))
            rows += p.rows
            self.on_rows(len(p.rows))
        for (s, c), v in zip(rows, self._target_nll(torch.cat(picked), rows).tolist()):
            nll[c][s] = v
        return [set_loss(row) for row in nll]

    @torch.no_grad()
    def attribution(self, layer: int, base: HeadMask) -> tuple[float, list[float]]:
        """Attribution patching: (loss with `base` masked, estimated loss with each head of `layer`
        masked too), the estimate being loss + sum over positions of -z_h . dLoss/dz_h, from one
        forward and backward of layers layer..L-1."""
        check_request(self.model.n_layers, layer, base, [None])
        trunk = self._trunk_at(layer, base)
        delta = torch.zeros(self.model.n_heads, dtype=torch.float64)
        loss = 0.0
        for p in self._pack(list(range(self.n_samples))):
            hidden, kwargs = blocks.packed_inputs(self.model, p, [trunk[s] for s in p.rows])
            zs: list[Tensor] = []

            def grab(z, hook=None):
                zs.append(z.detach().requires_grad_(True))
                return zs[-1]

            with torch.enable_grad():
                picked = self._run_to_targets(layer, hidden, kwargs, [(hook_z_name(layer), grab)], p)
                chunk_loss = self._target_nll(picked, p.rows).sum() / self.n_samples
                (grad,) = torch.autograd.grad(chunk_loss, zs[0])
            delta += torch.einsum("bphd,bphd->h", -zs[0].detach().double(), grad.double())  # padding: z = 0
            loss += float(chunk_loss.detach())
            self.on_rows(2 * len(p.rows))
        return loss, [loss + float(d) for d in delta]

    @torch.no_grad()
    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        """For each k in `layers`: the loss with the heads of `sel` in layers up to k masked.

        Step k branches off the masked trunk after layer k and runs the later layers unmasked; all
        steps alive at layer j go through block j in the same forwards as the trunk, so a curve
        costs the same FLOPs as its steps one by one, in far fewer and larger matmuls."""
        L, last_step = self.model.n_layers, layers[-1]
        streams = {last_step: self._trunk_at(layers[0], sel.before(layers[0]))}  # the trunk is the last step
        nll = {k: [NAN] * self.n_samples for k in layers}
        last_rows, picked = [], []
        for j in range(layers[0], L):
            rows = [(s, k) for k in streams for s in range(self.n_samples)]
            out = {k: [None] * self.n_samples for k in streams}
            heads = sel.at(j)  # masked in the trunk's rows only
            for p in self._pack(rows):
                hidden, kwargs = blocks.packed_inputs(self.model, p, [streams[k][s] for s, k in p.rows])
                masked = [(i, heads) for i, (_, k) in enumerate(p.rows) if k == last_step] if heads else []
                hooks = self._hooks(j, p, masked)
                if j == L - 1:
                    picked.append(self._run_to_targets(j, hidden, kwargs, hooks, p))
                    last_rows += p.rows
                    self.on_rows(len(p.rows))
                    continue
                hidden = self._run(j, j + 1, hidden, kwargs, hooks)
                for (s, k), state in zip(p.rows, blocks.unpack(p, hidden)):
                    out[k][s] = state
            streams = out
            if j in layers and j != last_step:
                streams[j] = streams[last_step]  # step j: masked up to j, unmasked from here on
        for (s, k), v in zip(last_rows, self._target_nll(torch.cat(picked), last_rows).tolist()):
            nll[k][s] = v
        return [set_loss(nll[k]) for k in layers]

    # -- the trunk

    def _trunk_at(self, layer: int, base: HeadMask) -> list[Tensor]:
        """The residual stream entering `layer` with `base` masked; advances the kept trunk when it
        is on the way, else starts again from the embeddings."""
        t = self._trunk
        if t is None or t.layer > layer or base.before(t.layer) != t.mask:
            t = Trunk(0, HeadMask(), [blocks.embed(self.model, e.ids) for e in self.encoded])
        while t.layer < layer:
            t = Trunk(t.layer + 1, base.before(t.layer + 1), self._advance(t.layer, base.at(t.layer), t.hidden))
        self._trunk = t
        return t.hidden

    def _advance(self, layer: int, heads: tuple[int, ...], trunk: list[Tensor]) -> list[Tensor]:
        out: list[Tensor | None] = [None] * self.n_samples
        hooks = [(hook_z_name(layer), zero_heads_hook(keep_matrix([heads], self.model.n_heads)))] if heads else []
        for p in self._pack(list(range(self.n_samples))):
            hidden, kwargs = blocks.packed_inputs(self.model, p, [trunk[s] for s in p.rows])
            for s, state in zip(p.rows, blocks.unpack(p, self._run(layer, layer + 1, hidden, kwargs, hooks))):
                out[s] = state
        return out

    # -- running

    def _pack(self, rows: list) -> list[Pack]:
        return pack(rows, lambda r: self.lengths[sample_of(r)], self.max_batch_tokens)

    def _hooks(self, layer: int, p: Pack, masked: list[tuple[int, Sequence[int]]]) -> list:
        if not masked:
            return []
        return [(hook_z_name(layer), zero_heads_hook(blocks.keep_per_position(p, masked, self.model.n_heads)))]

    def _run(self, start: int, stop: int, hidden: Tensor, kwargs: dict, hooks: list) -> Tensor:
        hidden = blocks.run_blocks(self.model, start, stop, hidden, kwargs, hooks)
        self.flops.blocks(hidden.shape[0], hidden.shape[1], stop - start)
        return hidden

    def _run_to_targets(self, start: int, hidden: Tensor, kwargs: dict, hooks: list, p: Pack) -> Tensor:
        """The residual stream after the last block at each row's target positions (row order)."""
        n_targets = [len(self.encoded[sample_of(r)].targets) for r in p.rows]
        lines, cols = blocks.target_positions(p, n_targets, hidden.device)
        last = self.model.n_layers - 1
        if start > last:  # past the last block: `hidden` is already its output
            return hidden[lines, cols]
        block = self.model.hf_model.model.layers[last]
        if not self._llama or start == last or blocks.has_hook_on_a_hook_point(block):  # the last block runs whole
            return self._run(start, last + 1, hidden, kwargs, hooks)[lines, cols]
        hidden = self._run(start, last, hidden, kwargs, hooks)
        self.flops.last_block_at_targets(hidden.shape[0], hidden.shape[1], len(cols))
        return blocks.llama_block_at(self.model, block, hidden, kwargs, lines, cols)

    def _target_nll(self, picked: Tensor, rows: list) -> Tensor:
        targets = [self.encoded[sample_of(r)].targets for r in rows]
        self.flops.unembed(len(picked))
        return blocks.target_nll(self.model, picked, targets)
