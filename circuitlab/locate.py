"""Locating knowledge circuits: which attention heads, masked, hurt a task most (paper, Section 4).

Every strategy asks one question many times: the loss of the samples with a set of heads masked,
where the set is "the heads already fixed in layers < l, plus one candidate head in layer l".
Two evaluators answer it, with the same interface and the same numbers:

- `PlainEvaluator`, the paper's algorithm: one full forward of the whole model over all samples
  per candidate set, no reuse. It is the reference the tests and the benchmark compare against.
- `Engine`: computes the residual stream entering layer l once (the "trunk", with the fixed heads
  masked) and runs only layers l..L-1 for the candidates, several candidates x samples per
  forward, unembedding only target positions. It can also rank candidates by an
  attribution-patching estimate (`attribution`) so only the top K are evaluated exactly.

The strategies (`single`, `greedy`, `random`, `layer-conditioned`, `redundant`) are written once
over that interface; `locate` runs one, checkpointing after every layer so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from circuitlab.circuit import Circuit, ModelInfo, Sample, TaskInfo
from circuitlab.errors import CircuitlabError
from circuitlab.io import read_json, read_jsonl, write_json_atomic
from circuitlab.masking import HeadMask, hook_z_name, keep_matrix, masked_logits, zero_heads_hook
from circuitlab.models import LoadedModel
from circuitlab.scoring import encode_pair, max_length, model_input, pad_batch

STRATEGIES = ("single", "greedy", "random", "layer-conditioned", "redundant")
NAN = float("nan")
SLACK = 1.1  # one row per line: at most 10% more padded than real tokens per forward
UNEMBED_TARGETS = 512  # target positions per unembedding product (bounds the logits' memory)


# --- samples ----------------------------------------------------------------------------------


def locating_samples(
    model: LoadedModel, task, data_dir=None, split: str = "train", n: int = 64,
    max_docs: int | None = None, progress: bool = True,
) -> tuple[list[Sample], TaskInfo]:
    """The paper's samples: of the first `max_docs` docs of `split` the model gets right, the `n`
    with the lowest target loss (scores cached per model, task and data)."""
    from circuitlab.scoring import cached_score_docs, select_samples
    from circuitlab.tasks import data_fingerprint, get_task, load_docs

    task = get_task(task) if isinstance(task, str) else task
    docs = load_docs(task, split, data_dir, limit=max_docs)
    chosen = select_samples(docs, cached_score_docs(model, task, docs, progress=progress), n)
    if not chosen:
        raise CircuitlabError(f"the model gets none of the {len(docs)} {task.name} {split} docs right")
    samples = [Sample(d.prompt, d.target, d.index) for d in chosen]
    return samples, TaskInfo(task.name, split, data_fingerprint(docs), len(docs))


def read_samples_file(path: str | Path) -> list[Sample]:
    """Rows `{"prompt": str, "target": str}` of a JSON Lines file, used as they are and in order."""
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"samples file not found: {path}")
    samples = []
    for where, row in read_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("target"), str) or not row["target"]:
            raise CircuitlabError(f'{where}: expected {{"prompt": str, "target": non-empty str}}')
        samples.append(Sample(row["prompt"], row["target"], row.get("index")))
    if not samples:
        raise CircuitlabError(f"samples file {path} has no rows")
    return samples


def samples_fingerprint(samples: list[Sample]) -> str:
    payload = json.dumps([[s.index, s.prompt, s.target] for s in samples], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Encoded:
    """A sample as the model reads it: `ids` = context + target[:-1]; the last `len(targets)`
    positions predict the target tokens (nothing after the last target token is fed)."""

    ids: tuple[int, ...]
    targets: tuple[int, ...]


def encode_samples(model: LoadedModel, samples: list[Sample]) -> list[Encoded]:
    limit = max_length(model)
    out = []
    for i, s in enumerate(samples):
        enc = encode_pair(model.tokenizer, s.prompt, s.target)
        ids = model_input(enc, limit)
        if not enc.continuation or not enc.context or len(enc.continuation) > len(ids):
            raise CircuitlabError(f"sample {i} ({s.prompt[:40]!r} -> {s.target!r}): needs a non-empty "
                                  "prompt and target that fit in the model's context")
        out.append(Encoded(tuple(ids), tuple(enc.continuation)))
    return out


def set_loss(per_sample: Sequence[float]) -> float:
    """The loss of a sample set: the mean over samples of each sample's mean target NLL."""
    return math.fsum(per_sample) / len(per_sample)


# --- evaluators -------------------------------------------------------------------------------


class Evaluator(Protocol):
    model: LoadedModel
    n_samples: int

    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        """For each h: the loss with `base` (heads of layers < `layer`) plus head h of `layer`
        masked; h = None masks `base` alone. `layer` may be n_layers (then heads = [None])."""
        ...

    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        """For each k in `layers`: the loss with the heads of `sel` in layers up to k masked."""
        ...


