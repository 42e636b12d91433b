"""What each method adds to the model: parameter counts from the config's dimensions (the training path, `wrap`,
and the reference loop's bridge wiring alike), PEFT layers on the right modules, one learning rate per part."""

import pytest
import torch

from circuitlab.finetune.wrap import param_groups, wrap
from circuitlab.models import load_model, load_plain
from tests.finetune import reference
from tests.finetune.common import HEADS, cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def lora_count(model, names, r, dora=False) -> int:
    """r * (in + out) per targeted Linear, plus DoRA's magnitude vector (out) — from the config dims."""
    d, f = model.d_model, model.config.intermediate_size
    q, kv = model.n_heads * model.d_head, model.n_kv_heads * model.d_head
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "up_proj": (d, f), "down_proj": (f, d)}
    per_layer = sum(r * (shapes[n][0] + shapes[n][1]) + (shapes[n][1] if dora else 0) for n in names)
    return per_layer * model.n_layers


def headmap_count(model, heads, r) -> int:
    return sum((len(h) * model.d_head + 1) * r + (r + 1) * model.d_model for h in heads.values())


ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
VUD = ("v_proj", "up_proj", "down_proj")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
@pytest.mark.parametrize("method", ["lora", "dora", "headmap-mha", "headmap-hs+lora", "headmap-mha+dora"])
def test_methods_build_with_expected_parameter_counts(name, method):
    c = cfg(model=name, method=method, rank=8)
    heads = HEADS if c.variant else None
    plain = load_plain(name)
    base = sum(p.numel() for p in plain.hf_model.parameters())
    want = headmap_count(plain, HEADS, 8) if c.variant else 0
    if c.tuner:
        want += lora_count(plain, VUD if c.variant else ALL, 8, dora=c.tuner == "dora")
    wrapped = wrap(plain, c, heads)
    assert wrapped.n_trainable == want and wrapped.base_params == base
    assert wrapped.share == pytest.approx(100 * want / base)
    if c.tuner:  # PEFT wrapped exactly the target Linear layers
        wrapped_names = {next(part for part in reversed(n.split(".")) if part in ALL)
                         for n, _ in wrapped.peft_model.named_modules() if n.endswith("lora_A")}
        assert wrapped_names == set(VUD if c.variant else ALL)
    groups = param_groups(wrapped.peft_model, c)
    assert [g["lr"] for g in groups] == ([c.headmap_lr] if c.variant else []) + ([c.peft_lr] if c.tuner else [])
    bridged = load_model(name)  # the reference loop's wiring over the bridge trains the same parameters
    ref = reference.build_adapters(bridged, c, heads)
    assert ref.n_trainable == want and ref.base_params == base
    if c.tuner:  # inside the bridge's wrappers, on the real Linear layers
        inner = {n.split("._original_component")[-2].rsplit(".", 1)[-1]
                 for n, _ in bridged.hf_model.named_modules() if n.endswith("lora_A")}
        assert inner == set(VUD if c.variant else ALL)


def test_peft_layers_change_the_bridge_output_once_trained():
    model = load_model("tiny-llama")
    ids = torch.tensor([[3, 7, 11, 13, 17]])
    with torch.no_grad():
        before = model.hf_model(ids).logits
    adapters = reference.build_adapters(model, cfg(method="lora"), None)
    with torch.no_grad():
        assert torch.equal(model.hf_model(ids).logits, before)  # LoRA B starts at zero
        for n, p in model.hf_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
        captured = []
        with model.bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: captured.append(z) or z)]):
            after = model.hf_model(ids).logits
    assert captured and (after - before).abs().max() > 1e-3
    assert adapters.n_trainable > 0


def test_an_adapter_in_a_block_offloaded_to_disk_is_refused_in_one_line():
    """accelerate empties a disk-offloaded block after every forward and reloads it from a copy without the
    adapter: training there cannot work, so `wrap` names the blocks; blocks kept in memory train."""
    from circuitlab.core.errors import CircuitlabError

    on_disk = load_plain("tiny-llama", None, device_map="sequential", max_memory="cpu=13MB")
    assert on_disk.hf_model.hf_device_map["model.layers.2"] == "disk"
    with pytest.raises(CircuitlabError, match=r"offloads model\.layers\.2 to disk"):
        wrap(on_disk, cfg(model="tiny-llama", method="headmap-mha", rank=4), {0: [1], 2: [0, 3]})
    kept = load_plain("tiny-llama", None, device_map='{"model.embed_tokens": "cpu", "model.layers.0": "cpu", '
                      '"model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "disk", '
                      '"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}')
    wrapped = wrap(kept, cfg(model="tiny-llama", method="headmap-mha", rank=4), {0: [1], 2: [0, 3]})
    assert all(p.device.type == "cpu" for p in wrapped.peft_model.parameters() if p.requires_grad)
