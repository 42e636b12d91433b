"""The protocol of a locating run: recorded in the circuit, part of the settings a checkpoint or a
circuit file is reused for, and deciding which samples are selected."""

import json

import pytest

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.locate import LocateConfig, locate, locate_to, locating_samples
from circuitlab.locate.run import fingerprint, run_identity
from circuitlab.locate.encoding import encode_samples
from circuitlab.evaluate.scoring import encode_pair
from tests.helpers import SAMPLES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_circuit_records_its_protocol_and_old_files_read_as_paper(tiny, tmp_path):
    c = locate(tiny, SAMPLES, LocateConfig(n_per_layer=1, protocol="official"), progress=False)
    assert json.loads(c.save(tmp_path / "c.json").read_text())["protocol"] == "official"
    assert Circuit.load(tmp_path / "c.json").protocol == "official"
    old = c.to_dict()
    del old["protocol"]  # a file written before the protocol existed
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Circuit.load(tmp_path / "old.json").protocol == "paper"


def test_settings_name_the_official_protocol_only(tiny):
    info, task = ModelInfo.of(tiny), TaskInfo("custom", "samples")
    paper, official = LocateConfig(n_per_layer=1), LocateConfig(n_per_layer=1, protocol="official")
    s_paper = run_identity(tiny, info, task, SAMPLES, paper, paper.plan(tiny.dims))
    s_official = run_identity(tiny, info, task, SAMPLES, official, official.plan(tiny.dims))
    assert "protocol" not in s_paper  # the identities of circuits made before protocols stay the same
    assert s_official["protocol"] == "official" and fingerprint(s_paper) != fingerprint(s_official)


class Stop(Exception):
    pass


def stop_at_first_step(step):
    raise Stop


def test_a_partial_run_or_circuit_of_the_other_protocol_is_not_reused(tiny, tmp_path):
    out = tmp_path / "c.json"
    paper = locate_to(out, tiny, SAMPLES, LocateConfig(n_per_layer=1), progress=False)
    with pytest.raises(CircuitlabError, match="other settings .differs in: protocol"):
        locate_to(out, tiny, SAMPLES, LocateConfig(n_per_layer=1, protocol="official"), progress=False)
    official = locate_to(tmp_path / "o.json", tiny, SAMPLES, LocateConfig(n_per_layer=1, protocol="official"),
                         progress=False)
    assert official.protocol == "official" and official.baseline_loss != pytest.approx(paper.baseline_loss)
    with pytest.raises(Stop):  # a paper run interrupted after its first step
        locate_to(tmp_path / "d.json", tiny, SAMPLES, LocateConfig(n_per_layer=1), progress=False,
                  on_step=stop_at_first_step)
    with pytest.raises(CircuitlabError, match="unfinished circuit with other settings .differs in: protocol"):
        locate_to(tmp_path / "d.json", tiny, SAMPLES, LocateConfig(n_per_layer=1, protocol="official"), progress=False)


def test_official_targets_end_with_eos_after_the_joint_encoding(tiny):
    eos = tiny.tokenizer.eos_token_id
    for s, e in zip(SAMPLES, encode_samples(tiny, SAMPLES, eos=True)):
        pair = encode_pair(tiny.tokenizer, s.prompt, s.target)
        assert e.targets == pair.continuation + (eos,)
        assert e.ids == pair.context + pair.continuation  # the model reads the whole target, EOS predicted


def test_official_samples_are_the_lowest_loss_docs_right_or_wrong(tiny, data_dir, tmp_path, monkeypatch):
    from circuitlab.evaluate.scoring import score_docs
    from circuitlab.tasks import load_docs

    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path))
    docs = load_docs("sst2", "train", data_dir, limit=30)
    scores = score_docs(tiny, docs, progress=False)
    by_loss = sorted(scores, key=lambda s: (s.target_loss, s.index))  # target loss without EOS
    official, _ = locating_samples(tiny, "sst2", data_dir, n=6, max_docs=30, progress=False, protocol="official")
    assert [s.index for s in official] == [s.index for s in by_loss[:6]]
    paper, _ = locating_samples(tiny, "sst2", data_dir, n=6, max_docs=30, progress=False)
    assert [s.index for s in paper] == [s.index for s in by_loss if s.correct][:6]