def _check_request(model: LoadedModel, layer: int, base: HeadMask, heads: Sequence[int | None]) -> None:
    if not 0 <= layer <= model.n_layers or any(la >= layer for la in base.layers):
        raise ValueError(f"bad request: layer {layer}, base layers {base.layers}")
    if layer == model.n_layers and any(h is not None for h in heads):
        raise ValueError("past the last layer only the base mask can be evaluated")


class PlainEvaluator:
    """The paper's code: for each candidate set, one full forward of the model over all samples
    (the whole text prompt + target), log-probabilities at every position (as the cross-entropy
    of HF's `labels` loss in the paper's locating.py computes them), then the target tokens' NLL."""

    def __init__(self, model: LoadedModel, samples: list[Sample], batch_size: int | None = None,
                 on_rows: Callable[[int], None] | None = None):
        self.model = model
        self.encoded = encode_samples(model, samples)
        self.n_samples = len(samples)
        self.batch_size = batch_size or self.n_samples
        self.on_rows = on_rows or (lambda n: None)
        self.n_forwards = 0

    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        _check_request(self.model, layer, base, heads)
        return [self.loss(base if h is None else base.plus(layer, [h])) for h in heads]

    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        return [self.loss(sel.before(k + 1)) for k in layers]

    @torch.no_grad()
    def loss(self, mask: HeadMask) -> float:
        per_sample = []
        for start in range(0, self.n_samples, self.batch_size):
            batch = self.encoded[start : start + self.batch_size]
            ids, attn = pad_batch([list(e.ids) + [e.targets[-1]] for e in batch], self.model.tokenizer.pad_token_id)
            logp = torch.log_softmax(masked_logits(self.model, ids, attn, mask).float(), dim=-1)
            for row, e in enumerate(batch):
                end = len(e.ids)  # the position of the last target token predicts nothing
                target = torch.tensor(e.targets, device=logp.device)
                per_sample.append(-float(logp[row, end - len(e.targets) : end].gather(-1, target[:, None]).mean()))
            self.n_forwards += 1
            self.on_rows(len(batch))
        return set_loss(per_sample)


class _Captured(Exception):
    pass


@dataclass
class _Trunk:
    layer: int  # the residual stream entering this layer
    mask: HeadMask  # heads masked in layers < layer
    hidden: list[Tensor]  # per sample, [pos, d_model]


@dataclass
class _Packed:
    """Rows laid end to end in lines of one width: each row restarts its positions and attends
    only to itself (block-diagonal causal mask), so a forward computes almost no padding."""

    rows: list  # row keys (a sample, or (sample, candidate)), in packing order
    samples: list[int]  # each row's sample
    line: list[int]  # each row's line
    start: list[int]  # each row's first position in its line
    n_lines: int
    width: int


