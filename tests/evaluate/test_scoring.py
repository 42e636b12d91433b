import pytest
import torch

from circuitlab.evaluate.scoring import encode_pair, score_docs, score_requests
from circuitlab.locate import selection as job
from circuitlab.locate.samples import select_samples
from circuitlab.tasks import get_task, load_docs


def direct_logprob(model, context, continuation):
    """Independent computation: one unpadded forward of the plain HF model, full logits."""
    enc = encode_pair(model.tokenizer, context, continuation)
    ids = torch.tensor([list(enc.context + enc.continuation)])
    with torch.no_grad():
        logp = torch.log_softmax(model.hf_model(ids).logits[0].float(), -1)
    n = len(enc.continuation)
    positions = range(ids.shape[1] - n - 1, ids.shape[1] - 1)
    return sum(logp[p, t].item() for p, t in zip(positions, enc.continuation)), n


def test_encode_pair_moves_trailing_space_to_continuation(tiny):
    enc = encode_pair(tiny.tokenizer, "Answer: ", "yes")
    ref = encode_pair(tiny.tokenizer, "Answer:", " yes")
    assert enc == ref
    assert tiny.tokenizer.decode(list(enc.continuation)) == " yes"


def test_scores_equal_direct_hf_computation(tiny, data_dir):
    docs = load_docs("arc_easy", "test", data_dir, limit=3)
    reqs = [(d.prompt, c) for d in docs for c in d.choices]
    scores = score_requests(tiny, reqs, batch_size=5, progress=False)
    for (ctx, cont), s in zip(reqs, scores):
        lp, n = direct_logprob(tiny, ctx, cont)
        assert s.n_tokens == n
        assert abs(s.logprob - lp) < 1e-4


def test_padding_and_batch_size_do_not_change_scores(tiny_gqa, data_dir):
    docs = load_docs("piqa", "validation", data_dir, limit=4) + load_docs("rte", "validation", data_dir, limit=4)
    reqs = [(d.prompt, c) for d in docs for c in d.choices]
    one = score_requests(tiny_gqa, reqs, batch_size=1, progress=False)
    for bs in (3, 16):
        other = score_requests(tiny_gqa, reqs, batch_size=bs, progress=False)
        for a, b in zip(one, other):
            assert a.n_tokens == b.n_tokens and a.greedy == b.greedy
            assert abs(a.logprob - b.logprob) < 1e-4


def test_select_samples_picks_lowest_loss_correct_docs(tiny, data_dir):
    docs = load_docs("sst2", "train", data_dir, limit=40)
    scores = score_docs(tiny, docs, batch_size=8, progress=False)
    picked = select_samples(docs, scores, n=5)
    # independent check: target loss straight from the direct computation, correctness from argmax
    ref = []
    for d in docs:
        lps = [direct_logprob(tiny, d.prompt, c) for c in d.choices]
        pred = max(range(len(lps)), key=lambda i: (lps[i][0], -i))
        if pred == d.gold:
            ref.append((-lps[d.gold][0] / lps[d.gold][1], d.index))
    ref.sort()
    assert [d.index for d in picked] == [i for _, i in ref[:5]]


