"""Paired statistics (`circuitlab stats`) against hand computations: McNemar by binomial sums, t-tests by their
formulas, the clustered bootstrap by an element-by-element loop over the same draws, and the run files read,
paired by seed and checked."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats as st
from scipy.stats import t as t_dist

from circuitlab.cli import main
from circuitlab.core.errors import CircuitlabError
from circuitlab.finetune.results import EvalRecord, RunResult, TrainRecord
from circuitlab.report.paired import compare_groups, compare_paired, mcnemar
from circuitlab.report.stats import StatsConfig, stats


def test_mcnemar_is_the_two_sided_binomial_on_the_discordant_documents():
    a = np.array([1] * 7 + [0] * 2 + [1] * 5 + [0] * 4, dtype=float)  # 7 right only in A, 2 only in B
    b = np.array([0] * 7 + [1] * 2 + [1] * 5 + [0] * 4, dtype=float)
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == (7, 2)
    assert p == pytest.approx(2 * sum(math.comb(9, k) for k in range(3)) / 2 ** 9)  # 92 / 512
    assert mcnemar(a, a)[2] == 1.0


def t_p(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return 2 * t_dist.sf(abs(mean / (sd / math.sqrt(n))), n - 1)


def test_the_tests_count_documents_and_seeds_not_their_product():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 40)) < 0.7).astype(float)
    b = (rng.random((3, 40)) < 0.6).astype(float)
    r = compare_paired(a, b, [0, 1, 2], "acc", n_bootstrap=500)
    diff = (a - b).tolist()
    by_doc = [sum(diff[s][d] for s in range(3)) / 3 for d in range(40)]
    by_seed = [sum(row) / 40 for row in diff]
    assert r.p_documents == pytest.approx(t_p(by_doc), rel=1e-9)
    assert r.p_seeds == pytest.approx(t_p(by_seed), rel=1e-9)
    assert r.difference == pytest.approx(sum(by_seed) / 3)
    sd = math.sqrt(sum((v - r.difference) ** 2 for v in by_doc) / 39)
    assert r.min_detectable == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(40), rel=1e-5)
    for s, row in enumerate(r.per_seed):
        assert row.difference == pytest.approx(by_seed[s]) and row.mcnemar_p == mcnemar(a[s], b[s])[2]


def test_the_bootstrap_resamples_seeds_and_documents_together():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 25)), rng.normal(size=(3, 25))
    r = compare_paired(a, b, [0, 1, 2], "margin", n_bootstrap=300, seed=7)
    draws, means = np.random.default_rng(7), []
    for _ in range(300):  # the same draws, averaged element by element
        seeds = draws.integers(0, 3, 3)
        docs = draws.integers(0, 25, 25)
        cells = [a[s][d] - b[s][d] for s in seeds for d in docs]
        means.append(sum(cells) / len(cells))
    assert r.ci == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)), rel=1e-9)
    assert r.per_seed[0].mcnemar_p is None  # a continuous measure: no McNemar


def test_seeds_that_disagree_widen_the_interval():
    """The same per-document differences, once identical in every seed and once shifted by seed: only the
    interval that resamples seeds sees the second."""
    base = np.random.default_rng(3).normal(0, 1, size=25)
    same = np.stack([base] * 3)
    shifted = np.stack([base + 2, base - 2, base])
    zeros = np.zeros((3, 25))
    narrow = compare_paired(same, zeros, [0, 1, 2], "margin", n_bootstrap=2000)
    wide = compare_paired(shifted, zeros, [0, 1, 2], "margin", n_bootstrap=2000)
    assert (wide.ci[1] - wide.ci[0]) > 2 * (narrow.ci[1] - narrow.ci[0])


def welch_p(x, y):
    """Welch's two-sample t-test by its formula (Welch-Satterthwaite degrees of freedom)."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    vx = sum((v - mx) ** 2 for v in x) / (len(x) - 1) / len(x)
    vy = sum((v - my) ** 2 for v in y) / (len(y) - 1) / len(y)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return 2 * t_dist.sf(abs(mx - my) / math.sqrt(vx + vy), df)


