"""`--protocol official` in training, each point against an independent computation: the held-out split
(datasets' own train_test_split), EOS-terminated texts (the tokenizer), Down's initialisation (Kaiming's
bound written out), gradient clipping (the gradient norm the optimizer sees), the best checkpoint restored
(the checkpoint files on disk); and every result records its protocol."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from circuitlab.core.errors import ConfigError
from circuitlab.finetune import RunOptions, TrainConfig, finetune
from circuitlab.models import load_plain
from circuitlab.finetune.data import encode_docs
from circuitlab.finetune.splits import held_out_split
from circuitlab.finetune.job import prepare
from circuitlab.finetune.trainer import train
from circuitlab.finetune.wrap import wrap
from circuitlab.headmap import HeadMapLinear
from circuitlab.tasks import get_task, load_docs
from tests.finetune.common import HEADS, cfg
from tests.helpers import one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def official(**kw) -> TrainConfig:
    return cfg(protocol="official", **kw)


# -- held-out data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, seed", [(30, 0), (64, 7), (101, 42), (7, 3)])
def test_held_out_split_is_datasets_train_test_split(n, seed):
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=0.1, seed=seed)
    train, held = held_out_split(n, seed)
    assert held == split["test"]["i"] and train == split["train"]["i"]
    assert len(held) == math.ceil(0.1 * n) and sorted(train + held) == list(range(n))


def test_official_trains_on_90_percent_and_holds_out_10(tmp_path):
    c = official(max_train=40, seed=3)
    inputs = prepare(c)
    docs = load_docs("capitals", "train", limit=40)
    held = sorted(held_out_split(40, 3)[1])
    assert [d.index for d in inputs.held_out_docs] == [docs[i].index for i in held] and len(held) == 4
    assert [d.index for d in inputs.train_docs] == [d.index for d in docs if d.index not in set(held)]
    paper = prepare(cfg(max_train=40))
    assert paper.held_out_docs == [] and len(paper.train_docs) == 40


@pytest.mark.parametrize("task", ["arc_easy", "sst2"])
def test_arc_holds_out_its_validation_split(data_dir, task):
    inputs = prepare(official(task=task, max_train=50), data_dir)
    if task == "arc_easy":
        assert inputs.held_out_docs == load_docs(get_task(task), "validation", data_dir)
        assert len(inputs.train_docs) == 50
    else:
        assert len(inputs.held_out_docs) == 5 and len(inputs.train_docs) == 45


# -- EOS ------------------------------------------------------------------------------------------


def test_official_training_texts_end_in_eos(tmp_path, monkeypatch):
    from circuitlab.finetune import data

    seen = []
    call = data.PadCollator.__call__
    monkeypatch.setattr(data.PadCollator, "__call__", lambda self, items: seen.extend(items) or call(self, items))
    plain = load_plain("tiny-llama")
    tok = plain.tokenizer
    finetune(plain, official(method="lora", max_train=10, epochs=1, eval_every=1), tmp_path / "run",
                   progress=False)
    docs = {tuple(tok(d.prompt + d.target).input_ids): d for d in load_docs("capitals", "train", limit=10)}
    assert len(seen) >= 10
    for item in seen:
        ids = item["input_ids"]
        assert ids[-1] == tok.eos_token_id and tuple(ids[:-1]) in docs  # the text's own tokens, then EOS
    docs = load_docs("capitals", "train", limit=3)
    assert all(s[-1] != tok.eos_token_id for s in encode_docs(tok, docs, 512))  # paper: none
    cut = encode_docs(tok, docs, 4, eos=True)
    assert all(len(s) == 4 and s == tok(d.prompt + d.target).input_ids[:4] for s, d in zip(cut, docs))  # no room


# -- Down's initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol, a", [("official", 0.0), ("paper", math.sqrt(5))])
def test_down_init_follows_the_protocol(tmp_path, protocol, a):
    plain = load_plain("tiny-llama-gqa")
    c = cfg(model="tiny-llama-gqa", protocol=protocol, rank=32)
    heads = {0: [0, 1, 2, 3, 4, 5, 6, 7]}
    pm = wrap(plain, c, heads).peft_model
    o_proj = pm.get_base_model().model.layers[0].self_attn.o_proj
    assert isinstance(o_proj, HeadMapLinear)
    down = o_proj.headmap_map["default"].down.weight
    fan_in = down.shape[1]
    bound = math.sqrt(6 / ((1 + a * a) * fan_in))  # kaiming_uniform_: gain sqrt(2 / (1 + a^2)) x sqrt(3 / fan_in)
    assert down.abs().max().item() <= bound
    assert down.abs().max().item() > 0.95 * bound  # 32 x fan_in draws fill the interval
    assert down.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    pm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["init_a"] == pytest.approx(a)


# -- gradient clipping -----------------------------------------------------------------------------


class GradNorms(TrainerCallback):
    """The gradient norm the optimizer steps with (after any clipping), computed from the gradients."""

    def __init__(self, model):
        self.model, self.norms = model, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        grads = [p.grad.float().norm() for p in self.model.parameters() if p.requires_grad and p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack(grads)).item())


@pytest.mark.parametrize("protocol", ["official", "paper"])
def test_gradients_are_clipped_at_1_under_official_only(tmp_path, protocol):
    plain = load_plain("tiny-llama")
    c = cfg(protocol=protocol, method="headmap-mha", scaling=50.0, max_train=8, epochs=1, warmup_steps=0,
            eval_every=1 if protocol == "official" else None)
    wrapped = wrap(plain, c, HEADS)
    seqs = encode_docs(plain.tokenizer, load_docs("capitals", "train", limit=8), c.max_len)
    seen = GradNorms(wrapped.peft_model)
    train(plain, wrapped, c, seqs, seqs[:2], tmp_path / "ckpt", progress=False, callbacks=[seen])
    state = json.loads((tmp_path / "ckpt" / "checkpoint-2" / "trainer_state.json").read_text())
    before = [h["grad_norm"] for h in state["log_history"] if "grad_norm" in h]  # Trainer logs it unclipped
    assert len(before) == len(seen.norms) == 2 and all(b > 1.2 for b in before)  # large: clipping has work
    for b, n in zip(before, seen.norms):
        assert n == pytest.approx(min(b, 1.0) if protocol == "official" else b, rel=1e-4)


# -- the best checkpoint ---------------------------------------------------------------------------


def test_the_checkpoint_with_the_lowest_held_out_loss_is_restored(tmp_path):
    c = official(method="headmap-mha", heads="random", heads_per_layer=2, max_train=20, epochs=3, lr=0.3,
                 batch_size=2, eval_every=2, warmup_steps=0)
    r = finetune(load_plain("tiny-llama"), c, tmp_path / "run", progress=False, options=RunOptions(save_every=2))
    curve = r.train.eval_curve
    assert [e["step"] for e in curve] == [*range(2, r.train.steps, 2), r.train.steps]  # and at the end
    best = min(curve, key=lambda e: e["loss"])["step"]
    assert r.train.best_step == best and best != r.train.steps, curve  # a later checkpoint was worse
    restored = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    kept = load_file(str(tmp_path / "run" / "checkpoint" / f"checkpoint-{best}" / "adapter_model.safetensors"))
    last = load_file(str(tmp_path / "run" / "checkpoint" / f"checkpoint-{r.train.steps}" / "adapter_model.safetensors"))
    assert restored.keys() == kept.keys() and all(torch.equal(restored[k], kept[k]) for k in kept)
    assert any(not torch.equal(restored[k], last[k]) for k in kept)
    assert r.train.n_held_out == 2 and r.protocol == "official"


# -- recorded, and refused -------------------------------------------------------------------------


def test_results_record_their_protocol_and_bad_settings_are_refused(tmp_path):
    r = finetune(load_plain("tiny-llama"), cfg(method="base", max_train=None), tmp_path / "base", progress=False)
    saved = json.loads((tmp_path / "base" / "result.json").read_text())
    assert r.protocol == saved["protocol"] == saved["config"]["protocol"] == "paper"
    with pytest.raises(ConfigError, match="protocol"):
        cfg(protocol="unofficial")
    with pytest.raises(ConfigError, match="held-out"):
        cfg(eval_every=10)


@pytest.mark.parametrize("extra, match", [
    (["--protocol", "unofficial"], "--protocol: invalid choice: 'unofficial'"),
    (["--eval-every", "5"], "--eval-every needs held-out data"),
    (["--protocol", "official", "--eval-every", "4", "--save-every", "6"], "--save-every 6 must be a multiple"),
    (["--mixed-precision", "fp16", "--device", "cpu"], "--mixed-precision fp16 needs a CUDA device"),
])
def test_cli_bad_protocol_settings_are_one_line_and_write_nothing(tmp_path, capsys, extra, match):
    argv = ["finetune", "--model", "tiny-llama", "--task", "capitals", "--method", "lora", "--out",
            str(tmp_path / "run"), *extra]
    one_line_error(capsys, argv, match)
    assert not (tmp_path / "run").exists()
