"""A study's registered analysis, with the head set as the unit of replication.

Each arm's head sets are its replicates (a circuit located on its own samples, a random draw); a head set trained at
several seeds counts once, at its mean. For a comparison A - B on one task:

- the estimand: the mean over A's head sets minus the mean over B's, in points;
- the test: Welch's t over head sets (scipy), its interval at 1 - alpha and, for the equivalence rule, at
  1 - 2 alpha; where A is one head set, the single-case t of Crawford & Howell (1998): is A one more draw of B?
  (t = (a - mean B) / (sd B sqrt(1 + 1/m)), m - 1 degrees of freedom; no library has it: tested by hand);
- each of A's head sets' percentile among B's (scipy's `percentileofscore`, ties counted half);
- the correction over the declared family (statsmodels' `multipletests`: Holm by default);
- the smallest difference the design detects with the declared power, from the head sets' own variance
  (statsmodels' `TTestIndPower`; the single-case version by the same t quantiles);
- the decision: "advantage" if the corrected p < alpha and the interval's lower end > 0; "no practically relevant
  advantage" if the 1 - 2 alpha interval lies within +-SESOI; otherwise "unresolved";
- sensitivity: a mixed model acc ~ arm + (1 | seed) over the runs (statsmodels' `mixedlm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as st

from circuitlab.studies.spec import Analysis


@dataclass
class Result:
    task: str
    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float | None
    sd_b: float | None
    difference: float
    ci: tuple[float, float]
    ci_equivalence: tuple[float, float]
    p: float
    p_adjusted: float | None
    test: str
    detectable: float | None
    percentiles: list[float]
    decision: str = ""
    in_family: bool = True
    mixed: dict | None = None
    notes: list[str] = field(default_factory=list)


def head_sets(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, arm, head set): its accuracy, the mean over its seeds, in points."""
    g = runs.groupby(["task", "arm", "head_set"], as_index=False)
    return g.agg(acc=("acc", "mean"), runs=("acc", "size"), seeds=("seed", lambda s: sorted(set(s))))


def single_case(x: float, others: np.ndarray, alpha: float) -> tuple[float, float, tuple[float, float], float]:
    """Crawford & Howell's t: (t, two-sided p, the 1 - alpha interval of x - mean, its standard error)."""
    m = len(others)
    se = float(np.std(others, ddof=1)) * math.sqrt(1 + 1 / m)
    diff = x - float(np.mean(others))
    if se == 0:
        return math.nan, math.nan, (math.nan, math.nan), se
    t = diff / se
    half = st.t.ppf(1 - alpha / 2, m - 1) * se
    return t, float(2 * st.t.sf(abs(t), m - 1)), (diff - half, diff + half), se


def welch(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, tuple[float, float]]:
    """Welch's t (scipy): its two-sided p and the 1 - alpha interval of mean(a) - mean(b); NaN where neither arm's
    head sets vary (no test can tell them apart)."""
    if np.var(a) == 0 and np.var(b) == 0:
        return math.nan, (math.nan, math.nan)
    r = st.ttest_ind(a, b, equal_var=False)
    ci = r.confidence_interval(1 - alpha)
    return float(r.pvalue), (float(ci.low), float(ci.high))


def detectable(n_a: int, n_b: int, sd: float, alpha: float, power: float) -> float | None:
    """The true difference (points) found with `power` at two-sided `alpha`, given the head sets' SD."""
    if not math.isfinite(sd) or sd == 0:
        return None
    if n_a == 1:  # the single-case test: (t_(1-alpha/2) + t_power) x its standard error
        df = n_b - 1
        return float((st.t.ppf(1 - alpha / 2, df) + st.t.ppf(power, df)) * sd * math.sqrt(1 + 1 / n_b))
    from statsmodels.stats.power import TTestIndPower

    d = TTestIndPower().solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=power, alternative="two-sided")
    return float(d * sd)


