"""Masking attention heads through the bridge's `blocks.{l}.attn.hook_z`.

A masked head's z (its attention output per query head, before W_O) is replaced at every position:
by zero (the paper's ablation: the head writes nothing into the residual stream), or by a
replacement `r` (`circuitlab.locate.ablation`: the head's mean z over reference docs, or its z in
the run of a corrupted prompt). Query heads are the unit, also in GQA models.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.circuits.heads import HeadMask

HookFn = Callable[[Tensor, object], Tensor]
# What a masked head's z becomes: one [head, d_head] vector for every position (mean), a value per
# sequence and position (corrupted), or None for zero.
Replacement = Float[Tensor, "head d_head"] | Float[Tensor, "batch pos head d_head"] | None


def hook_z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def keep_matrix(masked: list[Iterable[int]], n_heads: int) -> Float[Tensor, "batch head"]:
    """Row b is 1 for the heads kept in sequence b, 0 for the heads in `masked[b]`."""
    keep = torch.ones(len(masked), n_heads)
    for row, heads in enumerate(masked):
        keep[row, list(heads)] = 0.0
    return keep


def ablate_heads_hook(keep: Float[Tensor, "batch head"] | Float[Tensor, "batch pos head"],
                      replacement: Replacement = None) -> HookFn:
    """A hook_z hook that gives the heads whose `keep` entry is 0 the value `replacement`:
    z' = keep * z + (1 - keep) * r, with r = 0 when `replacement` is None (then z' = keep * z, the
    zero ablation exactly as it always was).

    `keep` has one row per sequence in the batch (or a single row for all of them), or one entry
    per sequence and position, for batches that pack several sequences into one. The plain
    algorithm and the engine both mask through this one hook.
    """

    def hook(z: Float[Tensor, "batch pos head d_head"], hook=None) -> Tensor:
        k = keep.to(z.device, z.dtype)
        k = k[:, None, :, None] if k.dim() == 2 else k[..., None]
        if replacement is None:
            return z * k
        return z * k + (1 - k) * replacement.to(z.device, z.dtype)

    return hook


def zero_heads_hook(keep: Float[Tensor, "batch head"] | Float[Tensor, "batch pos head"]) -> HookFn:
    """A hook_z hook that zeroes the heads whose `keep` entry is 0 (`ablate_heads_hook` with r = 0)."""
    return ablate_heads_hook(keep)


def mask_hooks(mask: HeadMask, n_heads: int,
               replacement: Callable[[int], Replacement] | None = None) -> list[tuple[str, HookFn]]:
    """Hooks that mask the same heads in every sequence of a batch; `replacement(layer)`: what a
    masked head's z becomes in that layer (default: zero)."""
    return [(hook_z_name(layer), ablate_heads_hook(keep_matrix([hs], n_heads),
                                                   replacement(layer) if replacement else None))
            for layer, hs in mask.heads]


def masked_logits(
    model, ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], mask: HeadMask,
    replacement: Callable[[int], Replacement] | None = None,
) -> Float[Tensor, "batch pos vocab"]:
    """The plain masked forward: the whole HF model (whose modules the bridge hooks) with `mask` applied."""
    dev = model.device
    with model.bridge.hooks(fwd_hooks=mask_hooks(mask, model.n_heads, replacement)):
        out = model.hf_model(input_ids=ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)
    return out.logits