def test_groups_of_unpaired_runs_count_documents_and_each_sides_runs():
    """The circuit at 3 seeds against 5 head draws: documents pair, runs do not."""
    rng = np.random.default_rng(4)
    a = (rng.random((3, 30)) < 0.7).astype(float)
    b = (rng.random((5, 30)) < 0.6).astype(float)
    r = compare_groups(a, b, [0, 1, 2], [0, 1, 2, 3, 4], "acc", n_bootstrap=300, seed=5)
    runs_a, runs_b = [sum(row) / 30 for row in a.tolist()], [sum(row) / 30 for row in b.tolist()]
    by_doc = [sum(a[:, d]) / 3 - sum(b[:, d]) / 5 for d in range(30)]
    assert r.difference == pytest.approx(sum(runs_a) / 3 - sum(runs_b) / 5)
    assert r.p_documents == pytest.approx(t_p(by_doc), rel=1e-9)
    assert r.p_runs == pytest.approx(welch_p(runs_a, runs_b), rel=1e-9)
    assert r.b_below_a == sum(m < sum(runs_a) / 3 for m in runs_b)
    draws, values = np.random.default_rng(5), []
    for _ in range(300):  # the same draws, element by element: shared documents, each side's runs on its own
        docs = draws.integers(0, 30, 30)
        ra, rb = draws.integers(0, 3, 3), draws.integers(0, 5, 5)
        mean_a = sum(a[i][d] for i in ra for d in docs) / (3 * 30)
        values.append(mean_a - sum(b[j][d] for j in rb for d in docs) / (5 * 30))
    assert r.ci == pytest.approx((np.quantile(values, 0.025), np.quantile(values, 0.975)), rel=1e-9)


def test_groups_with_one_run_each_are_the_paired_comparison():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(1, 20)), rng.normal(size=(1, 20))
    g = compare_groups(a, b, [0], [3], "margin", n_bootstrap=200)
    p = compare_paired(a, b, [0], "margin", n_bootstrap=200)
    assert (g.difference, g.p_documents, g.min_detectable) == pytest.approx((p.difference, p.p_documents,
                                                                              p.min_detectable))
    assert g.p_runs is None


def write_run(path, seed, preds, golds, margins=(), task="sst2", fingerprint="abc"):
    r = RunResult({"task": task, "seed": seed, "method": "lora"}, "lora", {}, None, 0, 1, 0.0,
                  TrainRecord("train", 0), EvalRecord("validation", len(preds), 0, fingerprint, {"acc": 0.0},
                                                      preds=list(preds), golds=list(golds), margins=list(margins)))
    path.mkdir(parents=True)
    (path / "result.json").write_text(json.dumps(asdict(r)))
    return path


def test_stats_pairs_runs_by_seed_and_a_single_run_with_every_seed(tmp_path):
    golds = [0, 1, 1, 0, 1, 0]
    a = [write_run(tmp_path / f"a{s}", s, p, golds) for s, p in ((0, [0, 1, 1, 0, 0, 0]), (1, [0, 1, 0, 0, 1, 0]))]
    b = [write_run(tmp_path / f"b{s}", s, p, golds) for s, p in ((1, [1, 1, 0, 0, 1, 1]), (0, [0, 0, 1, 1, 1, 0]))]
    r = stats(a, b, StatsConfig(bootstrap=200))
    assert r.seeds == [0, 1] and r.measure == "acc"
    assert [s.difference for s in r.per_seed] == pytest.approx([5 / 6 - 4 / 6, 5 / 6 - 3 / 6])
    base = write_run(tmp_path / "base", 0, [1] * 6, golds)
    r = stats([base], b, StatsConfig(bootstrap=200))
    assert r.seeds == [0, 1] and [s.a for s in r.per_seed] == pytest.approx([0.5, 0.5])