def compare(sets: pd.DataFrame, runs: pd.DataFrame, task: str, a: str, b: str, cfg: Analysis) -> Result | None:
    """A - B on `task`, or None where either arm has no head set yet (or B fewer than two)."""
    xa = sets[(sets.task == task) & (sets.arm == a)].acc.to_numpy()
    xb = sets[(sets.task == task) & (sets.arm == b)].acc.to_numpy()
    if len(xa) == 0 or len(xb) < 2:
        return None
    notes = []
    if len(xa) == 1:
        t, p, ci, _ = single_case(float(xa[0]), xb, cfg.alpha)
        ci_eq = single_case(float(xa[0]), xb, 2 * cfg.alpha)[2]
        test, sd = "single-case t (one replicate)", float(np.std(xb, ddof=1))
        notes.append(f"{a} is one replicate (one head set): its seeds replicate training, not the choice of heads")
    else:
        p, ci = welch(xa, xb, cfg.alpha)
        ci_eq = welch(xa, xb, 2 * cfg.alpha)[1]
        test = "Welch t over replicates"
        sd = math.sqrt(((len(xa) - 1) * np.var(xa, ddof=1) + (len(xb) - 1) * np.var(xb, ddof=1))
                       / (len(xa) + len(xb) - 2))
    # rounded: a head set's mean over seeds of k/n scores is off by an ulp, which must not break a tie
    percentiles = [float(st.percentileofscore(np.round(xb, 12), round(x, 12), kind="mean")) for x in xa]
    mixed = mixed_model(runs[(runs.task == task) & runs.arm.isin([a, b])], a, b, cfg.alpha) if cfg.mixed_model else None
    return Result(task, a, b, len(xa), len(xb), float(xa.mean()), float(xb.mean()),
                  float(np.std(xa, ddof=1)) if len(xa) > 1 else None, float(np.std(xb, ddof=1)),
                  float(xa.mean() - xb.mean()), ci, ci_eq, p, None, test,
                  detectable(len(xa), len(xb), sd, cfg.alpha, cfg.power), percentiles, mixed=mixed, notes=notes)


def mixed_model(runs: pd.DataFrame, a: str, b: str, alpha: float) -> dict:
    """acc ~ arm + (1 | seed) over the runs: A's effect with the seed as a block; or why it cannot be fitted."""
    if runs.seed.nunique() < 2 or runs.groupby("seed").arm.nunique().max() < 2:
        return {"fitted": False, "why": "no seed holds runs of both arms"}
    import warnings

    import statsmodels.formula.api as smf

    data = runs.assign(is_a=(runs.arm == a).astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = smf.mixedlm("acc ~ is_a", data, groups=data["seed"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as e:
            return {"fitted": False, "why": str(e).splitlines()[0]}
    lo, hi = fit.conf_int(alpha).loc["is_a"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return {"fitted": False, "why": "no variance left to estimate the effect's interval"}
    return {"fitted": True, "effect": float(fit.params["is_a"]), "ci": [float(lo), float(hi)],
            "p": float(fit.pvalues["is_a"]), "seed_variance": float(fit.cov_re.iloc[0, 0]),
            "converged": bool(fit.converged)}


def decide(r: Result, cfg: Analysis) -> str:
    p = r.p_adjusted if r.p_adjusted is not None else r.p
    if not math.isfinite(p):
        return "not testable (no variance between head sets)"
    if p < cfg.alpha and r.ci[0] > 0:
        return "advantage"
    if p < cfg.alpha and r.ci[1] < 0:
        return "disadvantage"
    margin = cfg.sesoi / 100  # points -> the metric's fraction
    if -margin < r.ci_equivalence[0] and r.ci_equivalence[1] < margin:
        return "no practically relevant advantage"
    return "unresolved"


def analyse(runs: pd.DataFrame, tasks: list[str], cfg: Analysis) -> tuple[list[Result], list[str]]:
    """Every declared comparison on every task, corrected over the family, each with its decision; and the
    comparisons that cannot be tested, with why (they are not in the family that is corrected)."""
    from statsmodels.stats.multitest import multipletests

    sets = head_sets(runs)
    results, skipped = [], []
    for task in tasks:
        for c in cfg.comparisons:
            r = compare(sets, runs, task, c.a, c.b, cfg)
            if r is not None:
                r.in_family = c.family
                results.append(r)
                continue
            n = {arm: int(((sets.task == task) & (sets.arm == arm)).sum()) for arm in (c.a, c.b)}
            if n[c.a] or n[c.b]:
                skipped.append(f"{task}: {c.a} − {c.b} not testable ({n[c.a]} : {n[c.b]} replicates; B needs at "
                               "least 2)")
    family = [r for r in results if r.in_family and math.isfinite(r.p)]
    if family and cfg.correction != "none":
        adjusted = multipletests([r.p for r in family], alpha=cfg.alpha, method=cfg.correction)[1]
        for r, p in zip(family, adjusted):
            r.p_adjusted = float(p)
    for r in results:
        r.decision = decide(r, cfg)
    return results, skipped