def test_score_cache_is_reused(tiny, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path))
    task = get_task("sst2")
    docs = load_docs(task, "train", data_dir, limit=6)
    first = job.cached_scores(tiny, task, docs, progress=False)
    files = list((tmp_path / "scores").glob("*.json"))
    assert len(files) == 1
    monkeypatch.setattr(job, "score_docs", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rescored")))
    again = job.cached_scores(tiny, task, docs, progress=False)
    assert [s.logprobs for s in again] == [s.logprobs for s in first]


def test_shared_inputs_maps_prefixes_to_one_carrier():
    from circuitlab.evaluate.scoring import shared_inputs

    inputs = [[1, 2, 3], [1, 2, 3, 4], [1, 2, 3], [1, 2, 5], [1, 2, 3]]
    groups = ["a", "a", "a", "a", "b"]
    carriers, carrier_of = shared_inputs(inputs, groups)
    assert carriers[carrier_of[0]] == [1, 2, 3, 4] and carrier_of[0] == carrier_of[1] == carrier_of[2]
    assert carriers[carrier_of[3]] == [1, 2, 5]
    assert carriers[carrier_of[4]] == [1, 2, 3]  # another group never shares
    assert len(carriers) == 3


# ---------------------------------------------------------------- the official protocol

def hand_separate(tok, context, continuation):
    """The official harness's encoding by hand: each string's own tokens, no special tokens."""
    return tok.convert_tokens_to_ids(tok.tokenize(context)), tok.convert_tokens_to_ids(tok.tokenize(continuation))


def test_separate_encoding_is_each_string_alone_without_special_tokens(tiny):
    from circuitlab.evaluate.scoring import encode_separately

    tok = tiny.tokenizer
    for ctx, cont in [("Question: Is the sky blue?\nAnswer:", " yes"), ("Cats and dogs are", " animals that purr")]:
        enc = encode_separately(tok, ctx, cont)
        ctx_ids, cont_ids = hand_separate(tok, ctx, cont)
        assert list(enc.context) == ctx_ids and list(enc.continuation) == cont_ids
        assert tok.bos_token_id is None or enc.context[0] != tok.bos_token_id  # no BOS
    assert encode_separately(tok, "", " yes").context == (tok.eos_token_id,)  # lm-eval 0.3's empty context


class BosTokenizer:
    """Like LLaMA-2's: BOS (id 1) first unless told not to; here one token per character, and a space
    before a letter merged into it (so " A" after a context is one token, alone the same one)."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=True):
        from types import SimpleNamespace

        ids, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text) and text[i + 1].isalpha():
                ids.append(1000 + ord(text[i + 1]))
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + ids)


def test_separate_encoding_drops_the_bos_that_the_joint_encoding_keeps():
    from circuitlab.evaluate.scoring import encode_separately

    tok = BosTokenizer()
    joint, apart = encode_pair(tok, "Answer:", " A"), encode_separately(tok, "Answer:", " A")
    assert joint.context == (1, *map(ord, "Answer:")) and joint.continuation == (1000 + ord("A"),)
    assert apart.context == tuple(map(ord, "Answer:")) and apart.continuation == (1000 + ord("A"),)


def test_official_scores_equal_a_direct_forward_on_hand_tokenized_ids(tiny, data_dir):
    docs = load_docs("arc_easy", "test", data_dir, limit=3)
    reqs = [(d.prompt, c) for d in docs for c in d.choices]
    scores = score_requests(tiny, reqs, batch_size=4, progress=False, separately=True)
    for (ctx, cont), s in zip(reqs, scores):
        ctx_ids, cont_ids = hand_separate(tiny.tokenizer, ctx, cont)
        with torch.no_grad():
            logp = torch.log_softmax(tiny.hf_model(torch.tensor([ctx_ids + cont_ids])).logits[0].float(), -1)
        expected = sum(logp[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))
        assert s.n_tokens == len(cont_ids) and abs(s.logprob - expected) < 1e-4


def test_official_hellaswag_scores_five_choices_the_fifth_being_E(tiny, data_dir):
    task = get_task("hellaswag")
    docs = load_docs(task, "validation", data_dir, limit=3)
    scores = score_docs(tiny, docs, batch_size=8, progress=False, protocol="official", task=task)
    for d, s in zip(docs, scores):
        assert len(d.choices) == 4 and len(s.logprobs) == 5 and s.gold == d.gold
        expected = score_requests(tiny, [(d.prompt, " E")], progress=False, separately=True)[0].logprob
        assert abs(s.logprobs[4] - expected) < 1e-4
        assert s.pred == max(range(5), key=lambda i: (s.logprobs[i], -i))
    assert all(len(s.logprobs) == 4 for s in score_docs(tiny, docs, progress=False, task=task))  # paper: four


def fake_scores(monkeypatch, logprob_of: dict[str, float], want_separately: bool):
    """score_requests replaced by given log-likelihoods per continuation (no model needed)."""
    import circuitlab.evaluate.scoring as scoring
    from circuitlab.evaluate.scoring import Score

    def fake(model, requests, batch_size=16, progress=True, separately=False):
        assert separately == want_separately
        return [Score(logprob_of[c], 1, False) for _, c in requests]

    monkeypatch.setattr(scoring, "score_requests", fake)


@pytest.mark.parametrize("task_name, choices, official_pred", [
    ("boolq", (" yes", " no"), 1), ("cola", (" yes", " no"), 1), ("sst2", (" positive", " negative"), 1),
    ("wnli", (" True", " False"), 1), ("mrpc", (" yes", " no"), 1),
    ("rte", (" True", " False"), 0),  # `pred = ll_false > ll_true`: the tie is " True"
    ("piqa", (" A", " B"), 0),  # MultipleChoiceTask: np.argmax, the first
])
def test_ties_follow_the_official_harness(monkeypatch, task_name, choices, official_pred):
    from circuitlab.tasks import Doc

    doc = [Doc("Q?\nAnswer:", choices, 0, 0)]
    for protocol, want in (("official", official_pred), ("paper", 0)):
        fake_scores(monkeypatch, {c: -1.25 for c in choices}, want_separately=protocol == "official")
        (s,) = score_docs(None, doc, progress=False, protocol=protocol, task=get_task(task_name))
        assert s.pred == want, protocol


def test_official_acc_norm_divides_by_the_length_without_the_leading_space(monkeypatch):
    """|lp0| / |lp1| = 1.4 lies between 4/3 (" yes"/" no" with spaces) and 3/2 (without)."""
    from circuitlab.tasks import Doc

    doc = [Doc("Q?\nAnswer:", (" yes", " no"), 0, 0)]
    expected = {"paper": ([4, 3], 1), "official": ([3, 2], 0)}  # -1.4/4 < -1/3, but -1.4/3 > -1/2
    for protocol, (lens, pred_norm) in expected.items():
        fake_scores(monkeypatch, {" yes": -1.4, " no": -1.0}, want_separately=protocol == "official")
        (s,) = score_docs(None, doc, progress=False, protocol=protocol, task=get_task("piqa"))
        assert s.char_lens == lens and s.pred_norm == pred_norm and s.pred == 1


def test_select_samples_without_the_correctness_filter_takes_the_lowest_loss_docs(tiny, data_dir):
    docs = load_docs("sst2", "train", data_dir, limit=40)
    scores = score_docs(tiny, docs, batch_size=8, progress=False)
    picked = select_samples(docs, scores, n=5, correct_only=False)
    ref = sorted((-lp / n, d.index) for d in docs for lp, n in [direct_logprob(tiny, d.prompt, d.target)])
    # every doc, right or wrong
    assert [d.index for d in picked] == [i for _, i in ref[:5]]
    assert len(select_samples(docs, scores, n=100, correct_only=False)) == 40
