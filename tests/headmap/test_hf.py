"""`circuitlab.headmap.hf`: HeadMap on a freshly loaded plain Hugging Face model, without TransformerLens."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuitlab.errors import CircuitlabError
from circuitlab.headmap import HeadMapConfig, HeadMapModel
from circuitlab.headmap import attach, attached, base_info, check_base, detach, load_adapter, save_adapter
from circuitlab.models import load_model, tiny_model
from tests.helpers import IDS, randomize

HEADS = {0: [1, 3], 2: [0], 3: [2, 3]}
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like(variant: str, hf_config, heads=HEADS, seed: int = 3) -> HeadMapModel:
    return randomize(HeadMapModel.for_model(HeadMapConfig(variant=variant, heads=heads, r=4, scaling=1.5), hf_config), seed)


_BRIDGES = {}


def bridge(name: str):
    """One bridge per tiny model for this module (HeadMap's bridge wiring leaves it unchanged)."""
    if name not in _BRIDGES:
        _BRIDGES[name] = load_model(name)
    return _BRIDGES[name]


def exported(tmp_path, name: str, variant: str) -> Path:
    """An adapter directory written from the bridge side, as `circuitlab finetune` writes it."""
    bridged = bridge(name)
    hm = trained_like(variant, bridged.config)
    return save_adapter(hm, tmp_path / f"{name}-{variant}", base_info(bridged.hf_model, name, name, bridged.fingerprint()))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
@pytest.mark.parametrize("variant", ["mha", "hs"])
def test_attach_on_plain_model_equals_bridge(tmp_path, name, variant):
    directory = exported(tmp_path, name, variant)
    bridged = bridge(name)
    hm_bridge, _ = load_adapter(directory)
    plain, _ = tiny_model(name)  # a fresh model, never seen by a bridge
    with torch.no_grad():
        before = plain(IDS).logits
        with hm_bridge.on_bridge(bridged.bridge):
            want = bridged.hf_model(IDS).logits
        hm = attach(plain, directory)
        assert attached(plain) is hm
        got = plain(IDS).logits
        assert detach(plain) is hm and attached(plain) is None
        after = plain(IDS).logits
    assert (want - before).abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert torch.equal(after, before)
    assert set(plain.state_dict()) == set(tiny_model(name)[0].state_dict())  # nothing registered on the model


def test_attach_places_adapter_on_o_proj_dtype(tmp_path):
    directory = exported(tmp_path, "tiny-llama", "mha")
    plain, _ = tiny_model("tiny-llama", dtype=torch.bfloat16)
    ref, _ = tiny_model("tiny-llama")
    hm = attach(plain, directory)  # the bf16 model passes the weight check: values agree to bf16 rounding
    assert all(p.dtype == torch.bfloat16 for p in hm.parameters())
    with torch.no_grad():
        got = plain(IDS).logits.float()
        attach(ref, directory)
        want = ref(IDS).logits
    detach(plain), detach(ref)
    assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.99


def test_other_base_models_are_refused(tmp_path):
    directory = exported(tmp_path, "tiny-llama", "mha")
    gqa, _ = tiny_model("tiny-llama-gqa")
    with pytest.raises(CircuitlabError, match=r"trained on tiny-llama \(4 layers x 4 heads.*4 layers x 8 heads"):
        attach(gqa, directory)
    reseeded, _ = tiny_model("tiny-llama", seed=1)  # same shapes, other weights
    with pytest.raises(CircuitlabError, match="weights differ"):
        attach(reseeded, directory)
    assert attached(reseeded) is None
    attach(reseeded, directory, check=False)  # an explicit opt-out still works
    detach(reseeded)
    nudged, _ = tiny_model("tiny-llama")
    with torch.no_grad():
        nudged.model.layers[3].mlp.down_proj.weight.mul_(1.001)  # a slightly fine-tuned fp32 copy
    with pytest.raises(CircuitlabError, match="layers.3.mlp.down_proj"):
        check_base(base_info(tiny_model("tiny-llama")[0]), nudged)


def test_attach_twice_is_refused(tmp_path):
    directory = exported(tmp_path, "tiny-llama", "hs")
    plain, _ = tiny_model("tiny-llama")
    attach(plain, directory)
    with pytest.raises(CircuitlabError, match="already attached"):
        attach(plain, directory)
    detach(plain)
    assert detach(plain) is None


def test_bad_adapter_directories(tmp_path):
    plain, _ = tiny_model("tiny-llama")
    with pytest.raises(CircuitlabError, match="not found"):
        attach(plain, tmp_path / "nothing")
    directory = exported(tmp_path, "tiny-llama", "mha")
    (directory / "adapter.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CircuitlabError, match="cannot read adapter weights"):
        attach(plain, directory)
    (directory / "headmap_config.json").write_text("{")
    with pytest.raises(CircuitlabError, match="malformed HeadMap adapter config"):
        attach(plain, directory)


def test_circuit_heads_mean_the_same_heads_on_bridge_and_hf():
    """Zeroing head h in the bridge's hook_z equals zeroing o_proj's input columns h*d:(h+1)*d."""
    bridged = bridge("tiny-llama-gqa")
    plain, _ = tiny_model("tiny-llama-gqa")
    d = bridged.d_head
    layer, head = 2, 5

    def zero_z(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    def zero_cols(module, args):
        x = args[0].clone()
        x[..., head * d : (head + 1) * d] = 0
        return (x,)

    with torch.no_grad():
        with bridged.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_z)]):
            want = bridged.hf_model(IDS).logits
        handle = plain.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero_cols)
        got = plain(IDS).logits
        handle.remove()
        assert (got - plain(IDS).logits).abs().max() > 1e-4
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_hf_module_does_not_import_transformer_lens(tmp_path):
    directory = exported(tmp_path, "tiny-llama", "mha")
    code = (
        "import sys, torch; import circuitlab.headmap as hf; from circuitlab.models import tiny_model\n"
        f"m, _ = tiny_model('tiny-llama'); hf.attach(m, {str(directory)!r}); m(torch.tensor([[1, 2, 3]]))\n"
        "assert not any(k.startswith('transformer_lens') for k in sys.modules), 'transformer_lens imported'\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_gpu_check_exits_cleanly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would really run")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--adapter", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no CUDA device" in out.stdout