def test_stats_refuses_runs_on_other_documents_and_missing_margins(tmp_path, capsys):
    a = write_run(tmp_path / "a", 0, [0, 1], [0, 1], margins=[1.0, 2.0])
    b = write_run(tmp_path / "b", 0, [0, 1], [0, 1], fingerprint="other")
    with pytest.raises(CircuitlabError, match="other documents"):
        stats([a], [b])
    c = write_run(tmp_path / "c", 0, [0, 1], [0, 1])
    with pytest.raises(CircuitlabError, match="no per-document margins"):
        stats([a], [c], StatsConfig(measure="margin"))
    assert main(["stats", "--a", str(a), "--b", str(c), "--measure", "margin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "margins" in err[0]
    assert main(["stats", "--a", str(a), "--b", str(c), "--bootstrap", "200", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["seeds"] == [0]


def test_stats_compares_unpaired_runs_as_groups(tmp_path, capsys):
    golds = [0, 1, 1, 0, 1, 0]
    a = [write_run(tmp_path / f"a{s}", s, p, golds) for s, p in ((0, [0, 1, 1, 0, 0, 0]), (1, [0, 1, 1, 0, 1, 0]))]
    b = [write_run(tmp_path / f"b{s}", s, p, golds) for s, p in ((5, [1, 1, 0, 0, 1, 1]), (6, [0, 0, 1, 1, 1, 0]),
                                                                 (7, [1, 0, 0, 1, 0, 1]))]
    with pytest.raises(CircuitlabError, match="share no seed"):
        stats(a, b)
    r = stats(a, b, StatsConfig(bootstrap=200, pairing="none"))
    assert (r.seeds_a, r.seeds_b) == ([0, 1], [5, 6, 7])
    assert r.runs_a == pytest.approx([5 / 6, 1.0]) and r.runs_b == pytest.approx([3 / 6, 4 / 6, 0.0])
    assert r.difference == pytest.approx(11 / 12 - 7 / 18) and r.b_below_a == 3
    argv = ["stats", "--a", *map(str, a), "--b", *map(str, b), "--pairing", "none", "--bootstrap", "200"]
    assert main(argv) == 0
    assert "3 of B's 3 runs are below A's mean" in capsys.readouterr().out


def test_stats_says_which_runs_it_leaves_out_and_what_the_seeds_can_detect(tmp_path, capsys):
    golds = [0, 1, 1, 0, 1, 0]
    a = [write_run(tmp_path / f"a{s}", s, p, golds) for s, p in
         ((0, [0, 1, 1, 0, 0, 0]), (1, [0, 1, 0, 0, 1, 0]), (2, [0, 1, 1, 0, 1, 0]), (7, [1, 1, 1, 1, 1, 1]))]
    b = [write_run(tmp_path / f"b{s}", s, p, golds) for s, p in
         ((0, [1, 1, 0, 0, 1, 1]), (1, [0, 0, 1, 1, 1, 0]), (2, [0, 0, 0, 0, 1, 0]), (9, [0, 0, 0, 0, 0, 0]))]
    r = stats(a, b, StatsConfig(bootstrap=200))
    assert r.seeds == [0, 1, 2] and r.left_out == [str(a[3]), str(b[3])]
    d = np.array([s.difference for s in r.per_seed])  # the per-seed differences: power by the noncentral t
    effect = r.min_detectable_runs / d.std(ddof=1)
    ncp, crit = effect * math.sqrt(3), st.t.ppf(0.975, 2)
    assert st.nct.sf(crit, 2, ncp) + st.nct.cdf(-crit, 2, ncp) == pytest.approx(0.8, abs=1e-4)
    assert main(["stats", "--a", *map(str, a), "--b", *map(str, b), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert f"left out, their seed has no partner on the other side: {a[3]}, {b[3]}" in out
    assert f"over seeds {100 * r.min_detectable_runs:.2f} points" in out


@pytest.mark.parametrize("margins, preds, match", [
    ([1.0, None], [0, 1], "1 of its margins are not finite numbers"),
    ([1.0, 2.0], [0], "records 1 predictions for its 2 documents"),
])
def test_stats_refuses_runs_whose_numbers_do_not_add_up(tmp_path, capsys, margins, preds, match):
    good = write_run(tmp_path / "good", 0, [0, 1], [0, 1], margins=[0.5, 0.5])
    bad = write_run(tmp_path / "bad", 0, [0, 1], [0, 1], margins=margins)
    doc = json.loads((bad / "result.json").read_text())
    doc["eval"]["preds"] = preds
    (bad / "result.json").write_text(json.dumps(doc))
    measure = "margin" if None in margins else "correct"
    assert main(["stats", "--a", str(good), "--b", str(bad), "--measure", measure]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]
