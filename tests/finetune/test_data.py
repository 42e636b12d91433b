"""Training texts: answer-only loss and the newline separator (CircuitLoRA's code), against hand computations."""

import pytest
import torch

from circuitlab.core.errors import ConfigError
from circuitlab.finetune.data import PadCollator, TokenDataset, encode_docs
from circuitlab.finetune.job import prepare
from circuitlab.finetune.trainer import train as trainer_train
from circuitlab.finetune.wrap import wrap
from circuitlab.models import load_hf, load_plain
from circuitlab.tasks import load_docs
from tests.finetune.common import cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_answer_only_labels_leave_out_exactly_the_prompt_tokens():
    tok = load_plain("tiny-llama").tokenizer
    docs = load_docs("capitals", "train", limit=3)
    seqs = encode_docs(tok, docs, 512, answer_only=True)
    batch = PadCollator(tok.pad_token_id)([TokenDataset(seqs)[i] for i in range(3)])
    for row, d in enumerate(docs):
        full, prompt = tok(d.prompt + d.target).input_ids, tok(d.prompt).input_ids
        assert full[: len(prompt)] == prompt and seqs[row] == full
        want = [-100] * len(prompt) + full[len(prompt):] + [-100] * (batch["labels"].shape[1] - len(full))
        assert batch["labels"][row].tolist() == want
    assert encode_docs(tok, docs, 512)[0].n_prompt == 0  # the whole text by default


def test_a_cut_that_leaves_no_answer_token_is_refused():
    tok = load_plain("tiny-llama").tokenizer
    with pytest.raises(ConfigError, match="leaves no answer token of document 0"):
        encode_docs(tok, load_docs("capitals", "train", limit=1), 3, answer_only=True)


def test_answer_only_loss_is_the_mean_over_answer_tokens(tmp_path):
    """Step 1's loss (LoRA starts as the identity) equals -log p of the answer tokens, averaged over the
    batch's answer tokens, computed one document at a time on the plain model."""
    c = cfg(method="lora", max_train=4, micro_batch_size=2, epochs=1, warmup_steps=0, loss_on="answer")
    plain = load_plain("tiny-llama")
    docs = load_docs("capitals", "train", limit=4)
    hf, tok = load_hf("tiny-llama")
    total, count = 0.0, 0
    with torch.no_grad():
        for d in docs:
            full, n = tok(d.prompt + d.target).input_ids, len(tok(d.prompt).input_ids)
            logp = torch.log_softmax(hf(input_ids=torch.tensor([full])).logits[0].double(), -1)
            total -= sum(logp[t - 1, full[t]].item() for t in range(n, len(full)))
            count += len(full) - n
    whole = encode_docs(tok, docs, c.max_len)
    seqs = encode_docs(tok, docs, c.max_len, answer_only=True)
    got = trainer_train(plain, wrap(plain, c, None), c, seqs, [], tmp_path / "ckpt", progress=False)["loss_curve"][0]
    assert got == pytest.approx(total / count, abs=1e-5)
    assert sum(len(s) - 1 for s in whole) > count  # the whole-text loss would average over more tokens


def test_the_newline_separator_trains_and_evaluates_prompt_newline_answer():
    inputs = prepare(cfg(task="add_sub", max_train=2, eval_limit=2, separator="newline"))
    plain = prepare(cfg(task="add_sub", max_train=2, eval_limit=2))
    for new, old in zip(inputs.train_docs + inputs.eval_docs, plain.train_docs + plain.eval_docs):
        assert new.prompt == old.prompt + "\n" and new.target == old.target[1:] and old.target[0] == " "
