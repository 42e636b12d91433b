"""The engine: exact masked losses at a fraction of the plain algorithm's cost.

The trunk (the residual stream entering layer l, with the base heads of layers < l masked) is
computed once and advanced layer by layer; the candidates of layer l replicate it along the batch
(a hook_z hook zeroes each row's candidate head) and run only layers l..L-1. Rows (candidate x
sample) are packed into forwards of up to `max_batch_tokens` tokens (`packing`). Only the target
positions are read out: the last Llama block computes its queries and MLP there alone (keys and
values need every position), and the final norm and unembedding run only there, once for all of a
call's forwards. Its losses equal `PlainEvaluator`'s within float tolerance (tests/locate), under
either protocol (`protocol`: the EOS-ended target and the set's token-mean loss of the official code)
and any ablation (`ablation`: what a masked head's z becomes; a corrupted run is laid out along the
packed rows like their residuals, each row its own sample's, position by position).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor

from circuitlab.circuits.circuit import Sample
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.circuits.heads import HeadMask
from circuitlab.locate import blocks
from circuitlab.locate.ablation import Ablation
from circuitlab.locate.config import ATTENTION, MAX_BATCH_TOKENS
from circuitlab.locate.evaluator import check_request
from circuitlab.core.processes import Shard, merged, share
from circuitlab.locate.flops import FlopCount
from circuitlab.locate.packing import Pack, pack
from circuitlab.locate.encoding import encode_set, set_loss
from circuitlab.locate.masking import ablate_heads_hook, hook_z_name, keep_matrix
from circuitlab.core.protocol import DEFAULT_PROTOCOL, Protocol

T = TypeVar("T")


@dataclass
class Trunk:
    layer: int  # the residual stream entering this layer
    mask: HeadMask  # heads masked in layers < layer
    hidden: list[Tensor]  # per sample, [pos, d_model]


def batch_tokens(model, value: int | str, longest: int) -> int:
    """Padded tokens per forward: `value`, or for "auto" what half of the device's free memory holds
    (on CUDA; MAX_BATCH_TOKENS elsewhere), at least the longest sample. An estimate: the out-of-memory
    retry in `Engine` covers it when it is too high."""
    if value != "auto":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("max_batch_tokens", f"must be a positive integer or auto, got {value!r}")
        return value
    device = model.device
    if device.type != "cuda":
        return max(MAX_BATCH_TOKENS, longest)
    free, _ = torch.cuda.mem_get_info(device)
    d, ff = model.dims.d_model, getattr(model.config, "intermediate_size", 4 * model.dims.d_model)
    width = longest
    size = torch.finfo(next(model.hf_model.parameters()).dtype).bits // 8
    per_token = size * (6 * d + 4 * ff + width) + 4 * (2 * model.dims.n_heads + 1) * width  # block activations
    return max(longest, int(0.5 * free / per_token))


def sample_of(row) -> int:
    """Rows are a sample index, or (sample, what the row carries: a candidate or a curve step)."""
    return row[0] if isinstance(row, tuple) else row


class Engine:
    def __init__(self, model, samples: list[Sample], max_batch_tokens: int | str = MAX_BATCH_TOKENS,
                 on_rows: Callable[[int], None] | None = None, shard: Shard | None = None,
                 attention: str = "eager", protocol: str | Protocol = DEFAULT_PROTOCOL,
                 ablation: Ablation | None = None):
        self.model = model
        self.ablation = ablation or Ablation()
        # the samples as the model reads them, and how their NLLs make a set's loss
        self.encoded, self.n_tokens, self.weights = encode_set(model, samples, protocol)
        self.n_samples = len(samples)
        self.lengths = [len(e.ids) for e in self.encoded]
        self.max_batch_tokens = batch_tokens(model, max_batch_tokens, max(self.lengths))
        self.on_rows = on_rows or (lambda n: None)
        self.shard = shard or Shard.current()
        self.flops = FlopCount(model)
        self._trunk: Trunk | None = None
        self._llama = getattr(model.config, "model_type", None) == "llama"
        if attention not in ATTENTION or (attention == "sdpa" and not self._llama):
            raise ConfigError("attention", f"must be eager, or sdpa for a Llama model; got {attention!r}")
        self.attention = attention

    # -- the Evaluator interface

    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        check_request(self.model.n_layers, layer, base, heads)
        rows = [(s, c) for c in range(len(heads)) for s in range(self.n_samples)]
        nll = self._gathered(self._retrying(lambda: self._losses(layer, base, heads, self._mine(rows))))
        return [set_loss([nll[(s, c)] for s in range(self.n_samples)], self.n_tokens) for c in range(len(heads))]

    def attribution(self, layer: int, base: HeadMask) -> tuple[float, list[float]]:
        """Attribution patching: (loss with `base` masked, estimated loss with each head of `layer`
        masked too), the estimate being loss + sum over positions of (r_h - z_h) . dLoss/dz_h (the
        first-order change of z_h -> r_h, the ablation's replacement; -z_h for zero), from one
        forward and backward of layers layer..L-1."""
        check_request(self.model.n_layers, layer, base, [None])
        samples = self._mine(list(range(self.n_samples)))
        parts = self.shard.gather(self._retrying(lambda: self._attribution(layer, base, samples)))
        loss = math.fsum(part[0] for part in parts)
        delta = [math.fsum(part[1][h] for part in parts) for h in range(self.model.n_heads)]
        return loss, [loss + d for d in delta]

    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        """For each k in `layers`: the loss with the heads of `sel` in layers up to k masked.

        Step k branches off the masked trunk after layer k and runs the later layers unmasked; all
        steps alive at layer j go through block j in the same forwards as the trunk, so a curve
        costs the same FLOPs as its steps one by one, in far fewer and larger matmuls."""
        return [set_loss(per_sample, self.n_tokens) for per_sample in self.sample_curve(sel, layers)]

    def sample_curve(self, sel: HeadMask, layers: Sequence[int]) -> list[list[float]]:
        """`curve` before the samples are averaged: for each k in `layers`, each sample's mean target NLL, so
        that a selection's effect on held-out documents can carry an interval over those documents."""
        samples = self._mine(list(range(self.n_samples)))
        nll = self._gathered(self._retrying(lambda: self._curve(sel, layers, samples)))
        return [[nll[(s, k)] for s in range(self.n_samples)] for k in layers]

    # -- sharing the work between processes, and memory

    def _mine(self, rows: list) -> list:
        """This process's rows (all of them when it runs alone), about equal in tokens across processes."""
        return share(rows, lambda r: self.lengths[sample_of(r)], self.shard)

    def _gathered(self, mine: dict) -> dict:
        return merged(self.shard.gather(mine))

    def _rows_done(self, n: int) -> None:
        self.on_rows(n * self.shard.world)  # progress: this rank's share stands for every rank's

    def _retrying(self, run: Callable[[], T]) -> T:
        """`run()`, with half the tokens per forward after each out-of-memory error (finished steps are
        kept by the memo; this one starts over)."""
        while True:
            try:
                return run()
            except torch.cuda.OutOfMemoryError:
                if self.max_batch_tokens <= max(self.lengths):
                    raise CircuitlabError(f"out of memory with {self.max_batch_tokens} tokens per forward, the "
                                          "longest sample alone; use a smaller model, more devices or "
                                          "--device-map") from None
                self.max_batch_tokens = max(max(self.lengths), self.max_batch_tokens // 2)
                print(f"circuitlab: out of memory; retrying with --max-batch-tokens {self.max_batch_tokens}",
                      file=sys.stderr)
                torch.cuda.empty_cache()

    # -- the work of one process

    @torch.no_grad()
    def _losses(self, layer: int, base: HeadMask, heads: Sequence[int | None], rows: list) -> dict:
        trunk = self._trunk_at(layer, base)
        done, picked = [], []
        for p in self._pack(rows):
            hidden, kwargs = blocks.packed_inputs(self.model, p, [trunk[s] for s, _ in p.rows])
            masked = [(k, [heads[c]]) for k, (_, c) in enumerate(p.rows) if heads[c] is not None]
            picked.append(self._run_to_targets(layer, hidden, kwargs, self._hooks(layer, p, masked), p))
            done += p.rows
            self._rows_done(len(p.rows))
        return dict(zip(done, self._target_nll(torch.cat(picked), done).tolist())) if done else {}

    @torch.no_grad()
    def _attribution(self, layer: int, base: HeadMask, samples: list[int]) -> tuple[float, list[float]]:
        trunk = self._trunk_at(layer, base)
        delta = torch.zeros(self.model.n_heads, dtype=torch.float64)
        loss = 0.0
        for p in self._pack(samples):
            hidden, kwargs = blocks.packed_inputs(self.model, p, [trunk[s] for s in p.rows])
            zs: list[Tensor] = []

            def grab(z, hook=None):
                zs.append(z.detach().requires_grad_(True))
                return zs[-1]

            with torch.enable_grad():
                picked = self._run_to_targets(layer, hidden, kwargs, [(hook_z_name(layer), grab)], p)
                nll = self._target_nll(picked, p.rows)
                chunk_loss = nll.sum() / self.n_samples if self.n_tokens is None else \
                    (nll * torch.tensor([self.weights[s] for s in p.rows], device=nll.device)).sum()
                (grad,) = torch.autograd.grad(chunk_loss, zs[0])
            r = self.ablation.packed(layer, p, p.rows)
            z = zs[0].detach().double()
            step = -z if r is None else r.to(z.device, z.dtype) - z  # padding: no gradient
            delta += torch.einsum("bphd,bphd->h", step, grad.double()).cpu()
            loss += float(chunk_loss.detach())
            self._rows_done(2 * len(p.rows))
        return loss, delta.tolist()

    @torch.no_grad()
    def _curve(self, sel: HeadMask, layers: Sequence[int], samples: list[int]) -> dict:
        L, last_step = self.model.n_layers, layers[-1]
        streams = {last_step: self._trunk_at(layers[0], sel.before(layers[0]))}  # the trunk is the last step
        last_rows, picked = [], []
        for j in range(layers[0], L):
            rows = [(s, k) for k in streams for s in samples]
            out = {k: {} for k in streams}
            heads = sel.at(j)  # masked in the trunk's rows only
            for p in self._pack(rows) if rows else []:
                hidden, kwargs = blocks.packed_inputs(self.model, p, [streams[k][s] for s, k in p.rows])
                masked = [(i, heads) for i, (_, k) in enumerate(p.rows) if k == last_step] if heads else []
                hooks = self._hooks(j, p, masked)
                if j == L - 1:
                    picked.append(self._run_to_targets(j, hidden, kwargs, hooks, p))
                    last_rows += p.rows
                    self._rows_done(len(p.rows))
                    continue
                hidden = self._run(j, j + 1, hidden, kwargs, hooks)
                for (s, k), state in zip(p.rows, blocks.unpack(p, hidden)):
                    out[k][s] = state
            streams = out
            if j in layers and j != last_step:
                streams[j] = streams[last_step]  # step j: masked up to j, unmasked from here on
        return dict(zip(last_rows, self._target_nll(torch.cat(picked), last_rows).tolist())) if last_rows else {}

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
        keep = keep_matrix([heads], self.model.n_heads)
        for p in self._pack(list(range(self.n_samples))):
            hidden, kwargs = blocks.packed_inputs(self.model, p, [trunk[s] for s in p.rows])
            r = self.ablation.packed(layer, p, p.rows) if heads else None
            hooks = [(hook_z_name(layer), ablate_heads_hook(keep, r))] if heads else []
            for s, state in zip(p.rows, blocks.unpack(p, self._run(layer, layer + 1, hidden, kwargs, hooks))):
                out[s] = state
        return out

    # -- running

    def _pack(self, rows: list) -> list[Pack]:
        return pack(rows, lambda r: self.lengths[sample_of(r)], self.max_batch_tokens)

    def _hooks(self, layer: int, p: Pack, masked: list[tuple[int, Sequence[int]]]) -> list:
        if not masked:
            return []
        keep = blocks.keep_per_position(p, masked, self.model.n_heads)
        r = self.ablation.packed(layer, p, [sample_of(row) for row in p.rows])
        return [(hook_z_name(layer), ablate_heads_hook(keep, r))]

    def _run(self, start: int, stop: int, hidden: Tensor, kwargs: dict, hooks: list) -> Tensor:
        hidden = blocks.run_blocks(self.model, start, stop, hidden, kwargs, hooks, self.attention)
        self.flops.blocks(hidden.shape[0], hidden.shape[1], stop - start)
        return hidden

    def _run_to_targets(self, start: int, hidden: Tensor, kwargs: dict, hooks: list, p: Pack) -> Tensor:
        """The residual stream after the last block at each row's target positions (row order)."""
        n_targets = [len(self.encoded[sample_of(r)].targets) for r in p.rows]
        lines, cols = blocks.target_positions(p, n_targets, hidden.device)
        last = self.model.n_layers - 1
        if start > last:  # past the last block: `hidden` is already its output
            return blocks.at(hidden, lines, cols)
        block = self.model.hf_model.model.layers[last]
        if not self._llama or start == last or not blocks.can_run_at_targets(block):  # the last block runs whole
            return blocks.at(self._run(start, last + 1, hidden, kwargs, hooks), lines, cols)
        hidden = self._run(start, last, hidden, kwargs, hooks)
        self.flops.last_block_at_targets(hidden.shape[0], hidden.shape[1], len(cols))
        return blocks.llama_block_at(self.model, block, hidden, kwargs, lines, cols)

    def _target_nll(self, picked: Tensor, rows: list) -> Tensor:
        targets = [self.encoded[sample_of(r)].targets for r in rows]
        self.flops.unembed(len(picked))
        return blocks.target_nll(self.model, picked, targets)
