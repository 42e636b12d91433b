import pytest
import torch

from circuitlab.core.errors import CircuitlabError
from circuitlab.models import load_model, weight_fingerprint


def test_tiny_models_are_seeded_and_shaped():
    a, b = load_model("tiny-llama"), load_model("tiny-llama")
    assert a.fingerprint() == b.fingerprint()
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.d_head) == (4, 4, 4, 16)
    gqa = load_model("tiny-llama-gqa")
    assert (gqa.n_layers, gqa.n_heads, gqa.n_kv_heads, gqa.d_head) == (4, 8, 2, 8)
    assert gqa.fingerprint() != a.fingerprint()


def test_bridge_hooks_fire_on_the_plain_hf_forward():
    """The bridge patches the HF modules in place: the engine and adapters rely on this."""
    m = load_model("tiny-llama")
    ids = m.tokenizer("hello world", return_tensors="pt").input_ids
    seen = []
    with m.bridge.hooks(fwd_hooks=[("blocks.2.attn.hook_z", lambda z, hook: seen.append(z.shape))]):
        m.hf_model(ids)
    assert seen == [torch.Size([1, ids.shape[1], m.n_heads, m.d_head])]


def test_fingerprint_changes_with_weights():
    m = load_model("tiny-llama")
    before = weight_fingerprint(m.hf_model)
    with torch.no_grad():
        m.hf_model.model.layers[0].self_attn.o_proj.weight[0, 0] += 1.0
    assert weight_fingerprint(m.hf_model) != before


@pytest.mark.smollm2
def test_embedded_model_loads_offline_and_answers_the_embedded_task(smollm2):
    from circuitlab.evaluate.scoring import score_docs
    from circuitlab.tasks import load_docs

    assert (smollm2.n_layers, smollm2.n_heads, smollm2.n_kv_heads) == (30, 9, 3)
    docs = [d for d in load_docs("capitals", "train") if "France?" in d.prompt]
    (score,) = score_docs(smollm2, docs, progress=False)
    assert docs[0].choices[score.pred] == " Paris"


@pytest.mark.parametrize("name", ["no-such-model", "llama2-7b", "./no/such/dir"])
def test_unknown_or_unreachable_model_is_one_line(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CircuitlabError) as e:
        load_model(name)
    assert "\n" not in str(e.value)


def test_a_local_directory_is_recorded_by_its_name_not_its_path(tmp_path):
    """Artefacts record a model by name and fingerprint; a machine path means nothing elsewhere."""
    from circuitlab.circuits.circuit import ModelInfo
    from circuitlab.finetune.wrap import adapter_base
    from circuitlab.models.plain import load_plain

    plain = load_plain("tiny-llama")
    folder = tmp_path / "my-llama"
    plain.hf_model.save_pretrained(folder)
    plain.tokenizer.save_pretrained(folder)
    m = load_model(str(folder))
    assert m.fingerprint() == load_model("tiny-llama").fingerprint()
    recorded = [ModelInfo.of(m).name, ModelInfo.of(m).hf_id, m.hf_model.name_or_path,
                adapter_base(m, m.fingerprint())["name"], load_plain(str(folder)).hf_id]
    assert recorded == ["my-llama"] * 5
    assert str(tmp_path) not in repr(ModelInfo.of(m))
