"""Running a bridged model block by block, as Hugging Face's own decoder loop calls its layers.

The engine never runs the whole model: it keeps the residual stream entering a layer and runs only
the blocks after it. These are the pieces for that: the embeddings (the HF model stopped at block 0
by a named exception), the block keyword arguments for rows packed end to end, blocks l..L-1 of the
bridge (so their hooks fire), the last Llama block at target positions only, and the target NLL.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.locate.packing import Pack

UNEMBED_TARGETS = 512  # target positions per unembedding product (bounds the logits' memory)


class StopAtBlock(Exception):
    """Raised by a pre-hook on a block to end the forward there: what reached it is all we wanted."""


def embed(model, ids: Sequence[int]) -> Float[Tensor, "pos d_model"]:
    """Run the HF model up to block 0 and keep what it passes there: the sequence's embeddings."""
    got = {}

    def grab(module, args, kwargs):
        got["hidden"] = args[0] if args else kwargs["hidden_states"]
        raise StopAtBlock

    handle = model.hf_model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model.hf_model.model(input_ids=torch.tensor([list(ids)], device=model.device), use_cache=False)
    except StopAtBlock:
        pass
    finally:
        handle.remove()
    return got["hidden"][0]


def packed_inputs(model, p: Pack, states: list[Tensor]) -> tuple[Float[Tensor, "line pos d_model"], dict]:
    """The rows' residuals (`states`, in row order) packed, and the block kwargs that keep every
    row to itself: a block-diagonal causal mask, and rotary positions that restart at each row."""
    hidden = states[0].new_zeros(p.n_lines, p.width, states[0].shape[-1])
    positions = torch.zeros(p.n_lines, p.width, dtype=torch.long)
    segment = torch.full((p.n_lines, p.width), -1)  # -1: unused tail of a line, a block of its own
    for k, (line, start, n) in enumerate(zip(p.line, p.start, p.length)):
        hidden[line, start : start + n] = states[k]
        positions[line, start : start + n] = torch.arange(n)
        segment[line, start : start + n] = k
    allowed = (segment[:, :, None] == segment[:, None, :]) & torch.ones(p.width, p.width, dtype=torch.bool).tril()
    mask = torch.zeros(allowed.shape, dtype=hidden.dtype).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
    positions = positions.to(hidden.device)
    kwargs = {
        "attention_mask": mask[:, None].to(hidden.device),
        "position_ids": positions,
        "position_embeddings": model.hf_model.model.rotary_emb(hidden, positions),
        "use_cache": False,
    }
    return hidden, kwargs


def unpack(p: Pack, hidden: Float[Tensor, "line pos d_model"]) -> list[Float[Tensor, "pos d_model"]]:
    """`packed_inputs` undone: each row's own positions, in row order."""
    return [hidden[line, start : start + n].clone() for line, start, n in zip(p.line, p.start, p.length)]


def keep_per_position(p: Pack, masked: list[tuple[int, Sequence[int]]], n_heads: int) -> Float[Tensor, "line pos head"]:
    """Per position, 1 for the heads kept, 0 for the heads masked in the row it belongs to
    (`masked`: row index and its heads), for `masking.zero_heads_hook`."""
    keep = torch.ones(p.n_lines, p.width, n_heads)
    for k, heads in masked:
        keep[p.line[k], p.start[k] : p.start[k] + p.length[k], list(heads)] = 0.0
    return keep


def target_positions(p: Pack, n_targets: Sequence[int],
                     device) -> tuple[Int[Tensor, " target"], Int[Tensor, " target"]]:
    """(line, position) of each row's target predictions, rows in order: its last n_targets positions."""
    lines, cols = [], []
    for line, start, n, t in zip(p.line, p.start, p.length, n_targets):
        lines += [line] * t
        cols += range(start + n - t, start + n)
    return torch.tensor(lines, device=device), torch.tensor(cols, device=device)


