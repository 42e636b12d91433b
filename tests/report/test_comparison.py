"""Overlap, Jaccard and head frequency against an independent numpy computation on boolean masks."""

import math

import numpy as np
import pandas as pd
import pytest

from circuitlab.report import comparison as compare
from circuitlab.report.style import circuit_labels
from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.cli import main
from circuitlab.core.errors import CircuitlabError

L, H = 5, 6


def model_info(**over) -> ModelInfo:
    info = dict(name="tiny", hf_id="tiny", revision=None, fingerprint="f00d", n_layers=L, n_heads=H,
                n_kv_heads=H, d_head=16, d_model=96)
    return ModelInfo(**{**info, **over})


def circuit_from_mask(task: str, mask: np.ndarray, model: ModelInfo | None = None, strategy="layer-conditioned"):
    heads = {layer: [int(h) for h in np.flatnonzero(mask[layer])] for layer in range(mask.shape[0])}
    return Circuit(model=model or model_info(), task=TaskInfo(task, "train"), samples=[], strategy=strategy,
                   n_per_layer=0, heads={k: v for k, v in heads.items() if v})


@pytest.fixture
def masks():
    rng = np.random.default_rng(0)
    return [rng.random((L, H)) < p for p in (0.3, 0.5, 0.2, 0.4)]


def test_tables_match_numpy(masks):
    circuits = [circuit_from_mask(f"t{i}", m) for i, m in enumerate(masks)]
    result = compare.compare(circuits)
    for i, a in enumerate(masks):
        for j, b in enumerate(masks):
            inter = np.logical_and(a, b).sum()
            assert result.shared.iloc[i, j] == inter
            assert result.overlap.iloc[i, j] == pytest.approx(inter / a.sum())
            assert result.jaccard.iloc[i, j] == pytest.approx(inter / np.logical_or(a, b).sum())
    np.testing.assert_array_equal(result.frequency.to_numpy(), np.sum(masks, axis=0))
    assert list(result.overlap.index) == ["t0", "t1", "t2", "t3"]
    # The distribution counts every head once, and its weighted sum is every circuit's size.
    dist = result.distribution
    assert dist.sum() == L * H
    assert (dist.index * dist).sum() == sum(m.sum() for m in masks)
    assert list(dist.index) == list(range(len(masks) + 1))


def test_overlap_is_asymmetric_jaccard_symmetric():
    a = np.zeros((L, H), bool)
    a[0, :2] = True  # 2 heads
    b = a.copy()
    b[1, :2] = True  # 4 heads, containing a
    ca, cb = circuit_from_mask("a", a), circuit_from_mask("b", b)
    assert compare.overlap_rate(ca, cb) == 1.0
    assert compare.overlap_rate(cb, ca) == 0.5
    assert compare.circuit_jaccard(ca, cb) == compare.circuit_jaccard(cb, ca) == 0.5


def test_empty_circuits():
    """The share of an empty circuit's heads is undefined; two empty circuits are the same circuit (Jaccard 1,
    the one rule `circuits.heads.jaccard` keeps, as `track` does for edge circuits)."""
    empty = circuit_from_mask("e", np.zeros((L, H), bool))
    full = circuit_from_mask("f", np.ones((L, H), bool))
    assert math.isnan(compare.overlap_rate(empty, full))
    assert compare.overlap_rate(full, empty) == 0.0
    assert compare.circuit_jaccard(empty, empty) == 1.0 and compare.circuit_jaccard(empty, full) == 0.0


@pytest.mark.parametrize("change", [dict(fingerprint="beef"), dict(n_layers=L + 1), dict(n_heads=H + 2)])
def test_refuses_different_models(masks, change):
    a = circuit_from_mask("a", masks[0])
    b = circuit_from_mask("b", masks[1], model_info(**change, name="other"))
    with pytest.raises(CircuitlabError, match="cannot compare circuits of different models"):
        compare.compare([a, b])


def test_duplicate_task_names_get_distinct_labels(masks):
    circuits = [circuit_from_mask("sst2", masks[0]), circuit_from_mask("sst2", masks[1], strategy="greedy"),
                circuit_from_mask("sst2", masks[2], strategy="greedy")]
    labels = circuit_labels(circuits)
    assert len(set(labels)) == 3 and all(label.startswith("sst2/") for label in labels)


def test_csv_round_trip(masks, tmp_path):
    result = compare.compare([circuit_from_mask(f"t{i}", m) for i, m in enumerate(masks)])
    result.save_csv(tmp_path)
    back = pd.read_csv(tmp_path / "overlap_rate.csv", index_col=0)
    np.testing.assert_allclose(back.to_numpy(), result.overlap.to_numpy())
    freq = pd.read_csv(tmp_path / "head_frequency.csv", index_col=0)
    np.testing.assert_array_equal(freq.to_numpy(), result.frequency.to_numpy())


def test_cli_compare(masks, tmp_path, capsys):
    paths = []
    for i, m in enumerate(masks[:3]):
        paths.append(str(circuit_from_mask(f"t{i}", m).save(tmp_path / f"t{i}.json")))
    out = tmp_path / "cmp"
    assert main(["compare", *paths, "--out", str(out), "--no-png"]) == 0
    assert {"fig2a_overlap_rate.html", "fig8_jaccard_similarity.html", "head_frequency.html"} <= {
        p.name for p in out.iterdir()}
    assert {"overlap_rate.csv", "jaccard.csv", "head_frequency.csv"} <= {p.name for p in (out / "tables").iterdir()}
    assert "overlap rate" in capsys.readouterr().out


def test_cli_compare_refuses_other_model(masks, tmp_path, capsys):
    a = circuit_from_mask("a", masks[0]).save(tmp_path / "a.json")
    b = circuit_from_mask("b", masks[1], model_info(fingerprint="beef")).save(tmp_path / "b.json")
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-png"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different models" in err
    assert not out.exists()


def test_cli_compare_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["compare", str(bad), str(bad), "--out", str(tmp_path / "o"), "--no-png"]) == 2
    assert "malformed" in capsys.readouterr().err
