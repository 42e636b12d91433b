"""A GQA model written as multi-head attention computes what it computed before."""

import torch

from circuitlab.models import load_hf
from circuitlab.models.ungroup import ungroup_kv_heads


def test_the_multi_head_equivalent_gives_the_same_logits():
    grouped, tok = load_hf("tiny-llama-gqa")
    ungrouped, _ = load_hf("tiny-llama-gqa")
    ungroup_kv_heads(ungrouped)
    ids = tok(["What is the capital of France? Answer: Paris", "12 + 5 = 17"], padding=True, return_tensors="pt")
    attn = ungrouped.model.layers[1].self_attn
    assert ungrouped.config.num_key_value_heads == 8 and attn.k_proj.out_features == 8 * attn.head_dim
    assert attn.num_key_value_groups == 1
    with torch.no_grad():
        want, got = grouped(**ids).logits, ungrouped(**ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    # head 5 reads group 1 (4 heads per group): its k rows are group 1's
    d = attn.head_dim
    assert torch.equal(attn.k_proj.weight[5 * d:6 * d], grouped.model.layers[1].self_attn.k_proj.weight[d:2 * d])
