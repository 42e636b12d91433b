"""The study analysis's statistics against hand computations (formulas written out here, not the libraries)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from circuitlab.studies.analysis import Result, analyse, decide, detectable, head_sets, single_case, welch
from circuitlab.studies.spec import Analysis, Comparison


def test_single_case_t_by_hand():
    # Crawford & Howell (1998): t = (x - mean) / (s * sqrt((m + 1) / m)), m - 1 degrees of freedom.
    others = np.array([0.60, 0.62, 0.65, 0.61, 0.59])
    x = 0.68
    mean = sum(others) / 5
    s = math.sqrt(sum((o - mean) ** 2 for o in others) / 4)
    se = s * math.sqrt(6 / 5)
    t_hand = (x - mean) / se
    t, p, (lo, hi), got_se = single_case(x, others, 0.05)
    assert t == pytest.approx(t_hand) and got_se == pytest.approx(se)
    assert p == pytest.approx(2 * (1 - st.t.cdf(abs(t_hand), 4)))
    half = st.t.ppf(0.975, 4) * se
    assert (lo, hi) == pytest.approx((x - mean - half, x - mean + half))


def test_welch_by_hand():
    a, b = np.array([0.70, 0.72, 0.69, 0.74]), np.array([0.66, 0.70, 0.64, 0.69, 0.67, 0.65])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    diff, se = a.mean() - b.mean(), math.sqrt(va + vb)
    p, (lo, hi) = welch(a, b, 0.05)
    assert p == pytest.approx(2 * st.t.sf(diff / se, df))
    assert (lo, hi) == pytest.approx((diff - st.t.ppf(0.975, df) * se, diff + st.t.ppf(0.975, df) * se))
    assert math.isnan(welch(np.array([0.5, 0.5]), np.array([0.5, 0.5]), 0.05)[0])  # nothing varies: no test


def test_detectable_difference_has_the_declared_power():
    """The difference `detectable` returns is found with power 0.8: checked with the noncentral t by hand."""
    n1, n2, sd = 8, 16, 0.012
    d = detectable(n1, n2, sd, 0.05, 0.8) / sd
    df, ncp = n1 + n2 - 2, d * math.sqrt(n1 * n2 / (n1 + n2))
    crit = st.t.ppf(0.975, df)
    power = st.nct.sf(crit, df, ncp) + st.nct.cdf(-crit, df, ncp)
    assert power == pytest.approx(0.8, abs=1e-4)


def runs_table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["task", "arm", "head_set", "seed", "acc", "out"])


def test_head_sets_are_the_unit_and_holm_is_over_the_family():
    rng = np.random.default_rng(0)
    rows = []
    for task, shift in (("t1", 0.03), ("t2", 0.0), ("t3", 0.01)):
        for h in range(6):
            for seed in (0, 1):  # a head set at two seeds counts once, at its mean
                rows.append((task, "circuit", h, seed, 0.6 + shift + rng.normal(0, 0.01), ""))
        for h in range(8):
            rows.append((task, "random", h, h % 6, 0.6 + rng.normal(0, 0.01), ""))
    runs = runs_table(rows)
    sets = head_sets(runs)
    assert len(sets[(sets.task == "t1") & (sets.arm == "circuit")]) == 6
    cfg = Analysis(comparisons=[Comparison("circuit", "random")], mixed_model=False)
    results, skipped = analyse(runs, ["t1", "t2", "t3"], cfg)
    assert not skipped and [r.n_a for r in results] == [6, 6, 6]
    p = sorted((r.p, i) for i, r in enumerate(results))  # Holm by hand: (m - rank) x p, running maximum, cap 1
    adjusted, running = {}, 0.0
    for rank, (pv, i) in enumerate(p):
        running = max(running, min(1.0, (3 - rank) * pv))
        adjusted[i] = running
    assert [r.p_adjusted for r in results] == pytest.approx([adjusted[i] for i in range(3)])
    means = runs.groupby(["task", "arm", "head_set"]).acc.mean()
    assert results[0].difference == pytest.approx(means["t1"]["circuit"].mean() - means["t1"]["random"].mean())
    assert results[0].decision == "advantage"


def test_percentile_counts_ties_half_and_one_head_set_uses_the_single_case_test():
    rows = [("t", "circuit", 0, s, 0.70, "") for s in range(3)]
    rows += [("t", "random", h, h, acc, "") for h, acc in enumerate([0.60, 0.70, 0.65, 0.72])]
    results, _ = analyse(runs_table(rows), ["t"], Analysis(comparisons=[Comparison("circuit", "random")],
                                                           mixed_model=False))
    (r,) = results
    assert r.test.startswith("single-case") and r.percentiles == [62.5]  # 2 below, 1 tie (half) of 4
    assert any("one head set" in n for n in r.notes)


def result(p, ci, ci_eq):
    return Result("t", "a", "b", 8, 16, 0.7, 0.69, 0.01, 0.01, ci[0] / 2 + ci[1] / 2, ci, ci_eq, p, p, "welch", 0.01,
                  [])


@pytest.mark.parametrize("p, ci, ci_eq, decision", [
    (0.01, (0.002, 0.02), (0.004, 0.018), "advantage"),
    (0.01, (-0.02, -0.002), (-0.018, -0.004), "disadvantage"),
    (0.40, (-0.012, 0.006), (-0.009, 0.004), "no practically relevant advantage"),  # 90 % CI within +-1 point
    (0.40, (-0.012, 0.016), (-0.009, 0.012), "unresolved"),
    (0.06, (0.0001, 0.02), (0.002, 0.018), "unresolved"),  # the corrected p decides, not the interval alone
])
def test_decision_rules(p, ci, ci_eq, decision):
    assert decide(result(p, ci, ci_eq), Analysis(comparisons=[Comparison("a", "b")])) == decision


def test_mixed_model_recovers_a_planted_arm_effect():
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(8):
        block = rng.normal(0, 0.02)  # what a seed adds to every arm
        rows.append(("t", "circuit", seed, seed, 0.65 + 0.03 + block + rng.normal(0, 0.002), ""))
        rows.append(("t", "random", seed, seed, 0.65 + block + rng.normal(0, 0.002), ""))
    results, _ = analyse(runs_table(rows), ["t"], Analysis(comparisons=[Comparison("circuit", "random")]))
    m = results[0].mixed
    assert m["fitted"] and m["ci"][0] < 0.03 < m["ci"][1] and m["effect"] == pytest.approx(0.03, abs=0.003)

