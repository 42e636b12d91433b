"""`circuitlab held-out` (Finding 1 out of sample) on the tiny model: every selection's loss on every held-out doc
equals the plain algorithm's on that doc alone; the comparisons are those per-doc differences; reuse; refusals."""

import json

import numpy as np
import pytest

from circuitlab.circuits.circuit import Circuit, Sample
from circuitlab.circuits.heads import HeadMask
from circuitlab.cli import main
from circuitlab.locate import PlainEvaluator
from circuitlab.models.config import ModelConfig
from circuitlab.studies.config import HeldOutConfig, ReproduceConfig
from circuitlab.studies.jobs import held_out, reproduce
from circuitlab.tasks import load_docs



@pytest.fixture(scope="module")
def circuit_file(tiny, data_dir, tmp_path_factory):
    """A `reproduce` circuit of the tiny model: layer-conditioned, with greedy and two random selections."""
    out = tmp_path_factory.mktemp("repro")
    config = ReproduceConfig(samples=3, heads_per_layer=1, max_docs=16, all_docs=2, random_seeds=(0, 1))
    reproduce(tiny, ["hellaswag"], data_dir, out, config, png=False, progress=False, log=lambda s: None)
    return out / "circuits" / "hellaswag.json"


@pytest.mark.usefixtures("one_thread")
def test_selections_on_held_out_docs_equal_the_plain_algorithm_doc_by_doc(tiny, circuit_file, data_dir, tmp_path,
                                                                          monkeypatch):
    model = tiny
    last = model.n_layers - 1
    logs = []
    (r,) = held_out([circuit_file], tmp_path / "ho", model=ModelConfig(), data_dir=data_dir, log=logs.append,
                    config=HeldOutConfig(docs=3, points=(1, last)))
    docs = load_docs("hellaswag", "validation", data_dir, limit=3)
    assert (r.task, r.split, r.doc_indices, r.points) == ("hellaswag", "validation", [d.index for d in docs], [1, last])
    c = Circuit.load(circuit_file)
    heads = {"layer-conditioned": c.heads, **{s.label: s.heads for s in c.selections}}
    assert [s.label for s in r.selections] == list(heads) == ["layer-conditioned", "greedy", "random (seed 0)",
                                                                "random (seed 1)"]
    plain = [PlainEvaluator(model, [Sample(d.prompt, d.target, d.index)]) for d in docs]  # one doc at a time
    assert r.baseline == pytest.approx([p.loss(HeadMask()) for p in plain], rel=1e-4)
    for s in r.selections:
        for i, k in enumerate(r.points):
            want = [p.loss(HeadMask.of(heads[s.label]).before(k + 1)) for p in plain]
            assert s.losses[i] == pytest.approx(want, rel=1e-4), (s.label, k)

    lc, greedy, randoms = np.array(r.selections[0].losses), np.array(r.selections[1].losses), \
        np.array([s.losses for s in r.selections[2:]])  # [seed, point, doc]
    for i, row in enumerate(r.comparisons):
        assert row["point"] == r.points[i]
        assert row["greedy"]["difference"] == pytest.approx((lc[i] - greedy[i]).mean())
        assert row["greedy"]["n_docs"] == 3 and row["greedy"]["seeds"] == [None]
        assert row["random"]["difference"] == pytest.approx((lc[i] - randoms[:, i]).mean())
        assert row["random"]["seeds"] == [0, 1]
        lo, hi = row["random"]["ci"]
        assert lo <= row["random"]["difference"] <= hi

    import circuitlab.models.loaded

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished task loaded the model")

    before = (tmp_path / "ho" / "hellaswag.json").stat().st_mtime_ns
    monkeypatch.setattr(circuitlab.models.loaded, "load_model", no_loading)
    (again,) = held_out([circuit_file], tmp_path / "ho", model=ModelConfig(), data_dir=data_dir, log=logs.append,
                        config=HeldOutConfig(docs=3, points=(1, last)))
    assert (tmp_path / "ho" / "hellaswag.json").stat().st_mtime_ns == before and "reused" in logs[-1]
    assert again.comparisons == json.loads(json.dumps(r.comparisons))


@pytest.mark.parametrize("case, needle", [
    ("split", "located on train docs"), ("points", "must lie in 0.."), ("no-selections", "no greedy or random"),
    ("missing", "no-such.json"),
])
def test_bad_input_is_one_line_exit_2_before_any_model_loads(circuit_file, data_dir, tmp_path, capsys, monkeypatch,
                                                             case, needle):
    import circuitlab.models.loaded

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    monkeypatch.setattr(circuitlab.models.loaded, "load_model", no_loading)
    path, extra = str(circuit_file), []
    if case == "split":
        extra = ["--split", "train"]
    elif case == "points":
        extra = ["--points", "0,99"]
    elif case == "no-selections":
        doc = json.loads(circuit_file.read_text())
        doc["selections"] = []
        path = str(tmp_path / "bare.json")
        (tmp_path / "bare.json").write_text(json.dumps(doc))
    else:
        path = str(tmp_path / "no-such.json")
    code = main(["held-out", path, "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()
