"""Paired statistics for two sets of runs scored on the same documents with the same seeds.

The runs of one comparison are not independent samples: every seed of a method is scored on the same
documents, so a pooled test over seeds x documents counts each document once per seed. Here the unit of
replication is the document *and* the seed:

- per seed: A's and B's mean measure, their difference, and (for right/wrong measures) an exact McNemar test
  on the documents the two disagree on;
- the mean difference over seeds, with a confidence interval from a clustered bootstrap that resamples the
  seeds and the documents together (the same resampled documents for every resampled seed, as they were
  scored), so the interval carries both sources of variation;
- two tests that do not treat seeds of one document as independent: over documents (each document's
  difference averaged over the seeds; a one-sample t-test, documents being the independent units) and over
  seeds (the per-seed differences; t with seeds - 1 degrees of freedom: honest, and weak with few seeds);
- the minimum detectable effect of each test, the true difference it finds with probability 0.8 at two-sided
  alpha 0.05: over documents, (z_0.975 + z_0.8) x its standard error, which counts only the documents' variance;
  over seeds (or runs), from the run-to-run variance (statsmodels' t-test power): what "no difference" can rule
  out once a rerun with other seeds is part of what the claim is about.

When A's and B's runs do not pair (`compare_groups`: e.g. the circuit's heads at several seeds against heads
drawn at random, each draw its own head set), the documents still pair but the runs are two independent groups:
the interval resamples documents and each side's runs separately, the run-level test is Welch's over the runs'
means (a head set being the unit of replication), and `b_below_a` says how many of B's runs fall below A's mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float
from scipy.stats import binomtest, norm, ttest_1samp, ttest_ind

Matrix = Float[np.ndarray, "seed doc"]
BINARY_MEASURES = ("acc", "exact_match")


@dataclass
class SeedComparison:
    seed: int | None
    a: float  # mean over the documents
    b: float
    difference: float  # a - b
    only_a: int | None = None  # right only in A (right/wrong measures)
    only_b: int | None = None
    mcnemar_p: float | None = None  # exact (binomial) McNemar test


@dataclass
class PairedComparison:
    measure: str  # acc, exact_match (right = 1, wrong = 0) or margin (gold log-likelihood minus the best other)
    n_docs: int
    seeds: list
    a: float  # mean over seeds and documents
    b: float
    difference: float
    ci: tuple[float, float]  # clustered bootstrap, documents and seeds resampled together
    confidence: float
    n_bootstrap: int
    p_documents: float  # t-test over documents of the seed-averaged differences
    p_seeds: float | None  # t-test over the per-seed differences (None with one seed)
    min_detectable: float  # the document-level test's minimum detectable effect (alpha 0.05, power 0.8)
    per_seed: list[SeedComparison] = field(default_factory=list)
    min_detectable_runs: float | None = None  # the seed-level test's, from the per-seed differences' variance
    left_out: list[str] = field(default_factory=list)  # runs with no partner of the same seed on the other side

    def lines(self) -> list[str]:
        return describe(self)


def mcnemar(a: Float[np.ndarray, " doc"], b: Float[np.ndarray, " doc"]) -> tuple[int, int, float]:
    """Right only in A, right only in B, and the exact McNemar p-value (two-sided binomial on the discordant
    documents; 1 when there are none)."""
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return only_a, only_b, (binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0)


def clustered_bootstrap(diff: Matrix, n: int, rng: np.random.Generator) -> Float[np.ndarray, " n"]:
    """`n` bootstrap means of `diff` [seed, doc]: each draws seeds with replacement and documents with
    replacement, the same documents for every drawn seed."""
    n_seeds, n_docs = diff.shape
    out = np.empty(n)
    for i in range(n):
        seeds = rng.integers(0, n_seeds, n_seeds)
        docs = rng.integers(0, n_docs, n_docs)
        out[i] = diff[np.ix_(seeds, docs)].mean()
    return out


def detectable_one_sample(values: Float[np.ndarray, " n"], alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The mean difference a one-sample t-test over `values` (per-seed differences) finds with `power`, from their
    own SD (statsmodels); None with fewer than 2 values or no variance."""
    from statsmodels.stats.power import TTestPower

    if len(values) < 2 or np.std(values) == 0:
        return None
    d = TTestPower().solve_power(nobs=len(values), alpha=alpha, power=power, alternative="two-sided")
    return float(d * np.std(values, ddof=1))


