"""The engine where large models run: dispatched over a device map, in bfloat16, with SDPA, and
through out-of-memory errors; each against the plain algorithm on the same model."""

import json

import pytest
import torch

from circuitlab.circuits.heads import HeadMask
from circuitlab.locate import Engine, LocateConfig, PlainEvaluator, locate
from circuitlab.models import load_model
from tests.helpers import SAMPLES, close

pytestmark = pytest.mark.usefixtures("one_thread")
BASE, HEADS = HeadMask.of({0: [1], 1: [2, 5]}), [None, 0, 3, 7]
# Blocks 1 and 3 offloaded to disk: accelerate loads their weights when they run, so the engine must
# run them whole (their weights are on the meta device in between) and move hidden states along.
DEVICE_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu",
              "lm_head": "cpu"}


def test_a_model_dispatched_over_a_device_map_gives_the_plain_losses(tiny_gqa):
    dispatched = load_model("tiny-llama-gqa", device_map=json.dumps(DEVICE_MAP))
    assert dispatched.hf_model.hf_device_map["model.layers.1"] == "disk"
    assert dispatched.fingerprint() == tiny_gqa.fingerprint()  # offloaded weights read back
    plain = PlainEvaluator(tiny_gqa, SAMPLES).losses(2, BASE, HEADS)
    assert close(Engine(dispatched, SAMPLES, max_batch_tokens=40).losses(2, BASE, HEADS), plain)
    assert close(PlainEvaluator(dispatched, SAMPLES).losses(2, BASE, HEADS), plain)
    found = locate(dispatched, SAMPLES, LocateConfig(max_batch_tokens=40), progress=False)
    assert found.heads == locate(tiny_gqa, SAMPLES, LocateConfig(max_batch_tokens=40), progress=False).heads


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
def test_sdpa_masks_heads_as_the_bridges_eager_attention(name):
    """SDPA's masked losses equal eager's (the bridge's attention code, masks at hook_z)."""
    model = load_model(name)
    eager = PlainEvaluator(model, SAMPLES)
    sdpa = Engine(model, SAMPLES, max_batch_tokens=40, attention="sdpa")
    base = HeadMask.of({0: [1], 1: [2, 3]})  # heads every tiny model has
    assert close(sdpa.losses(2, base, [None, 0, 3]), eager.losses(2, base, [None, 0, 3]))
    sel = base.plus(2, [1])
    assert close(sdpa.curve(sel, [0, 1, 2, 3]), eager.curve(sel, [0, 1, 2, 3]))
    a = locate(model, SAMPLES, LocateConfig(attention="sdpa", max_batch_tokens=40), progress=False)
    assert a.heads == locate(model, SAMPLES, LocateConfig(plain=True), progress=False).heads


def test_bfloat16_engine_against_the_bfloat16_plain_algorithm():
    model = load_model("tiny-llama-gqa", dtype="bfloat16")
    assert next(model.hf_model.parameters()).dtype == torch.bfloat16
    fast = Engine(model, SAMPLES, max_batch_tokens=40).losses(2, BASE, HEADS)
    plain = PlainEvaluator(model, SAMPLES).losses(2, BASE, HEADS)
    assert close(fast, plain, rel=2e-2)  # bf16 keeps ~3 significant digits; packing changes its rounding
    assert close(fast, PlainEvaluator(load_model("tiny-llama-gqa"), SAMPLES).losses(2, BASE, HEADS), rel=2e-2)


def test_an_out_of_memory_error_halves_the_batch_and_gives_the_same_losses(tiny_gqa, monkeypatch):
    """Forwards above 40 tokens fail as a GPU out of memory would; the engine halves its batch
    (128 -> 64 -> 32) and gives the numbers an unhindered run gives."""
    from circuitlab.locate import blocks

    real = blocks.run_blocks

    def small_device(model, start, stop, hidden, *args, **kwargs):
        if hidden.shape[0] * hidden.shape[1] > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, start, stop, hidden, *args, **kwargs)

    want = Engine(tiny_gqa, SAMPLES, max_batch_tokens=32).losses(2, BASE, HEADS)
    monkeypatch.setattr(blocks, "run_blocks", small_device)
    engine = Engine(tiny_gqa, SAMPLES, max_batch_tokens=128)
    assert close(engine.losses(2, BASE, HEADS), want) and engine.max_batch_tokens == 32


def test_auto_tokens_per_forward_off_cuda_is_the_default(tiny):
    from circuitlab.locate.config import MAX_BATCH_TOKENS
    from circuitlab.locate.engine import batch_tokens

    assert batch_tokens(tiny, "auto", 17) == MAX_BATCH_TOKENS and batch_tokens(tiny, 100, 17) == 100
