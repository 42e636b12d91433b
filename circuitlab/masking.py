"""Masking attention heads through the bridge's `blocks.{l}.attn.hook_z`.

A masked head's z (its attention output per query head, before W_O) is zero at every position, so
the head writes nothing into the residual stream. Query heads are the unit, also in GQA models.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.heads import HeadMask

HookFn = Callable[[Tensor, object], Tensor]


def hook_z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def keep_matrix(masked: list[Iterable[int]], n_heads: int) -> Float[Tensor, "batch head"]:
    """Row b is 1 for the heads kept in sequence b, 0 for the heads in `masked[b]`."""
    keep = torch.ones(len(masked), n_heads)
    for row, heads in enumerate(masked):
        keep[row, list(heads)] = 0.0
    return keep


def zero_heads_hook(keep: Float[Tensor, "batch head"] | Float[Tensor, "batch pos head"]) -> HookFn:
    """A hook_z hook that zeroes the heads whose `keep` entry is 0.

    `keep` has one row per sequence in the batch (or a single row for all of them), or one entry
    per sequence and position, for batches that pack several sequences into one.
    """

    def hook(z: Float[Tensor, "batch pos head d_head"], hook=None) -> Tensor:
        k = keep.to(z.device, z.dtype)
        return z * (k[:, None, :, None] if k.dim() == 2 else k[..., None])

    return hook


def mask_hooks(mask: HeadMask, n_heads: int) -> list[tuple[str, HookFn]]:
    """Hooks that mask the same heads in every sequence of a batch."""
    return [(hook_z_name(layer), zero_heads_hook(keep_matrix([hs], n_heads))) for layer, hs in mask.heads]


def masked_logits(
    model, ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], mask: HeadMask
) -> Float[Tensor, "batch pos vocab"]:
    """The plain masked forward: the whole HF model (whose modules the bridge hooks) with `mask` applied."""
    dev = model.device
    with model.bridge.hooks(fwd_hooks=mask_hooks(mask, model.n_heads)):
        out = model.hf_model(input_ids=ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)
    return out.logits