def run_blocks(model, start: int, stop: int, hidden: Tensor, kwargs: dict, hooks: list,
               attention: str = "eager") -> Tensor:
    """Blocks start..stop-1 of the bridge (their hooks fire), as HF's own loop calls them. With
    `attention` "sdpa", a Llama block without other hooks runs as `llama_block` (PyTorch's
    scaled_dot_product_attention; the engine's hook_z hooks applied to z there)."""
    blocks = model.hf_model.model.layers
    if attention == "eager":
        with model.bridge.hooks(fwd_hooks=hooks):  # one context for all the blocks: entering one costs ~1 ms
            for i in range(start, stop):
                out = blocks[i](hidden, **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
        return hidden
    for i in range(start, stop):
        mine = [(name, fn) for name, fn in hooks if name.startswith(f"blocks.{i}.")]
        if can_run_at_targets(blocks[i]) and all(name == f"blocks.{i}.attn.hook_z" for name, _ in mine):
            hidden = llama_block(model, blocks[i], hidden, kwargs, [fn for _, fn in mine])
        else:
            hidden = run_blocks(model, i, i + 1, hidden, kwargs, mine)
    return hidden


def llama_block(model, block, hidden: Float[Tensor, "line pos d_model"], kwargs: dict,
                z_hooks: list) -> Float[Tensor, "line pos d_model"]:
    """A Llama decoder block through the bridge's own submodules, attention by
    `torch.nn.functional.scaled_dot_product_attention`; each of `z_hooks` (hook_z hooks: the input of
    W_O, [line, pos, head, d_head]) is applied to z before W_O, where the bridge would call it."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn, m = block.attn, model.dims
    device = block.ln1.original_component.weight.device
    hidden = hidden.to(device)
    cos, sin = (t.to(device) for t in kwargs["position_embeddings"])
    x = block.ln1(hidden)
    q = rearrange(attn.q(x), "line pos (head d) -> line head pos d", d=m.d_head)
    k = rearrange(attn.k(x), "line pos (head d) -> line head pos d", d=m.d_head)
    v = rearrange(attn.v(x), "line pos (head d) -> line head pos d", d=m.d_head)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    z = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=kwargs["attention_mask"].to(device), scale=attn.original_component.scaling,
        enable_gqa=m.n_kv_heads != m.n_heads)
    z = rearrange(z, "line head pos d -> line pos head d")
    for hook in z_hooks:
        z = hook(z)
    resid = hidden + attn.o(rearrange(z, "line pos head d -> line pos (head d)"))
    return resid + block.mlp(block.ln2(resid))


def can_run_at_targets(block) -> bool:
    """Whether `llama_block_at` may stand in for the block: it calls the block's submodules itself,
    so a hook on one of its hook points (the engine's masks, a HeadMap adapter, a user's) or weights
    that accelerate keeps elsewhere until the block runs (offloaded: on the meta device) need the whole
    block. The bridge's own capture hooks on the wrapped HF modules (wired once a block has run
    whole) do not count."""
    from transformer_lens.hook_points import HookPoint

    hooked = any(isinstance(m, HookPoint) and (m._forward_hooks or m._forward_pre_hooks) for m in block.modules())
    return not hooked and not any(p.device.type == "meta" for p in block.parameters())


def at(hidden: Float[Tensor, "line pos d_model"], lines: Tensor, cols: Tensor) -> Float[Tensor, "target d_model"]:
    """The hidden states at (lines, cols), wherever the last block left them."""
    return hidden[lines.to(hidden.device), cols.to(hidden.device)]


def llama_block_at(model, block, hidden: Float[Tensor, "line pos d_model"], kwargs: dict, lines: Tensor,
                   cols: Tensor) -> Float[Tensor, "target d_model"]:
    """A Llama decoder block evaluated only at (lines, cols): queries, attention output and MLP
    there, keys and values at every position, through the bridge's own submodules."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    attn, m = block.attn, model.dims
    device = block.ln1.original_component.weight.device  # a dispatched model's block may sit on its own device
    hidden, lines, cols = hidden.to(device), lines.to(device), cols.to(device)
    x = block.ln1(hidden)
    cos, sin = (t.to(device) for t in kwargs["position_embeddings"])
    q = rearrange(attn.q(x[lines, cols]), "t (head d) -> t head 1 d", d=m.d_head)
    q, _ = apply_rotary_pos_emb(q, q, cos[lines, cols][:, None], sin[lines, cols][:, None])
    k = rearrange(attn.k(x), "line pos (head d) -> line head pos d", d=m.d_head)
    v = rearrange(attn.v(x), "line pos (head d) -> line head pos d", d=m.d_head)
    k, _ = apply_rotary_pos_emb(k, k, cos, sin)
    groups = m.n_heads // m.n_kv_heads
    k, v = repeat_kv(k, groups)[lines], repeat_kv(v, groups)[lines]
    scores = q @ k.transpose(-1, -2) * attn.original_component.scaling  # [t, head, 1, pos]
    scores = scores + kwargs["attention_mask"].to(device)[lines, :, cols][:, :, None]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = attn.o(rearrange(weights @ v, "t head 1 d -> t (head d)"))
    resid = hidden[lines, cols] + out
    return resid + block.mlp(block.ln2(resid))


def target_nll(model, picked: Float[Tensor, "target d_model"],
               targets: Sequence[Sequence[int]]) -> Float[Tensor, " row"]:
    """Each row's mean NLL of its target tokens (`targets`, rows in order): the final norm and the
    unembedding at the target positions only, in chunks of UNEMBED_TARGETS. Callers pass all their
    forwards' targets at once: with few targets, reading the unembedding matrix costs more than the
    product."""
    flat = torch.tensor([t for row in targets for t in row])
    hf = model.hf_model
    tok = []
    for x, t in zip(picked.split(UNEMBED_TARGETS), flat.split(UNEMBED_TARGETS)):
        logp = torch.log_softmax(hf.lm_head(hf.model.norm(x)).float(), dim=-1)
        tok.append(logp.gather(-1, t.to(logp.device)[:, None])[:, 0])
    return torch.stack([-part.mean() for part in torch.cat(tok).split([len(row) for row in targets])])
