"""HeadMap's math against a hand-written forward pass of Eq. 7 and Eq. 8, on random tiny models."""

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from circuitlab.errors import CircuitlabError
from circuitlab.headmap import HeadMapConfig, HeadMapLayer, HeadMapModel
from circuitlab.models import load_model, tiny_model
from tests.helpers import IDS, randomize

HEADS = {0: [1, 3], 2: [0], 3: [2, 3]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-llama-gqa"])
def models(request):
    """The bridge, and a separately built plain HF copy with the same (seeded) weights."""
    bridged = load_model(request.param)
    plain, _ = tiny_model(request.param)
    return bridged, plain


def randomized(variant: str, hf_config, seed: int = 1) -> HeadMapModel:
    """An adapter whose Up is not zero, so it changes the output."""
    hm = HeadMapModel.for_model(HeadMapConfig(variant=variant, heads=HEADS, r=4, scaling=0.7, init_seed=seed), hf_config)
    return randomize(hm, seed, 0.5)


def direct_forward(hf, ids, hm: HeadMapModel | None = None):
    """A Llama forward written out by hand, adding Up(Down(z_sel)) where Eq. 7 or Eq. 8 says."""
    c = hf.config
    H, KV = c.num_attention_heads, c.num_key_value_heads
    d = c.hidden_size // H
    B, T = ids.shape
    x = hf.model.embed_tokens(ids)
    cos, sin = hf.model.rotary_emb(x, torch.arange(T)[None])
    causal = torch.full((T, T), -math.inf).triu(1)
    for layer, block in enumerate(hf.model.layers):
        attn = block.self_attn
        h = block.input_layernorm(x)
        q = (h @ attn.q_proj.weight.T).view(B, T, H, d).transpose(1, 2)
        k = (h @ attn.k_proj.weight.T).view(B, T, KV, d).transpose(1, 2)
        v = (h @ attn.v_proj.weight.T).view(B, T, KV, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        pattern = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + causal, dim=-1)
        z = (pattern @ v).transpose(1, 2)  # [B, T, H, d]: h^{l,1..H}
        a = z.reshape(B, T, H * d) @ attn.o_proj.weight.T
        extra = 0
        if hm is not None and str(layer) in hm.layers:
            m = hm.layers[str(layer)]
            z_sel = torch.cat([z[:, :, s] for s in hm.config.heads[layer]], dim=-1)  # [h^{l,s1},...,h^{l,sn}]
            extra = hm.config.scaling * ((z_sel @ m.down.weight.T + m.down.bias) @ m.up.weight.T + m.up.bias)
        if hm is not None and hm.config.variant == "mha":
            a = a + extra  # Eq. 8: inside A^l, so the MLP reads it
        x = x + a
        x = x + block.mlp(block.post_attention_layernorm(x))
        if hm is not None and hm.config.variant == "hs":
            x = x + extra  # Eq. 7: X^l = X^{l-1} + A^l + M^l + Up(Down(.))
    return hf.lm_head(hf.model.norm(x))


def test_direct_forward_matches_the_model(models):
    _, plain = models
    with torch.no_grad():
        torch.testing.assert_close(direct_forward(plain, IDS), plain(IDS).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_bridge_wiring_equals_the_equation(models, variant):
    bridged, plain = models
    hm = randomized(variant, plain.config)
    with torch.no_grad():
        want = direct_forward(plain, IDS, hm)
        base = plain(IDS).logits
        with hm.on_bridge(bridged.bridge):
            got = bridged.hf_model(IDS).logits
    assert (want - base).abs().max() > 1e-2  # the adapter matters, so the comparison means something
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_hf_wiring_equals_the_equation_and_detaches(models, variant):
    _, plain = models
    hm = randomized(variant, plain.config)
    with torch.no_grad():
        base = plain(IDS).logits
        want = direct_forward(plain, IDS, hm)
        hm.attach_hf(plain)
        try:
            got = plain(IDS).logits
        finally:
            hm.detach_hf()
        after = plain(IDS).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(after, base)


def test_variants_differ(models):
    """MHA's output goes through the MLP, HS's does not: same weights, different logits."""
    _, plain = models
    with torch.no_grad():
        mha = direct_forward(plain, IDS, randomized("mha", plain.config))
        hs = direct_forward(plain, IDS, randomized("hs", plain.config))
    assert (mha - hs).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_output_unchanged_at_step_zero(models, variant):
    """Up starts at zero: each wiring gives exactly (bitwise) what the same model gives without the
    adapter. Across the two code paths (bridge vs plain HF) only float tolerance is promised: a
    transformers release may order the same arithmetic differently in one of them."""
    bridged, plain = models
    hm = HeadMapModel.for_model(HeadMapConfig(variant=variant, heads=HEADS, r=8), plain.config)
    assert torch.count_nonzero(hm.layers["0"].down.weight) > 0  # Down random, Up zero
    with torch.no_grad():
        base_bridge = bridged.hf_model(IDS).logits
        with hm.on_bridge(bridged.bridge):
            got = bridged.hf_model(IDS).logits
        base_hf = plain(IDS).logits
        hm.attach_hf(plain)
        got_hf = plain(IDS).logits
        hm.detach_hf()
    assert torch.equal(got, base_bridge) and torch.equal(got_hf, base_hf)
    torch.testing.assert_close(got, got_hf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_only_adapter_parameters_get_gradients(variant):
    bridged = load_model("tiny-llama")
    for p in bridged.hf_model.parameters():
        p.requires_grad_(False)
    hm = HeadMapModel.for_model(HeadMapConfig(variant=variant, heads=HEADS, r=8), bridged.config)
    opt = torch.optim.SGD(hm.parameters(), lr=0.1)
    with hm.on_bridge(bridged.bridge):
        for _ in range(2):  # after one step Up != 0, so Down gets a gradient too
            opt.zero_grad()
            bridged.hf_model(IDS, labels=IDS).loss.backward()
            opt.step()
    assert all(p.grad is None for p in bridged.hf_model.parameters())
    for name, p in hm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layer_selects_heads_in_order():
    layer = HeadMapLayer([2, 0], d_head=3, d_model=5, rank=2)
    z = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)  # [pos, head, d_head]
    torch.testing.assert_close(layer.select(z), torch.cat([z[:, 2], z[:, 0]], dim=-1))
    assert layer.down.in_features == 6 and layer.up.out_features == 5
    assert torch.count_nonzero(layer.up.weight) == 0 and torch.count_nonzero(layer.up.bias) == 0
    assert set(layer.state_dict()) == {"down.weight", "down.bias", "up.weight", "up.bias"}


def test_parameter_count_matches_the_paper():
    """(n * d_head + 1) * r + (r + 1) * d per layer (paper, Section 5.3)."""
    plain, _ = tiny_model("tiny-llama")
    hm = HeadMapModel.for_model(HeadMapConfig(variant="mha", heads=HEADS, r=8), plain.config)
    d_head, d = 16, 64
    assert hm.n_parameters() == sum((len(h) * d_head + 1) * 8 + (8 + 1) * d for h in HEADS.values())


def test_seeded_initialisation():
    plain, _ = tiny_model("tiny-llama")
    a, b, c = (HeadMapModel.for_model(HeadMapConfig(variant="mha", heads=HEADS, init_seed=s), plain.config) for s in (0, 0, 1))
    assert torch.equal(a.layers["0"].down.weight, b.layers["0"].down.weight)
    assert not torch.equal(a.layers["0"].down.weight, c.layers["0"].down.weight)


def test_bad_configs_are_refused():  # noqa: D103
    plain, _ = tiny_model("tiny-llama")
    with pytest.raises(CircuitlabError, match="variant"):
        HeadMapConfig(variant="mlp", heads=HEADS)
    with pytest.raises(CircuitlabError, match="at least one head"):
        HeadMapConfig(variant="mha", heads={})
    with pytest.raises(CircuitlabError, match="out of range"):
        HeadMapModel.for_model(HeadMapConfig(variant="mha", heads={0: [4]}), plain.config)
    with pytest.raises(CircuitlabError, match="out of range"):
        HeadMapModel.for_model(HeadMapConfig(variant="mha", heads={9: [0]}), plain.config)
    assert HeadMapConfig.from_dict(HeadMapConfig(variant="hs", heads=HEADS, r=4, scaling=2.0, init_seed=3).to_dict()) == HeadMapConfig(variant="hs", heads=HEADS, r=4, scaling=2.0, init_seed=3)


def test_wiring_twice_is_refused(models):
    bridged, plain = models
    hm = randomized("mha", plain.config)
    hm.attach_hf(plain)
    try:
        with pytest.raises(CircuitlabError, match="already wired"):
            with hm.on_bridge(bridged.bridge):
                pass
    finally:
        hm.detach_hf()
