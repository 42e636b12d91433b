"""What a masked head's z becomes: zero, its mean over reference docs, or its corrupted-run value.

Masking head h sets its z (hook_z, the input of W_O) to z' = keep * z + (1 - keep) * r
(`masking.ablate_heads_hook`, the one hook of the plain algorithm and the engine), with r:

- zero: 0, the HeadMap paper's ablation (the default; exactly the old `z * keep`).
- mean: the head's mean z over every token position of N reference docs, one [head, d_head]
  vector per layer from one unmasked forward. The CLI takes the first N docs of the samples' split
  that are not located samples (`reference_pool` then `reference_samples`): data the model reads the
  same way as the samples, none of which is scored. "Off-distribution" zero z is the usual objection
  to zero ablation; the mean keeps the head's constant part.
- corrupted: the head's z in the unmasked run of the sample's corrupted prompt (same token length,
  followed by the same target tokens) at the same position: activation patching from a run that
  should not give the answer, for tasks with clean/corrupted pairs.

Both runs are computed once, before any step, on every process alike: the corrupted runs like the
trunk (the same inputs in the same batches on every rank), the mean broadcast from rank 0 besides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.circuits.circuit import Sample
from circuitlab.core.errors import ConfigError
from circuitlab.locate.config import ABLATIONS
from circuitlab.core.processes import Shard
from circuitlab.locate.packing import Pack
from circuitlab.locate.encoding import Encoded, encode_samples
from circuitlab.locate.masking import Replacement, hook_z_name
from circuitlab.evaluate.scoring import pad_batch

Z_BATCH = 8  # sequences per unmasked forward of the reference docs and corrupted prompts


@dataclass
class Ablation:
    """The replacement r of every layer, ready for the hooks (tensors on their layer's device)."""

    kind: str = "zero"
    mean: list[Float[Tensor, "head d_head"]] | None = None  # per layer
    corrupted: list[list[Float[Tensor, "pos head d_head"]]] | None = None  # per layer, per sample: its whole run

    @classmethod
    def build(cls, model, kind: str, samples: Sequence, reference: Sequence[Sample] | None = None,
              eos: bool = False, shard: Shard | None = None) -> "Ablation":
        """The runs `kind` needs: the samples' corrupted prompts (encoded with the same target and
        `eos` as the samples), or the mean over `reference` (the docs' prompt + gold target)."""
        check(kind, samples, reference)
        if kind == "corrupted":
            runs = [[] for _ in range(model.n_layers)]
            for zs in z_runs(model, encode_samples(model, list(samples), eos=eos, corrupted=True)):
                for layer, z in enumerate(zs):
                    runs[layer].append(z)
            return cls(kind, corrupted=runs)
        if kind == "mean":
            shard = shard or Shard.current()
            mean = mean_z(model, encode_samples(model, list(reference)))
            if shard.world > 1:  # rank 0's vectors on every rank: the same r wherever a row runs
                mean = [m.copy_(sent) for m, sent in zip(mean, shard.broadcast([m.cpu() for m in mean]))]
            return cls(kind, mean=mean)
        return cls(kind)

    def at(self, layer: int, n_lines: int, width: int,
           placed: Iterable[tuple[int, int, int, int]]) -> Replacement:
        """r in `layer` for a forward of `n_lines` x `width` positions whose rows sit at `placed`:
        (line, first position, length, sample). The mean is one vector for every position; a
        corrupted run fills its sample's row position by position (its first `length` positions:
        a row reads its sample's first positions), 0 elsewhere (padding, where keep is 1)."""
        if self.kind == "zero":
            return None
        if self.kind == "mean":
            return self.mean[layer]
        runs = self.corrupted[layer]
        r = runs[0].new_zeros(n_lines, width, *runs[0].shape[1:])
        for line, start, n, s in placed:
            r[line, start : start + n] = runs[s][:n]
        return r

    def packed(self, layer: int, p: Pack, samples: Sequence[int]) -> Replacement:
        """r for a packed forward (`samples`: each row's sample, in row order)."""
        return self.at(layer, p.n_lines, p.width, zip(p.line, p.start, p.length, samples))

    def padded(self, layer: int, samples: Sequence[int], lengths: Sequence[int], width: int) -> Replacement:
        """r for a batch of one sample per line, right-padded to `width` (the plain algorithm's)."""
        return self.at(layer, len(samples), width, ((i, 0, n, s) for i, (s, n) in enumerate(zip(samples, lengths))))


def check(kind: str, samples: Sequence, reference: Sequence[Sample] | None) -> None:
    """Refuse, in one line and before any model work, what `kind` cannot run with."""
    if kind not in ABLATIONS:
        raise ConfigError("ablation", f"must be one of {', '.join(ABLATIONS)}; got {kind!r}")
    if kind == "corrupted":
        missing = sum(not isinstance(s, Sample) or not s.corrupted for s in samples)
        if missing:
            raise ConfigError("ablation", f"corrupted needs each sample's corrupted prompt; {missing} of the "
                                          f"{len(samples)} samples have none (tasks with clean/corrupted pairs, "
                                          'e.g. add_sub, or rows with a "corrupted" key)')
    if kind == "mean" and not reference:
        raise ConfigError("ablation", "mean needs reference docs (LocateConfig.reference; the CLI takes "
                                      "--ablation-docs docs of the split that are not samples)")


@torch.no_grad()
def z_runs(model, encoded: list[Encoded]) -> Iterator[list[Float[Tensor, "pos head d_head"]]]:
    """Every layer's z in the unmasked run of each sequence's whole text (ids + the last target
    token, as the plain algorithm feeds it), in order, from right-padded batches of Z_BATCH."""
    for start in range(0, len(encoded), Z_BATCH):
        batch = [list(e.ids) + [e.targets[-1]] for e in encoded[start : start + Z_BATCH]]
        ids, attn = pad_batch(batch, model.tokenizer.pad_token_id)
        got: dict[int, Tensor] = {}

        def grab(layer: int):
            def hook(z, hook=None):
                got[layer] = z.detach()
                return z
            return hook

        with model.bridge.hooks(fwd_hooks=[(hook_z_name(la), grab(la)) for la in range(model.n_layers)]):
            model.hf_model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device), use_cache=False)
        for row, seq in enumerate(batch):
            yield [got[la][row, : len(seq)].clone() for la in range(model.n_layers)]


def mean_z(model, encoded: list[Encoded]) -> list[Float[Tensor, "head d_head"]]:
    """Each layer's z averaged over every position of every sequence (float32 sums)."""
    sums: list[Tensor | None] = [None] * model.n_layers
    count = 0
    for zs in z_runs(model, encoded):
        count += zs[0].shape[0]
        for layer, z in enumerate(zs):
            part = z.float().sum(0)
            sums[layer] = part if sums[layer] is None else sums[layer] + part
    return [s / count for s in sums]
