"""The HF Trainer path against the bridge loop it replaced (`tests.finetune.reference`) and against the loss
computed by hand; its checkpoints as PEFT adapter directories; no TransformerLens on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from circuitlab.circuits.circuit import Circuit
from circuitlab.finetune import RunOptions, finetune
from circuitlab.models import load_plain
from circuitlab.finetune.data import encode_docs, epoch_order, n_targets, summed_loss
from circuitlab.finetune.heads import choose_heads
from circuitlab.finetune.trainer import train as trainer_train
from circuitlab.finetune.wrap import wrap
from circuitlab.headmap import register
from circuitlab.models import load_hf, load_model
from circuitlab.tasks import load_docs
from tests.finetune import reference
from tests.finetune.common import cfg, read_by, tiny_circuit
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method, micro", [("headmap-mha+lora", 2), ("headmap-hs+dora", None), ("lora", 1)])
def test_trainer_and_bridge_loop_give_the_same_loss_trajectory(tmp_path, method, micro):
    """fp32, the same docs in the same order (10 docs, batch 4: every epoch ends in a batch of 2), the same
    initial weights: the two paths agree step by step to ~1e-5."""
    bridged = load_model("tiny-llama")
    c = cfg(**read_by(method, tiny_circuit(bridged, tmp_path), lr_peft=3e-3), max_train=10, micro_batch_size=micro,
            epochs=2, warmup_steps=2, lr=1e-2)
    heads = choose_heads(Circuit.load(c.circuit), "circuit", None, 0) if c.variant else None
    docs = load_docs("capitals", "train", limit=10)
    old = reference.train(bridged, c, reference.build_adapters(bridged, c, heads), docs)
    plain = load_plain("tiny-llama")
    wrapped = wrap(plain, c, heads)
    new = trainer_train(plain, wrapped, c, encode_docs(plain.tokenizer, docs, c.max_len), [], tmp_path / "new",
                        progress=False)
    assert new["steps"] == old["steps"] == 6 and len(new["loss_curve"]) == 6
    assert max(abs(a - b) for a, b in zip(old["loss_curve"], new["loss_curve"])) < 1e-5, (old["loss_curve"],
                                                                                         new["loss_curve"])
    assert old["loss_curve"][-1] < old["loss_curve"][0] - 0.05  # it trained


def test_the_loss_is_the_whole_batch_token_mean(tmp_path):
    """Step 1's logged loss = sum of -log p over every predicted token of the 4 docs / their count, with the
    batch forwarded one doc at a time (4 micro-batches of different lengths)."""
    c = cfg(method="lora", max_train=4, micro_batch_size=1, epochs=1, warmup_steps=0)
    plain = load_plain("tiny-llama")
    seqs = encode_docs(plain.tokenizer, load_docs("capitals", "train", limit=4), c.max_len)
    assert len({len(s) for s in seqs}) > 1
    batch = [seqs[i] for i in epoch_order(4, c.seed, 0)]
    hf = load_hf("tiny-llama")[0]  # the same weights; LoRA's B starts at zero, so step 1 sees them
    with torch.no_grad():
        want = (sum(summed_loss(hf, [s], 0, "cpu") for s in batch) / n_targets(batch)).item()
    got = trainer_train(plain, wrap(plain, c, None), c, seqs, [], tmp_path / "ckpt", progress=False)["loss_curve"]
    assert got[0] == pytest.approx(want, abs=1e-6)


def test_save_every_keeps_peft_adapter_checkpoints(tmp_path):
    model = load_model("tiny-llama")
    c = cfg(method="headmap-mha+lora", heads="random", heads_per_layer=1, max_train=8, epochs=2)
    r = finetune(model, c, tmp_path / "run", progress=False, options=RunOptions(save_every=1))
    ckpts = sorted((tmp_path / "run" / "checkpoint").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in ckpts] == [f"checkpoint-{i}" for i in range(1, r.train.steps + 1)]
    first, last = (load_file(str(p / "adapter_model.safetensors")) for p in (ckpts[0], ckpts[-1]))
    assert first.keys() == last.keys() and any(not torch.equal(first[k], last[k]) for k in first)
    final = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(final[k], last[k]) for k in final)
    config = json.loads((ckpts[0] / "adapter_config.json").read_text())
    assert config["peft_type"] == "HEADMAP" and config["lora"]["target_modules"] == ["v_proj", "up_proj", "down_proj"]
    register()
    loaded = PeftModel.from_pretrained(load_hf("tiny-llama")[0], ckpts[0])  # another tool reads them so
    assert type(loaded.base_model).__name__ == "HeadMapTuner"


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    c = cfg(method="headmap-hs+lora", heads="random", heads_per_layer=1, max_train=8, epochs=1)
    curves = [finetune(load_plain("tiny-llama"), c, tmp_path / str(gc), progress=False,
                             options=RunOptions(gradient_checkpointing=gc)).train.loss_curve for gc in (False, True)]
    assert max(abs(a - b) for a, b in zip(*curves)) < 1e-5


def test_checkpointing_a_circuit_in_the_last_layer_runs_no_backward_below_it(tmp_path):
    """transformers' checkpointing makes the embeddings' output require a gradient, so the backward pass
    would run through every block; circuitlab removes that (non-reentrant checkpoints need none). Block 0
    then computes nothing that needs a gradient, and the losses are those of a run without checkpointing."""
    c = cfg(method="headmap-mha", circuit=tiny_circuit(load_model("tiny-llama"), tmp_path, {3: [0, 1]}),
            max_train=8, epochs=1)
    curves = []
    for gc in (False, True):
        plain = load_plain("tiny-llama")
        needs_grad = []
        plain.hf_model.model.layers[0].register_forward_hook(
            lambda m, i, out: needs_grad.append((out[0] if isinstance(out, tuple) else out).requires_grad)
            if torch.is_grad_enabled() else None)
        curves.append(finetune(plain, c, tmp_path / str(gc), progress=False,
                               options=RunOptions(gradient_checkpointing=gc)).train.loss_curve)
        assert needs_grad and not any(needs_grad)
    assert max(abs(a - b) for a, b in zip(*curves)) < 1e-6


def test_bf16_mixed_precision_on_the_cpu_autocasts_the_forward_and_keeps_fp32_weights(tmp_path):
    """--mixed-precision bf16 on the CPU: step 1's loss is the bf16-autocast forward's (computed here with
    torch.autocast), not the fp32 one, and the trained adapter stays fp32."""
    c = cfg(method="lora", max_train=4, micro_batch_size=4, epochs=1, warmup_steps=0, mixed_precision="bf16")
    plain = load_plain("tiny-llama")
    seqs = encode_docs(plain.tokenizer, load_docs("capitals", "train", limit=4), c.max_len)
    batch = [seqs[i] for i in epoch_order(4, c.seed, 0)]
    hf = load_hf("tiny-llama")[0]
    with torch.no_grad():
        fp32 = (summed_loss(hf, batch, 0, "cpu") / n_targets(batch)).item()
        with torch.autocast("cpu", torch.bfloat16):
            bf16 = (summed_loss(hf, batch, 0, "cpu") / n_targets(batch)).item()
    assert abs(bf16 - fp32) > 1e-4  # the two are distinguishable at this shape
    wrapped = wrap(plain, c, None)
    got = trainer_train(plain, wrapped, c, seqs, [], tmp_path / "ckpt", progress=False)["loss_curve"][0]
    assert got == pytest.approx(bf16, abs=1e-5)
    assert {p.dtype for p in wrapped.peft_model.parameters() if p.requires_grad} == {torch.float32}


def test_finetune_imports_no_transformer_lens(tmp_path):
    code = (
        "import sys\n"
        "from circuitlab.cli import main\n"
        f"rc = main(['finetune', '--model', 'tiny-llama', '--task', 'capitals', '--method', 'headmap-mha+lora', "
        f"'--heads', 'random', '--heads-per-layer', '1', '--rank', '4', '--max-train', '4', '--batch-size', '2', "
        f"'--epochs', '1', '--limit', '4', '--save-every', '1', '--out', {str(tmp_path / 'run')!r}])\n"
        "assert rc == 0, rc\n"
        "tl = sorted(m for m in sys.modules if m.startswith('transformer_lens'))\n"
        "assert not tl, tl\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    assert (tmp_path / "run" / "result.json").is_file()


def test_torchrun_trains_as_one_process_does(tmp_path):
    """Two gloo processes (each half of every batch; the token count summed over both) give one process's
    loss trajectory and metrics, and one of them writes and speaks."""
    common = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "lora", "--batch-size", "4",
              "--micro-batch-size", "2", "--max-train", "16", "--epochs", "1", "--warmup-steps", "1", "--limit", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(free_port()), "-m", "circuitlab"]
    two = subprocess.run(launcher + common + ["--out", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote") == 1
    one = subprocess.run([sys.executable, "-m", "circuitlab", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert a["train"]["loss_curve"] == pytest.approx(b["train"]["loss_curve"], rel=1e-5)
    assert a["eval"]["preds"] == b["eval"]["preds"]
