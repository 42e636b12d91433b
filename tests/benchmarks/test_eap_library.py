"""What `benchmarks/eap_library.py` hands the EAP-IG library: the same tokens and answer positions circuitlab
scores (the library itself runs only in its own environment, so only this side is tested here)."""

import torch

from circuitlab.edges.batches import encode_pairs
from circuitlab.models import load_plain


def test_the_library_sees_circuitlabs_tokens_and_answer_positions(eap_library):
    tok = load_plain("tiny-llama").tokenizer
    ours, theirs = eap_library.job_pairs(tok, 3)
    b = encode_pairs(tok, ours)
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert p.clean.startswith(tok.bos_token) and t["clean"] == p.clean[len(tok.bos_token):] + p.answer
        ids = [tok.bos_token_id] + tok(t["clean"]).input_ids  # the library's `to_tokens(prepend_bos=True)`
        assert ids == t["ids"] == b.clean[i, : len(ids)].tolist()
        assert [ids[q + 1] for q in t["positions"]] == t["targets"]  # logits at q predict token q + 1
        assert tok.decode(t["targets"]).strip() == p.answer.strip()


def test_agreement_measures_against_hand_values(eap_library):
    ours = {"a": 1.0, "b": -2.0, "c": 0.5}
    theirs = {"a": 1.0, "b": -2.5, "c": 0.5}
    got = eap_library.compare(ours, theirs)
    assert got["max_abs_difference"] == 0.5 and got["relative_difference"] == 0.2
    want_r = torch.corrcoef(torch.tensor([[1.0, -2.0, 0.5], [1.0, -2.5, 0.5]], dtype=torch.float64))[0, 1].item()
    assert abs(got["pearson_r"] - want_r) < 1e-12 and got["top5pct_overlap"] == 1.0 and got["edges"] == 3