def detectable_two_groups(a: Float[np.ndarray, " n"], b: Float[np.ndarray, " m"], alpha: float = 0.05,
                          power: float = 0.8) -> float | None:
    """The difference of means a two-sample t-test over the runs finds with `power`, from their pooled SD."""
    from statsmodels.stats.power import TTestIndPower

    if len(a) < 2 or len(b) < 2:
        return None
    sd = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / (len(a) + len(b) - 2))
    if sd == 0:
        return None
    d = TTestIndPower().solve_power(nobs1=len(a), ratio=len(b) / len(a), alpha=alpha, power=power)
    return float(d * sd)


def t_test_p(values: Float[np.ndarray, " n"]) -> float | None:
    """Two-sided one-sample t-test of mean 0; None for fewer than 2 values; 1 when all are 0."""
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return 1.0 if values[0] == 0 else 0.0
    return float(ttest_1samp(values, 0.0).pvalue)


def compare_paired(a: Matrix, b: Matrix, seeds: list, measure: str, n_bootstrap: int = 10_000,
                   confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """A against B: `a[s, d]`, `b[s, d]` the measure of seed `seeds[s]` on document d (the same documents)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"a and b must be [seed, doc] of one shape, got {a.shape} and {b.shape}")
    diff = a - b
    per_seed = []
    for s, (ra, rb) in enumerate(zip(a, b)):
        row = SeedComparison(seeds[s], float(ra.mean()), float(rb.mean()), float(ra.mean() - rb.mean()))
        if measure in BINARY_MEASURES:
            row.only_a, row.only_b, row.mcnemar_p = mcnemar(ra, rb)
        per_seed.append(row)
    boot = clustered_bootstrap(diff, n_bootstrap, np.random.default_rng(seed))
    tail = (1 - confidence) / 2
    by_doc = diff.mean(0)
    se_doc = float(by_doc.std(ddof=1) / math.sqrt(len(by_doc))) if len(by_doc) > 1 else float("nan")
    return PairedComparison(
        measure, a.shape[1], list(seeds), float(a.mean()), float(b.mean()), float(diff.mean()),
        (float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))), confidence, n_bootstrap,
        t_test_p(by_doc), t_test_p(diff.mean(1)), float((norm.ppf(0.975) + norm.ppf(0.8)) * se_doc), per_seed,
        detectable_one_sample(diff.mean(1)))


@dataclass
class GroupComparison:
    """A's runs against B's on the same documents, the runs of each side independent draws (no seed pairing)."""

    measure: str
    n_docs: int
    seeds_a: list
    seeds_b: list
    a: float  # mean over runs and documents
    b: float
    difference: float
    ci: tuple[float, float]  # bootstrap: documents, A's runs and B's runs resampled
    confidence: float
    n_bootstrap: int
    p_documents: float  # t-test over documents of (A's run mean - B's run mean)
    p_runs: float | None  # Welch's t-test over the runs' means (None with one run on a side)
    min_detectable: float  # the document-level test's (alpha 0.05, power 0.8)
    runs_a: list[float] = field(default_factory=list)  # each run's mean over the documents
    runs_b: list[float] = field(default_factory=list)
    b_below_a: int = 0  # B's runs whose mean is below A's mean over its runs
    min_detectable_runs: float | None = None  # Welch's over runs, from the runs' own variance

    def lines(self) -> list[str]:
        return describe(self)


def group_bootstrap(a: Matrix, b: Matrix, n: int, rng: np.random.Generator) -> Float[np.ndarray, " n"]:
    """`n` bootstrap values of mean(a) - mean(b): documents drawn with replacement (the same for both sides, as
    they were scored), and each side's runs drawn with replacement on their own."""
    out = np.empty(n)
    for i in range(n):
        docs = rng.integers(0, a.shape[1], a.shape[1])
        ra, rb = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        out[i] = a[np.ix_(ra, docs)].mean() - b[np.ix_(rb, docs)].mean()
    return out


def compare_groups(a: Matrix, b: Matrix, seeds_a: list, seeds_b: list, measure: str, n_bootstrap: int = 10_000,
                   confidence: float = 0.95, seed: int = 0) -> GroupComparison:
    """A against B: `a[i, d]` run i of A on document d, `b[j, d]` run j of B on the same documents."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"a and b must be [run, doc] over the same documents, got {a.shape} and {b.shape}")
    by_doc = a.mean(0) - b.mean(0)
    se_doc = float(by_doc.std(ddof=1) / math.sqrt(len(by_doc))) if len(by_doc) > 1 else float("nan")
    runs_a, runs_b = a.mean(1), b.mean(1)
    p_runs = None
    if len(runs_a) > 1 and len(runs_b) > 1:
        p_runs = 1.0 if np.ptp(np.r_[runs_a, runs_b]) == 0 else float(ttest_ind(runs_a, runs_b, equal_var=False).pvalue)
    boot = group_bootstrap(a, b, n_bootstrap, np.random.default_rng(seed))
    tail = (1 - confidence) / 2
    return GroupComparison(
        measure, a.shape[1], list(seeds_a), list(seeds_b), float(a.mean()), float(b.mean()),
        float(runs_a.mean() - runs_b.mean()),
        (float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))), confidence, n_bootstrap,
        t_test_p(by_doc), p_runs, float((norm.ppf(0.975) + norm.ppf(0.8)) * se_doc),
        runs_a.tolist(), runs_b.tolist(), int((runs_b < runs_a.mean()).sum()), detectable_two_groups(runs_a, runs_b))


def describe(r: "PairedComparison | GroupComparison") -> list[str]:
    """The comparison in lines: per seed (or per run), then the difference, its interval, the tests, and the
    smallest effect each test detects; the runs left out, if any."""
    points = 100 if r.measure != "margin" else 1  # right/wrong measures in percentage points
    unit = " points" if points == 100 else " nats"
    lines = []
    if hasattr(r, "per_seed"):
        for s in r.per_seed:
            test = f"; right only in A {s.only_a}, only in B {s.only_b}, exact McNemar p = {s.mcnemar_p:.4f}" \
                if s.mcnemar_p is not None else ""
            lines.append(f"seed {s.seed}: A {points * s.a:.2f}, B {points * s.b:.2f}, "
                         f"A - B {points * s.difference:+.2f}{test}")
        runs, resampled, level = f"{len(r.seeds)} seed(s)", "documents and seeds", "seeds"
        p_runs = "over seeds " + ("n/a (one seed)" if r.p_seeds is None else f"{r.p_seeds:.4f}")
    else:
        for side, seeds, means in (("A", r.seeds_a, r.runs_a), ("B", r.seeds_b, r.runs_b)):
            lines.append(f"{side}: " + ", ".join(f"seed {s} {points * m:.2f}" for s, m in zip(seeds, means)))
        lines.append(f"{r.b_below_a} of B's {len(r.runs_b)} runs are below A's mean")
        runs, resampled, level = f"{len(r.runs_a)} and {len(r.runs_b)} unpaired runs", "documents and each side's " \
                                                                                         "runs", "runs"
        p_runs = "over runs (Welch) " + ("n/a (one run)" if r.p_runs is None else f"{r.p_runs:.4f}")
    lo, hi = r.ci
    runs_mde = "n/a" if r.min_detectable_runs is None else f"{points * r.min_detectable_runs:.2f}{unit}"
    lines.append(f"{r.measure}, {runs} x {r.n_docs} documents: A - B = {points * r.difference:+.2f}{unit}, "
                 f"{100 * r.confidence:.0f} % interval [{points * lo:+.2f}, {points * hi:+.2f}] ({resampled} "
                 f"resampled, {r.n_bootstrap} draws); p over documents {r.p_documents:.4f}, {p_runs}; smallest "
                 f"effect detected with power 0.8 over {level} {runs_mde}, over documents alone "
                 f"{points * r.min_detectable:.2f}{unit} (the documents' variance only)")
    if getattr(r, "left_out", None):
        lines.append(f"left out, their seed has no partner on the other side: {', '.join(r.left_out)}")
    return lines
