"""HeadMap adapter directories (`circuitlab.headmap.adapter`): PEFT's format and circuitlab's earlier one load
onto a freshly loaded plain Hugging Face model, only onto the weights they were trained on, without TransformerLens."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import save_file

from circuitlab.core.errors import CircuitlabError
from circuitlab.headmap import HeadMapConfig, base_info, check_base, load, maps, register
from circuitlab.models import load_model, tiny_model
from tests.helpers import IDS

HEADS = {0: [1, 3], 2: [0], 3: [2, 3]}
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")
register()


def trained(variant: str, name: str = "tiny-llama"):
    pm = get_peft_model(tiny_model(name)[0], HeadMapConfig(variant=variant, heads=HEADS, r=4, scaling=1.5))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in maps(pm).values():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pm.peft_config["default"].base_model = base_info(tiny_model(name)[0], name, name)
    return pm


def saved(tmp_path, variant: str) -> tuple[Path, torch.Tensor]:
    pm = trained(variant)
    with torch.no_grad():
        want = pm(input_ids=IDS).logits
    pm.save_pretrained(tmp_path / variant)
    return tmp_path / variant, want


def legacy(tmp_path, variant: str) -> tuple[Path, torch.Tensor]:
    """The same adapter in circuitlab's earlier format: headmap_config.json + adapter.safetensors."""
    pm = trained(variant)
    with torch.no_grad():
        want = pm(input_ids=IDS).logits
    c = pm.peft_config["default"]
    directory = tmp_path / f"legacy-{variant}"
    directory.mkdir()
    (directory / "headmap_config.json").write_text(json.dumps({
        "format": "circuitlab-headmap", "format_version": 1, "variant": variant, "rank": 4, "scaling": 1.5,
        "seed": 0, "heads": {str(k): v for k, v in HEADS.items()}, "base_model": c.base_model, "method": f"headmap-{variant}"}))
    save_file({f"layers.{la}.{k}": v.detach().contiguous() for la, m in maps(pm).items() for k, v in m.state_dict().items()},
              str(directory / "adapter.safetensors"))
    return directory, want


@pytest.mark.parametrize("variant", ["mha", "hs"])
@pytest.mark.parametrize("make", [saved, legacy])
def test_both_formats_load_onto_a_fresh_model(tmp_path, variant, make):
    directory, want = make(tmp_path, variant)
    with torch.no_grad():
        got = load(tiny_model("tiny-llama")[0], directory)(input_ids=IDS).logits
        base = tiny_model("tiny-llama")[0](IDS).logits
    assert (want - base).abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_other_base_models_are_refused(tmp_path):
    directory, _ = saved(tmp_path, "mha")
    gqa, _ = tiny_model("tiny-llama-gqa")
    with pytest.raises(CircuitlabError, match=r"trained on tiny-llama \(4 layers x 4 heads.*4 layers x 8 heads"):
        load(gqa, directory)
    reseeded, _ = tiny_model("tiny-llama", seed=1)  # same shapes, other weights
    with pytest.raises(CircuitlabError, match="weights differ"):
        load(reseeded, directory)
    load(reseeded, directory, check=False)  # an explicit opt-out still works
    nudged, _ = tiny_model("tiny-llama")
    with torch.no_grad():
        nudged.model.layers[3].mlp.down_proj.weight.mul_(1.001)  # a slightly fine-tuned fp32 copy
    with pytest.raises(CircuitlabError, match="layers.3.mlp.down_proj"):
        check_base(base_info(tiny_model("tiny-llama")[0]), nudged)


def test_a_bf16_copy_of_the_base_passes_the_check(tmp_path):
    directory, want = saved(tmp_path, "mha")
    pm = load(tiny_model("tiny-llama", dtype=torch.bfloat16)[0], directory)  # values agree to bf16 rounding
    with torch.no_grad():
        got = pm(input_ids=IDS).logits.float()
    assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.99


def test_bad_adapter_directories(tmp_path):
    plain, _ = tiny_model("tiny-llama")
    with pytest.raises(CircuitlabError, match="not found"):
        load(plain, tmp_path / "nothing")
    directory, _ = legacy(tmp_path, "mha")
    (directory / "adapter.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CircuitlabError, match="cannot read adapter weights"):
        load(plain, directory)
    (directory / "headmap_config.json").write_text("{")
    with pytest.raises(CircuitlabError, match="malformed HeadMap adapter config"):
        load(plain, directory)
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(CircuitlabError, match="holds a LORA adapter, not a HeadMap one"):
        load(plain, lora)


def test_circuit_heads_mean_the_same_heads_on_bridge_and_hf():
    """Zeroing head h in the bridge's hook_z equals zeroing o_proj's input columns h*d:(h+1)*d."""
    bridged = load_model("tiny-llama-gqa")
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


def test_loading_imports_no_transformer_lens(tmp_path):
    directory, _ = saved(tmp_path, "mha")
    code = (
        "import sys, torch; from circuitlab.headmap import load; from circuitlab.models import tiny_model\n"
        f"m = load(tiny_model('tiny-llama')[0], {str(directory)!r}); m(input_ids=torch.tensor([[1, 2, 3]]))\n"
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
