"""A grouped-query-attention model as the equivalent multi-head one, for edge graphs with one k and one v
reader per query head.

Under GQA the query heads of a KV group share one k and one v projection. TransformerLens 4 splits the k/v
inputs per group; the EAP-IG library (TransformerLens 2.x, `ungroup_grouped_query_attention=True`) gives every
query head its own copy of them, so its graph has a k and a v reader per query head. The same graph comes
from the same function written as multi-head attention: each group's k and v projections repeated for every
query head that reads them (what Hugging Face's `repeat_kv` does to the activations). The model computes
exactly what it computed before; only the k/v inputs are now per query head.
"""

from __future__ import annotations

import torch
from einops import repeat

from circuitlab.core.errors import CircuitlabError
from circuitlab.models.placement import blocks_on_disk


def ungroup_kv_heads(hf_model) -> None:
    """Turn a Llama-family HF model (not yet bridged) into its multi-head equivalent, in place: every
    layer's k_proj/v_proj rows repeated per query head of their group, and the config's KV heads = heads."""
    cfg = hf_model.config
    per = cfg.num_attention_heads // cfg.num_key_value_heads
    if per == 1:
        return
    on_disk = blocks_on_disk(hf_model.named_parameters())
    if on_disk:  # their weights exist only while each block runs
        raise CircuitlabError(f"the device map offloads {', '.join(on_disk)} to disk: their KV heads cannot be "
                              f"ungrouped; raise --max-memory")
    for layer in hf_model.model.layers:
        attn = layer.self_attn
        for name in ("k_proj", "v_proj"):
            old = getattr(attn, name)
            new = torch.nn.Linear(old.in_features, old.out_features * per, bias=old.bias is not None,
                                  device=old.weight.device, dtype=old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(repeat(old.weight, "(g d) i -> (g r d) i", g=cfg.num_key_value_heads, r=per))
                if old.bias is not None:
                    new.bias.copy_(repeat(old.bias, "(g d) -> (g r d)", g=cfg.num_key_value_heads, r=per))
            setattr(attn, name, new)
        attn.num_key_value_groups = 1
    cfg.num_key_value_heads = cfg.num_attention_heads
