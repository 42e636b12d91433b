"""HeadMap's math against a hand-written forward pass of Eq. 7 and Eq. 8, on random tiny models: the three ways of
running an adapter (PEFT's layers on the plain HF model, a TransformerBridge over that model, the MHA variant
merged into o_proj) all equal it."""

import math

import pytest
import torch
from peft import get_peft_model
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from circuitlab.core.errors import CircuitlabError
from circuitlab.headmap import HeadMapConfig, HeadMapLayer, maps, register
from circuitlab.models import bridge_hf, tiny_model
from circuitlab.models.identity import count_params
from tests.helpers import IDS

HEADS = {0: [1, 3], 2: [0], 3: [2, 3]}
NAMES = ["tiny-llama", "tiny-llama-gqa"]

pytestmark = pytest.mark.usefixtures("one_thread")
register()


def randomized(name: str, variant: str, seed: int = 1):
    """A fresh plain model with a HeadMap adapter whose maps are random (Up not zero: it changes the output)."""
    pm = get_peft_model(tiny_model(name)[0], HeadMapConfig(variant=variant, heads=HEADS, r=4, scaling=0.7,
                                                           init_seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in maps(pm).values():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return pm.eval()


def direct_forward(hf, ids, pm=None):
    """A Llama forward written out by hand, adding s Up(Down(z_sel)) where Eq. 7 or Eq. 8 says (the maps and
    their config read from the PEFT model `pm`)."""
    config = pm.peft_config["default"] if pm is not None else None
    trained = maps(pm) if pm is not None else {}
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
        if layer in trained:
            m = trained[layer]
            z_sel = torch.cat([z[:, :, s] for s in config.heads[layer]], dim=-1)  # [h^{l,s1},...,h^{l,sn}]
            extra = config.scaling * ((z_sel @ m.down.weight.T + m.down.bias) @ m.up.weight.T + m.up.bias)
        if config is not None and config.variant == "mha":
            a = a + extra  # Eq. 8: inside A^l, so the MLP reads it
        x = x + a
        x = x + block.mlp(block.post_attention_layernorm(x))
        if config is not None and config.variant == "hs":
            x = x + extra  # Eq. 7: X^l = X^{l-1} + A^l + M^l + Up(Down(.))
    return hf.lm_head(hf.model.norm(x))


@pytest.mark.parametrize("name", NAMES)
def test_direct_forward_matches_the_model(name):
    plain, _ = tiny_model(name)
    with torch.no_grad():
        torch.testing.assert_close(direct_forward(plain, IDS), plain(IDS).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_peft_layers_and_the_bridge_over_them_equal_the_equation(name, variant):
    pm = randomized(name, variant)
    plain, tok = tiny_model(name)
    with torch.no_grad():
        want = direct_forward(plain, IDS, pm)
        base = plain(IDS).logits
        got = pm(input_ids=IDS).logits
        bridged = bridge_hf(name, pm.get_base_model(), tok)  # the bridge wraps HeadMap's layers and runs them
        seen = []
        with bridged.bridge.hooks(fwd_hooks=[(f"blocks.0.attn.hook_z", lambda z, hook: seen.append(z) or z)]):
            through_bridge = bridged.hf_model(IDS).logits
    assert (want - base).abs().max() > 1e-2  # the adapter matters, so the comparison means something
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(through_bridge, want, atol=1e-4, rtol=1e-4)
    assert seen and seen[0].shape[-2] == plain.config.num_attention_heads  # the bridge's hook points still fire


@pytest.mark.parametrize("name", NAMES)
def test_the_mha_variant_merged_into_o_proj_equals_the_equation(name):
    pm = randomized(name, "mha")
    plain, _ = tiny_model(name)
    with torch.no_grad():
        want = direct_forward(plain, IDS, pm)
        merged = pm.merge_and_unload()
        torch.testing.assert_close(merged(IDS).logits, want, atol=1e-4, rtol=1e-4)


def test_variants_differ():
    """MHA's output goes through the MLP, HS's does not: same weights, different logits."""
    plain, _ = tiny_model("tiny-llama")
    with torch.no_grad():
        mha = direct_forward(plain, IDS, randomized("tiny-llama", "mha"))
        hs = direct_forward(plain, IDS, randomized("tiny-llama", "hs"))
    assert (mha - hs).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_output_unchanged_at_step_zero(variant):
    """Up starts at zero: the adapted model gives exactly (bitwise) what the model gives without it."""
    pm = get_peft_model(tiny_model("tiny-llama")[0], HeadMapConfig(variant=variant, heads=HEADS, r=8))
    assert torch.count_nonzero(maps(pm)[0].down.weight) > 0  # Down random, Up zero
    with torch.no_grad():
        assert torch.equal(pm(input_ids=IDS).logits, tiny_model("tiny-llama")[0](IDS).logits)


@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_only_adapter_parameters_get_gradients(variant):
    pm = get_peft_model(tiny_model("tiny-llama")[0], HeadMapConfig(variant=variant, heads=HEADS, r=8))
    trained = [p for m in maps(pm).values() for p in m.parameters()]
    opt = torch.optim.SGD(trained, lr=0.1)
    for _ in range(2):  # after one step Up != 0, so Down gets a gradient too
        opt.zero_grad()
        pm(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
    ids = {id(p) for p in trained}
    assert all(p.grad is None for p in pm.parameters() if id(p) not in ids)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)


def test_layer_selects_heads_in_order():
    layer = HeadMapLayer([2, 0], d_head=3, d_model=5, rank=2)
    z = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)  # [pos, head, d_head]
    torch.testing.assert_close(layer.select(z), torch.cat([z[:, 2], z[:, 0]], dim=-1))
    assert layer.down.in_features == 6 and layer.up.out_features == 5
    assert torch.count_nonzero(layer.up.weight) == 0 and torch.count_nonzero(layer.up.bias) == 0
    assert set(layer.state_dict()) == {"down.weight", "down.bias", "up.weight", "up.bias"}


def test_parameter_count_matches_the_paper():
    """(n * d_head + 1) * r + (r + 1) * d per layer (paper, Section 5.3)."""
    pm = get_peft_model(tiny_model("tiny-llama")[0], HeadMapConfig(variant="mha", heads=HEADS, r=8))
    d_head, d = 16, 64
    assert count_params(p for p in pm.parameters() if p.requires_grad) == sum(
        (len(h) * d_head + 1) * 8 + (8 + 1) * d for h in HEADS.values())


def test_seeded_initialisation():
    a, b, c = (maps(get_peft_model(tiny_model("tiny-llama")[0], HeadMapConfig(variant="mha", heads=HEADS,
                                                                               init_seed=s)))[0] for s in (0, 0, 1))
    assert torch.equal(a.down.weight, b.down.weight) and not torch.equal(a.down.weight, c.down.weight)


def test_bad_configs_are_refused():  # noqa: D103
    with pytest.raises(CircuitlabError, match="variant"):
        HeadMapConfig(variant="mlp", heads=HEADS)
    with pytest.raises(CircuitlabError, match="at least one head"):
        HeadMapConfig(variant="mha", heads={})
    for heads in ({0: [4]}, {9: [0]}):
        with pytest.raises(CircuitlabError, match="out of range"):
            get_peft_model(tiny_model("tiny-llama")[0], HeadMapConfig(variant="mha", heads=heads))
    config = HeadMapConfig(variant="hs", heads=HEADS, r=4, scaling=2.0, init_seed=3)
    assert HeadMapConfig.from_dict(config.to_dict()) == config
