"""hook_z masking: a masked query head writes nothing, checked against W_O computed by hand."""

import pytest
import torch

from circuitlab.circuits.heads import HeadMask
from circuitlab.locate.masking import hook_z_name, keep_matrix, mask_hooks, masked_logits, zero_heads_hook
from circuitlab.evaluate.scoring import pad_batch


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(model, texts):
    return pad_batch([model.tokenizer(t).input_ids for t in texts], model.tokenizer.pad_token_id)


def attn_out_and_z(model, ids, attn, layer, mask):
    got = {}

    def keep(name):
        def hook(t, hook=None):
            got[name] = t.detach().clone()
            return t

        return hook

    hooks = mask_hooks(mask, model.n_heads) + [
        (hook_z_name(layer), keep("z")), (f"blocks.{layer}.hook_attn_out", keep("out"))]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.hf_model(input_ids=ids, attention_mask=attn, use_cache=False)
    return got["out"], got["z"]


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gqa"])
def test_masking_a_query_head_removes_exactly_its_w_o_term(request, fixture):
    model = request.getfixturevalue(fixture)
    ids, attn = batch(model, ["The capital of France is Paris", "Hello"])
    layer, head, d = 1, 1, model.d_head
    full, z = attn_out_and_z(model, ids, attn, layer, HeadMask())
    assert z.shape[2] == model.n_heads  # query heads, also under GQA
    masked, z_masked = attn_out_and_z(model, ids, attn, layer, HeadMask.of({layer: [head]}))
    assert torch.all(z_masked[:, :, head] == 0)
    w_o = model.hf_model.model.layers[layer].self_attn.o_proj.weight  # [d_model, H * d_head]
    term = z[:, :, head] @ w_o[:, head * d : (head + 1) * d].T
    torch.testing.assert_close(full - masked, term, rtol=1e-4, atol=1e-5)
    # Other heads' z are untouched (masking is after the attention of this layer).
    others = [h for h in range(model.n_heads) if h != head]
    torch.testing.assert_close(z_masked[:, :, others], z[:, :, others])


def test_masking_all_heads_silences_attention(tiny_gqa):
    ids, attn = batch(tiny_gqa, ["one two three"])
    out, _ = attn_out_and_z(tiny_gqa, ids, attn, 2, HeadMask.of({2: range(tiny_gqa.n_heads)}))
    assert torch.all(out == 0)


def test_gqa_query_heads_sharing_a_kv_head_mask_separately(tiny_gqa):
    ids, attn = batch(tiny_gqa, ["a b c d e"])
    with torch.no_grad():
        h0 = masked_logits(tiny_gqa, ids, attn, HeadMask.of({0: [0]}))
        h1 = masked_logits(tiny_gqa, ids, attn, HeadMask.of({0: [1]}))  # same KV group as head 0
        both = masked_logits(tiny_gqa, ids, attn, HeadMask.of({0: [0, 1]}))
    assert not torch.allclose(h0, h1)
    assert not torch.allclose(both, h0)


def test_per_row_keep_masks_each_sequence_on_its_own(tiny):
    ids, attn = batch(tiny, ["the same text here"] * 3)
    keep = keep_matrix([(), (2,), (0, 3)], tiny.n_heads)
    with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=[(hook_z_name(1), zero_heads_hook(keep))]):
        rows = tiny.hf_model(input_ids=ids, attention_mask=attn, use_cache=False).logits
    with torch.no_grad():
        for row, heads in enumerate([(), (2,), (0, 3)]):
            alone = masked_logits(tiny, ids[:1], attn[:1], HeadMask.of({1: heads}))
            torch.testing.assert_close(rows[row], alone[0], rtol=1e-5, atol=1e-5)