class Engine:
    """Exact masked losses at a fraction of the plain cost.

    The trunk (residual stream entering layer l, with the base heads of layers < l masked) is
    computed once and advanced layer by layer; candidates of layer l replicate it along the batch
    (a hook_z hook zeroes each row's candidate head) and run only layers l..L-1, calling the
    bridge's blocks directly with the keyword arguments HF passes them. Rows (candidate x sample)
    are packed into lines of up to `max_batch_tokens` tokens per forward. Only the target
    positions are read out: the last block computes its queries and MLP there alone (keys and
    values need every position), and the final norm and unembedding run only there, once for all
    of a call's forwards.
    """

    def __init__(self, model: LoadedModel, samples: list[Sample], max_batch_tokens: int = 4096,
                 on_rows: Callable[[int], None] | None = None):
        if max_batch_tokens < 1:
            raise CircuitlabError(f"--max-batch-tokens must be positive, got {max_batch_tokens}")
        self.model = model
        self.blocks = model.hf_model.model.layers
        self.encoded = encode_samples(model, samples)
        self.n_samples = len(samples)
        self.lengths = [len(e.ids) for e in self.encoded]
        self.max_batch_tokens = max_batch_tokens
        self.on_rows = on_rows or (lambda n: None)
        self._trunk: _Trunk | None = None
        self.flops = 0.0  # matmul FLOPs of everything run (padding included), for the benchmark
        self._layer_params = sum(p.numel() for p in self.blocks[0].parameters() if p.dim() == 2)
        self._kv_params = 2 * model.d_model * model.n_kv_heads * model.d_head
        self._last_block_at_targets = getattr(model.hf_model.config, "model_type", None) == "llama"

    # -- public

    @torch.no_grad()
    def losses(self, layer: int, base: HeadMask, heads: Sequence[int | None]) -> list[float]:
        _check_request(self.model, layer, base, heads)
        trunk = self._trunk_at(layer, base)
        nll = [[NAN] * self.n_samples for _ in heads]
        rows, picked = [], []
        for p in self._pack([(s, c) for c in range(len(heads)) for s in range(self.n_samples)]):
            hidden, kwargs = self._batch(p, [trunk[s] for s in p.samples])
            masked = [(k, [heads[c]]) for k, (_, c) in enumerate(p.rows) if heads[c] is not None]
            hooks = [(hook_z_name(layer), zero_heads_hook(self._keep(p, masked)))] if masked else []
            picked.append(self._run_to_targets(layer, hidden, kwargs, hooks, p))
            rows += p.rows
            self.on_rows(len(p.rows))
        for (s, c), v in zip(rows, self._target_nll(torch.cat(picked), [s for s, _ in rows]).tolist()):
            nll[c][s] = v
        return [set_loss(row) for row in nll]

    @torch.no_grad()
    def attribution(self, layer: int, base: HeadMask) -> tuple[float, list[float]]:
        """Attribution patching: (loss with `base` masked, estimated loss with each head of `layer`
        masked too), the estimate being loss + sum over positions of -z_h . dLoss/dz_h, from one
        forward and backward of layers layer..L-1."""
        _check_request(self.model, layer, base, [None])
        trunk = self._trunk_at(layer, base)
        delta = torch.zeros(self.model.n_heads, dtype=torch.float64)
        loss = 0.0
        for p in self._pack(list(range(self.n_samples))):
            hidden, kwargs = self._batch(p, [trunk[s] for s in p.samples])
            zs: list[Tensor] = []

            def grab(z, hook=None):
                zs.append(z.detach().requires_grad_(True))
                return zs[-1]

            with torch.enable_grad():
                picked = self._run_to_targets(layer, hidden, kwargs, [(hook_z_name(layer), grab)], p)
                chunk_loss = self._target_nll(picked, p.samples).sum() / self.n_samples
                (grad,) = torch.autograd.grad(chunk_loss, zs[0])
            delta += torch.einsum("bphd,bphd->h", -zs[0].detach().double(), grad.double())  # padding: z = 0
            loss += float(chunk_loss.detach())
            self.on_rows(2 * len(p.rows))
        return loss, [loss + float(d) for d in delta]

    @torch.no_grad()
    def curve(self, sel: HeadMask, layers: Sequence[int]) -> list[float]:
        """For each k in `layers`: the loss with the heads of `sel` in layers[0]..k masked.

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
                hidden, kwargs = self._batch(p, [streams[k][s] for s, k in p.rows])
                masked = [(i, heads) for i, (_, k) in enumerate(p.rows) if k == last_step] if heads else []
                hooks = [(hook_z_name(j), zero_heads_hook(self._keep(p, masked)))] if masked else []
                if j == L - 1:
                    picked.append(self._run_to_targets(j, hidden, kwargs, hooks, p))
                    last_rows += p.rows
                    self.on_rows(len(p.rows))
                    continue
                hidden = self._run(j, j + 1, hidden, kwargs, hooks)
                for (s, k), state in zip(p.rows, self._unpack(p, hidden)):
                    out[k][s] = state
            streams = out
            if j in layers and j != last_step:
                streams[j] = streams[last_step]  # step j: masked up to j, unmasked from here on
        for (s, k), v in zip(last_rows, self._target_nll(torch.cat(picked), [s for s, _ in last_rows]).tolist()):
            nll[k][s] = v
        return [set_loss(nll[k]) for k in layers]

    # -- trunk

    def _trunk_at(self, layer: int, base: HeadMask) -> list[Tensor]:
        """The residual stream entering `layer` with `base` masked; advances the kept trunk when it
        is on the way, else starts again from the embeddings."""
        t = self._trunk
        if t is None or t.layer > layer or base.before(t.layer) != t.mask:
            t = _Trunk(0, HeadMask(), [self._embed(s) for s in range(self.n_samples)])
        while t.layer < layer:
            t = _Trunk(t.layer + 1, base.before(t.layer + 1), self._advance(t.layer, base.at(t.layer), t.hidden))
        self._trunk = t
        return t.hidden

    def _embed(self, s: int) -> Float[Tensor, "pos d"]:
        """Run the HF model up to block 0 and keep what it passes there: the sample's embeddings."""
        got = {}

        def grab(module, args, kwargs):
            got["hidden"] = args[0] if args else kwargs["hidden_states"]
            raise _Captured

        handle = self.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            ids = torch.tensor([self.encoded[s].ids], device=self.model.device)
            self.model.hf_model.model(input_ids=ids, use_cache=False)
        except _Captured:
            pass
        finally:
            handle.remove()
        return got["hidden"][0]

    def _advance(self, layer: int, heads: tuple[int, ...], trunk: list[Tensor]) -> list[Tensor]:
        out: list[Tensor | None] = [None] * self.n_samples
        for p in self._pack(list(range(self.n_samples))):
            hidden, kwargs = self._batch(p, [trunk[s] for s in p.samples])
            hooks = [(hook_z_name(layer), zero_heads_hook(keep_matrix([heads], self.model.n_heads)))] if heads else []
            hidden = self._run(layer, layer + 1, hidden, kwargs, hooks)
            for s, state in zip(p.samples, self._unpack(p, hidden)):
                out[s] = state
        return out

    # -- packing and running

    def _pack(self, rows: list) -> list[_Packed]:
        """Rows into forwards of at most `max_batch_tokens` tokens, in whichever of two layouts
        computes fewer padded tokens: one row per line, rows sorted by length (padding stays
        within SLACK of the real tokens); or rows packed end to end, longest first, each into the
        fullest line with room (lines as wide as the longest sample)."""
        def length(r):
            return self.lengths[r[0] if isinstance(r, tuple) else r]

        by_length = sorted(rows, key=lambda r: (length(r), r))
        single = self._forwards([[r] for r in by_length], length, fill_limit=True)
        width, lines, room = max(map(length, rows)), [], []
        for r in reversed(by_length):
            fits = [i for i, free in enumerate(room) if free >= length(r)]
            if not fits:
                lines.append([])
                room.append(width)
                fits = [len(lines) - 1]
            i = min(fits, key=lambda i: room[i])
            lines[i].append(r)
            room[i] -= length(r)
        lines.sort(key=lambda line: sum(map(length, line)))
        packed = self._forwards(lines, length, fill_limit=False)
        cost = [sum(p.n_lines * p.width for p in layout) for layout in (single, packed)]
        return single if cost[0] <= cost[1] else packed

    def _forwards(self, lines: list[list], length, fill_limit: bool) -> list[_Packed]:
        """Consecutive lines grouped so lines x widest <= max_batch_tokens (and, with
        `fill_limit`, padded tokens <= SLACK x real tokens)."""
        groups, current, real = [], [], 0
        for line in lines:
            n = sum(map(length, line))
            widest = max([n] + [sum(map(length, c)) for c in current[-1:]])
            tokens = (len(current) + 1) * widest
            if current and (tokens > self.max_batch_tokens or fill_limit and tokens > SLACK * (real + n)):
                groups.append(current)
                current, real = [], 0
            current.append(line)
            real += n
        groups += [current] if current else []
        packs = []
        for group in groups:
            p = _Packed([], [], [], [], len(group), max(sum(map(length, line)) for line in group))
            for i, line in enumerate(group):
                at = 0
                for r in line:
                    p.rows.append(r)
                    p.samples.append(r[0] if isinstance(r, tuple) else r)
                    p.line.append(i)
                    p.start.append(at)
                    at += length(r)
            packs.append(p)
        return packs

    def _batch(self, p: _Packed, states: list[Tensor]) -> tuple[Float[Tensor, "line pos d"], dict]:
        """The rows' residuals (`states`, in row order) packed, and the block kwargs that keep every
        row to itself: a block-diagonal causal mask, and rotary positions that restart at each row."""
        hidden = states[0].new_zeros(p.n_lines, p.width, states[0].shape[-1])
        positions = torch.zeros(p.n_lines, p.width, dtype=torch.long)
        segment = torch.full((p.n_lines, p.width), -1)  # -1: unused tail of a line, a block of its own
        for k, (s, line, start) in enumerate(zip(p.samples, p.line, p.start)):
            n = self.lengths[s]
            hidden[line, start : start + n] = states[k]
            positions[line, start : start + n] = torch.arange(n)
            segment[line, start : start + n] = k
        allowed = (segment[:, :, None] == segment[:, None, :]) & torch.ones(p.width, p.width, dtype=torch.bool).tril()
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        positions = positions.to(hidden.device)
        kwargs = {
            "attention_mask": mask[:, None].to(hidden.device),
            "position_ids": positions,
            "position_embeddings": self.model.hf_model.model.rotary_emb(hidden, positions),
            "use_cache": False,
        }
        return hidden, kwargs

    def _unpack(self, p: _Packed, hidden: Float[Tensor, "line pos d"]) -> list[Float[Tensor, "pos d"]]:
        """`_batch` undone: each row's own positions, in row order."""
        return [hidden[line, start : start + self.lengths[s]].clone()
                for s, line, start in zip(p.samples, p.line, p.start)]

    def _keep(self, p: _Packed, masked: list[tuple[int, Sequence[int]]]) -> Float[Tensor, "line pos head"]:
        """Per position, 1 for the heads kept, 0 for the heads masked in the row it belongs to
        (`masked`: row index and its heads)."""
        keep = torch.ones(p.n_lines, p.width, self.model.n_heads)
        for k, heads in masked:
            start = p.start[k]
            keep[p.line[k], start : start + self.lengths[p.samples[k]], list(heads)] = 0.0
        return keep

    def _run(self, start: int, stop: int, hidden: Tensor, kwargs: dict, hooks: list) -> Tensor:
        """Blocks start..stop-1 of the bridge (their hooks fire), as HF's own loop calls them."""
        with self.model.bridge.hooks(fwd_hooks=hooks):
            for i in range(start, stop):
                out = self.blocks[i](hidden, **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
        self.flops += self._layers_flops(hidden.shape[0] * hidden.shape[1], hidden.shape[1], stop - start)
        return hidden

    def _run_to_targets(self, start: int, hidden: Tensor, kwargs: dict, hooks: list,
                        p: _Packed) -> Float[Tensor, "target d"]:
        """The residual stream after the last block at each row's target positions (row order)."""
        lines, cols = [], []
        for s, line, first in zip(p.samples, p.line, p.start):
            e, end = self.encoded[s], first + self.lengths[s]
            lines += [line] * len(e.targets)
            cols += range(end - len(e.targets), end)
        lines, cols = torch.tensor(lines, device=hidden.device), torch.tensor(cols, device=hidden.device)
        last = self.model.n_layers - 1
        hooked = any(mod._forward_hooks or mod._forward_pre_hooks for mod in self.blocks[last].modules())
        if not self._last_block_at_targets or start == last or hooked:  # then the last block runs whole
            return self._run(start, last + 1, hidden, kwargs, hooks)[lines, cols]
        hidden = self._run(start, last, hidden, kwargs, hooks)
        return self._last_block(hidden, kwargs, lines, cols)

    def _last_block(self, hidden: Float[Tensor, "line pos d"], kwargs: dict, lines: Tensor,
                    cols: Tensor) -> Float[Tensor, "target d"]:
        """A Llama decoder block evaluated only at (lines, cols): queries, attention output and
        MLP there, keys and values at every position, through the bridge's own submodules."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        block = self.blocks[-1]
        attn, m = block.attn, self.model
        x = block.ln1(hidden)
        cos, sin = kwargs["position_embeddings"]
        q = rearrange(attn.q(x[lines, cols]), "t (h d) -> t h 1 d", d=m.d_head)
        q, _ = apply_rotary_pos_emb(q, q, cos[lines, cols][:, None], sin[lines, cols][:, None])
        k = rearrange(attn.k(x), "b p (h d) -> b h p d", d=m.d_head)
        v = rearrange(attn.v(x), "b p (h d) -> b h p d", d=m.d_head)
        k, _ = apply_rotary_pos_emb(k, k, cos, sin)
        k, v = repeat_kv(k, m.n_heads // m.n_kv_heads)[lines], repeat_kv(v, m.n_heads // m.n_kv_heads)[lines]
        scores = q @ k.transpose(-1, -2) * attn.original_component.scaling  # [t, h, 1, pos]
        scores = scores + kwargs["attention_mask"][lines, :, cols][:, :, None]
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = attn.o(rearrange(weights @ v, "t h 1 d -> t (h d)"))
        resid = hidden[lines, cols] + out
        n_targets, width = len(cols), hidden.shape[1]
        self.flops += (2.0 * self._kv_params * hidden.shape[0] * width + 2.0 * self._layer_params * n_targets
                       + 4.0 * n_targets * m.n_heads * width * m.d_head)
        return resid + block.mlp(block.ln2(resid))

    def _target_nll(self, picked: Float[Tensor, "target d"], samples: list[int]) -> Float[Tensor, " row"]:
        """Each row's mean NLL of its sample's target tokens: final norm + unembed at the targets.
        Callers pass all their forwards' targets at once: with few targets, reading the unembedding
        matrix costs more than the product."""
        targets = torch.tensor([t for s in samples for t in self.encoded[s].targets], device=picked.device)
        sizes = [len(self.encoded[s].targets) for s in samples]
        hf = self.model.hf_model
        tok = []
        for x, t in zip(picked.split(UNEMBED_TARGETS), targets.split(UNEMBED_TARGETS)):
            logp = torch.log_softmax(hf.lm_head(hf.model.norm(x)).float(), dim=-1)
            tok.append(logp.gather(-1, t[:, None])[:, 0])
            self.flops += 2.0 * logp.shape[0] * logp.shape[1] * x.shape[1]
        return torch.stack([-part.mean() for part in torch.cat(tok).split(sizes)])

    def _layers_flops(self, tokens: int, width: int, n_layers: int) -> float:
        m = self.model
        attention = 4.0 * tokens * m.n_heads * width * m.d_head  # scores and weighted sum
        return n_layers * (2.0 * self._layer_params * tokens + attention)


# --- strategies -------------------------------------------------------------------------------


def top_heads(row: Sequence[float], n: int) -> list[int]:
    """The n heads with the highest loss (ties: lower index); NaN (not evaluated) never chosen."""
    evaluated = [h for h, x in enumerate(row) if not math.isnan(x)]
    return sorted(sorted(evaluated, key=lambda h: (-row[h], h))[:n])


def random_heads(seed: int, layers: Sequence[int], n_heads: int, n: int,
                 exclude: HeadMask = HeadMask()) -> HeadMask:
    """n heads per layer drawn with `random.Random(seed)`, never from `exclude`."""
    rng = random.Random(seed)
    chosen = {}
    for layer in layers:
        pool = [h for h in range(n_heads) if h not in exclude.at(layer)]
        if len(pool) < n:
            raise CircuitlabError(f"layer {layer} has only {len(pool)} heads outside the circuit, fewer than n={n}")
        chosen[layer] = rng.sample(pool, n)
    return HeadMask.of(chosen)


class Memo:
    """Results of finished steps by key (JSON-safe), saved after each step: a rerun replays them."""

    def __init__(self, done: dict | None = None, save: Callable[[dict], None] | None = None,
                 on_start: Callable[[str, bool], None] | None = None,
                 on_step: Callable[[str], None] | None = None):
        self.done = dict(done or {})
        self.save = save or (lambda done: None)
        self.on_start = on_start or (lambda key, replayed: None)
        self.on_step = on_step or (lambda key: None)
        self.replayed = 0

    def __call__(self, key: str, fn: Callable[[], object]):
        replayed = key in self.done
        self.on_start(key, replayed)
        if replayed:
            self.replayed += 1
            return self.done[key]
        self.done[key] = fn()
        self.save(self.done)
        self.on_step(key)
        return self.done[key]


def _json_row(row: list[float]) -> list[float | None]:
    return [None if math.isnan(x) else x for x in row]


def _row(row: list[float | None]) -> list[float]:
    return [NAN if x is None else float(x) for x in row]


def score_layer(ev: Evaluator, layer: int, base: HeadMask, n_heads: int, prescreen: int | None,
                with_base: bool) -> dict:
    """Losses of masking each head of `layer` on top of `base` (only the attribution top-K when
    prescreening), plus the loss of `base` alone when `with_base`."""
    candidates, estimate = list(range(n_heads)), None
    if prescreen is not None and prescreen < n_heads:
        _, estimate = ev.attribution(layer, base)
        candidates = sorted(sorted(candidates, key=lambda h: (-estimate[h], h))[:prescreen])
    out = ev.losses(layer, base, ([None] if with_base else []) + candidates)
    row = [NAN] * n_heads
    for h, x in zip(candidates, out[1:] if with_base else out):
        row[h] = x
    return {"base": out[0] if with_base else None, "losses": _json_row(row), "estimate": estimate}


@dataclass
class Located:
    """What a strategy found: the selection and the numbers behind it."""

    heads: HeadMask
    baseline: float
    curve: list[float]
    tables: dict[str, list[list[float]]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    selections: dict[str, dict[int, list[int]]] = field(default_factory=dict)


def loss_curve(ev: Evaluator, sel: HeadMask, layers: Sequence[int], memo: Memo, key: str) -> list[float]:
    """For each layer k: the loss with the selected heads of layers first..k masked."""
    return memo(f"{key}/", lambda: ev.curve(sel, layers))


def baseline_loss(ev: Evaluator, layers: Sequence[int], memo: Memo) -> float:
    return memo("baseline/", lambda: ev.losses(layers[0], HeadMask(), [None])[0])


def layer_conditioned(ev, layers, n_heads, n, memo, prescreen=None) -> Located:
    """Algorithm 1: layer by layer, each head's loss with the heads chosen in earlier layers masked;
    keep the top n. The loss of the chosen heads alone rides along in each layer's batch, which
    gives the loss curve (and, in the first layer, the baseline) for free."""
    chosen, tables, curve = HeadMask(), _empty_tables(ev, n_heads, prescreen, "conditioned"), []
    for layer in layers:
        res = memo(f"conditioned/{layer}", lambda: score_layer(ev, layer, chosen, n_heads, prescreen, True))
        _fill(tables, "conditioned", layer, res)
        curve.append(res["base"])
        chosen = chosen.plus(layer, top_heads(_row(res["losses"]), n))
    end = layers[-1] + 1
    curve.append(memo(f"conditioned/{end}", lambda: ev.losses(end, chosen, [None])[0]))
    return Located(chosen, curve[0], curve[1:], tables)


def single_head(ev, layers, n_heads, n, memo, prescreen=None) -> Located:
    """The L x H table of each head masked alone; the greedy selection is its top n per layer."""
    tables = _empty_tables(ev, n_heads, prescreen, "single")
    chosen = {}
    for layer in layers:
        res = memo(f"single/{layer}", lambda: score_layer(ev, layer, HeadMask(), n_heads, prescreen, False))
        _fill(tables, "single", layer, res)
        chosen[layer] = top_heads(_row(res["losses"]), n)
    sel = HeadMask.of(chosen)
    return Located(sel, baseline_loss(ev, layers, memo), loss_curve(ev, sel, layers, memo, "curve"), tables)


def random_selections(ev, layers, n_heads, n, memo, seeds: Sequence[int], exclude=HeadMask()) -> Located:
    """n random heads per layer for each seed (never from `exclude`); the first seed's is the selection."""
    sels = {seed: random_heads(seed, layers, n_heads, n, exclude) for seed in seeds}
    baseline = baseline_loss(ev, layers, memo)
    curves = {seed: loss_curve(ev, sel, layers, memo, f"seed {seed}") for seed, sel in sels.items()}
    first = seeds[0]
    return Located(
        sels[first], baseline, curves[first],
        curves={f"seed {s}": c for s, c in curves.items()} if len(seeds) > 1 else {},
        selections={str(s): sel.as_dict() for s, sel in sels.items()} if len(seeds) > 1 else {},
    )


def _empty_tables(ev, n_heads: int, prescreen: int | None, name: str) -> dict[str, list[list[float]]]:
    n_layers = ev.model.n_layers
    tables = {name: [[NAN] * n_heads for _ in range(n_layers)]}
    if prescreen is not None and prescreen < n_heads:
        tables[f"{name}_estimate"] = [[NAN] * n_heads for _ in range(n_layers)]
    return tables


def _fill(tables: dict, name: str, layer: int, res: dict) -> None:
    tables[name][layer] = _row(res["losses"])
    if res["estimate"] is not None:
        tables[f"{name}_estimate"][layer] = list(res["estimate"])


# --- the locate API ---------------------------------------------------------------------------


@dataclass
class LocateConfig:
    strategy: str = "layer-conditioned"
    n_per_layer: int | None = None  # default: default_heads_per_layer(model)
    seeds: tuple[int, ...] = (0,)  # random and redundant: one selection per seed
    layers: tuple[int, int] | None = None  # first and last layer (inclusive); default: all
    prescreen: int | None = None  # evaluate only the attribution top K per layer exactly
    max_batch_tokens: int = 4096
    plain: bool = False  # use the paper's plain algorithm instead of the engine
    plain_batch_size: int | None = None  # plain: samples per forward (default all; 1 = Algorithm 1's loop)
    circuit: Circuit | None = None  # redundant: the circuit whose heads are excluded


def default_heads_per_layer(n_heads: int) -> int:
    """8 for 32-head models (the paper), otherwise round(H/4), at least 1."""
    return 8 if n_heads == 32 else max(1, round(n_heads / 4))


def parse_layers(text: str, n_layers: int) -> tuple[int, int]:
    try:
        parts = [int(x) for x in text.split("-")]
        first, last = (parts[0], parts[0]) if len(parts) == 1 else parts
    except ValueError:
        raise CircuitlabError(f"--layers must be A-B or A, got {text!r}") from None
    if not 0 <= first <= last < n_layers:
        raise CircuitlabError(f"--layers {text} out of range: the model has layers 0-{n_layers - 1}")
    return first, last


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.json")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in ("circuitlab", "torch", "transformers", "transformer-lens", "peft"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def resolve_config(model: LoadedModel, config: LocateConfig) -> tuple[int, list[int]]:
    H, L = model.n_heads, model.n_layers
    if config.strategy not in STRATEGIES:
        raise CircuitlabError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n = config.n_per_layer if config.n_per_layer is not None else default_heads_per_layer(H)
    if not 1 <= n <= H:
        raise CircuitlabError(f"--heads-per-layer {n} out of range: the model has {H} heads per layer")
    first, last = config.layers if config.layers is not None else (0, L - 1)
    if not 0 <= first <= last < L:
        raise CircuitlabError(f"layers {first}-{last} out of range: the model has layers 0-{L - 1}")
    if config.prescreen is not None and not n <= config.prescreen <= H:
        raise CircuitlabError(f"--prescreen {config.prescreen} must be between n={n} and the {H} heads per layer")
    if config.prescreen is not None and config.plain:
        raise CircuitlabError("--prescreen needs the engine (the plain algorithm evaluates every head)")
    if not config.seeds:
        raise CircuitlabError("give at least one seed")
    if config.strategy == "redundant":
        if config.circuit is None:
            raise CircuitlabError("--strategy redundant needs the circuit to avoid: --circuit C.json")
        config.circuit.validate(model)
    return n, list(range(first, last + 1))


def locate(
    model: LoadedModel,
    samples: list[Sample],
    config: LocateConfig | None = None,
    task: TaskInfo | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> Circuit:
    """Run one strategy and return the circuit with its numbers.

    With `checkpoint`, every finished layer is saved there (atomically); a later call with the
    same model, samples and config continues from it and gives the same result. The caller
    removes the checkpoint once the circuit is saved.
    """
    config = config or LocateConfig()
    n, layers = resolve_config(model, config)
    if not samples:
        raise CircuitlabError("no samples to locate on")
    task = task or TaskInfo("custom", "samples", samples_fingerprint(samples), None)
    info = ModelInfo.of(model)
    key = {
        "model": asdict(info), "task": asdict(task), "samples": [asdict(s) for s in samples],
        "strategy": config.strategy, "n": n, "seeds": list(config.seeds), "layers": [layers[0], layers[-1]],
        "prescreen": config.prescreen, "max_batch_tokens": config.max_batch_tokens, "plain": config.plain,
        "circuit": config.circuit.to_dict()["head_list"] if config.circuit else None,
    }
    done, elapsed = _load_checkpoint(checkpoint, key)
    start = time.perf_counter()

    bar = tqdm(total=_total_units(config, layers, model.n_heads), unit="cand", disable=not progress,
               dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total} cand [{elapsed}<{remaining}]")

    def on_start(step: str, replayed: bool) -> None:
        what, _, where = step.partition("/")
        if where.isdigit():
            where = f"layer {where}/{model.n_layers - 1}" if int(where) < model.n_layers else "all layers masked"
        bar.set_description(f"{config.strategy}: {what} {where}")
        if replayed:
            bar.update(_step_units(step, config, layers, model.n_heads))

    def save(done_: dict) -> None:
        if checkpoint is not None:
            write_json_atomic(checkpoint, {"config": key, "done": done_,
                                           "elapsed_s": elapsed + time.perf_counter() - start})

    memo = Memo(done, save, on_start, on_step)
    on_rows = lambda rows: bar.update(rows / len(samples))  # noqa: E731
    ev = (PlainEvaluator(model, samples, config.plain_batch_size, on_rows=on_rows) if config.plain
          else Engine(model, samples, config.max_batch_tokens, on_rows=on_rows))
    H = model.n_heads
    try:
        if config.strategy == "layer-conditioned":
            found = layer_conditioned(ev, layers, H, n, memo, config.prescreen)
        elif config.strategy in ("single", "greedy"):
            found = single_head(ev, layers, H, n, memo, config.prescreen)
        else:
            exclude = HeadMask.of(config.circuit.heads) if config.strategy == "redundant" else HeadMask()
            found = random_selections(ev, layers, H, n, memo, config.seeds, exclude)
    finally:
        bar.close()
    seconds = elapsed + time.perf_counter() - start

    seeded = config.strategy in ("random", "redundant")
    extra = {"evaluator": "plain" if config.plain else "engine", "max_batch_tokens": config.max_batch_tokens,
             "prescreen": config.prescreen, "layers": [layers[0], layers[-1]], "resumed_steps": memo.replayed}
    if seeded:
        extra["seeds"] = list(config.seeds)
        if found.selections:
            extra["selections"] = found.selections
    if config.strategy == "redundant":
        extra["excluded_circuit"] = {"strategy": config.circuit.strategy, "heads": config.circuit.to_dict()["heads"]}
    if isinstance(ev, Engine):
        extra["engine_flops"] = ev.flops
    return Circuit(
        model=info, task=task, samples=list(samples), strategy=config.strategy, n_per_layer=n,
        heads=found.heads.as_dict(), seed=config.seeds[0] if seeded else None,
        baseline_loss=found.baseline, loss_curve=found.curve,
        scores={k: [list(r) for r in v] for k, v in found.tables.items()}, curves=found.curves,
        timings={"locate_s": round(seconds, 3)}, versions=package_versions(), extra=extra,
    )


def _step_units(step: str, config: LocateConfig, layers: list[int], n_heads: int) -> float:
    """Progress units (one = one candidate set over all samples) of a step, for the bar."""
    what, _, where = step.partition("/")
    if not where:
        return 1 if what == "baseline" else len(layers)  # a whole loss curve
    if what not in ("conditioned", "single") or int(where) > layers[-1]:
        return 1
    screened = config.prescreen is not None and config.prescreen < n_heads
    return (config.prescreen if screened else n_heads) + (2 if screened else 0) + (what == "conditioned")


def _total_units(config: LocateConfig, layers: list[int], n_heads: int) -> float:
    if config.strategy == "layer-conditioned":
        steps = [f"conditioned/{la}" for la in layers] + [f"conditioned/{layers[-1] + 1}"]
    elif config.strategy in ("single", "greedy"):
        steps = [f"single/{la}" for la in layers] + ["baseline/", "curve/"]
    else:
        steps = ["baseline/"] + [f"seed {s}/" for s in config.seeds]
    return sum(_step_units(s, config, layers, n_heads) for s in steps)


def _load_checkpoint(path: str | Path | None, key: dict) -> tuple[dict, float]:
    if path is None or not Path(path).exists():
        return {}, 0.0
    try:
        saved = read_json(path, "checkpoint")
    except CircuitlabError as e:
        print(f"circuitlab: ignoring unreadable checkpoint ({e}); starting over", file=sys.stderr)
        return {}, 0.0
    if not isinstance(saved, dict) or saved.get("config") != json.loads(json.dumps(key)):
        print(f"circuitlab: checkpoint {path} was made with other settings; starting over", file=sys.stderr)
        return {}, 0.0
    print(f"circuitlab: resuming from {path} ({len(saved.get('done', {}))} steps done)", file=sys.stderr)
    return dict(saved.get("done", {})), float(saved.get("elapsed_s", 0.0))
