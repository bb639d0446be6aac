"""Statistics of the report: means and spreads over seeds, best cells, paired differences
with intervals over the seeds and the test set, false-discovery-rate control, verdicts, and
the DVC metrics and label-efficiency tables. Scores stay in 0..1 (the renderers use x100).

What the intervals cover, as the report says it: :data:`INTERVALS_COVER_TEXT`. How
:func:`paired_difference` builds one for arms A and B with per-seed scores a_s and b_s:

* estimate: ``mean_s (a_s - b_s)`` over the n paired seeds;
* seed component: ``V_seed = s_d^2 / n`` with n - 1 degrees of freedom (Welch's two
  components when the seeds do not pair up);
* test component ``V_test``: the variance of the estimate when the test examples are
  resampled with replacement, the same resamples for every seed and both arms. For accuracy
  in closed form, ``var_i(mean_s correct_A[s, i] - mean_s correct_B[s, i]) / N``; macro-F1
  is bootstrapped (``BOOTSTRAP_REPLICATES`` resamples, fixed seed). The sum counts the
  example-by-seed noise twice: conservative, at worst sqrt(2) too wide;
* interval ``mean +- t_{(1+c)/2, df} sqrt(V_seed + V_test)`` with Welch-Satterthwaite df
  (N - 1 for the test component); the p-value is the same t test's. With few seeds the
  larger df can make it narrower than the seed-only t-interval.

When each arm predicts the same on every seed (100 % labels, deterministic probe),
``V_seed = 0`` and accuracy's p-value is McNemar's exact test. One seed per arm: no interval.
A win or loss (:attr:`Comparison.verdict`) needs an interval of positive width that excludes
0 and a Benjamini-Hochberg q-value <= ``1 - confidence`` over the modality's comparisons of
that metric; else a tie, or n/a without an interval or with a zero-width one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from d2v_pipeline.reporting.config import ReportConfig
from d2v_pipeline.reporting.inputs import ReportInputError, ReportInputs

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("modality", "protocol", "method", "fraction", "metric", "mean", "std", "n_seeds")
LABEL_EFFICIENCY_COLUMNS = (*SUMMARY_COLUMNS[:4], "accuracy_mean", "accuracy_std", "n_seeds")
PREDICTION_COLUMNS = ("method", "protocol", "fraction", "seed", "example", "label", "prediction")
SEEDS, TEST_EXAMPLES = "seeds", "test examples"  # what an interval can cover
PREDICTION_METRICS = ("accuracy", "macro_f1")  # recomputable from per-example predictions
BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED = 1000, 20240531  # macro-F1's paired bootstrap
PREDICTION_TOLERANCE = 1e-4  # recomputed per-seed score vs eval_metrics

INTERVALS_COVER_TEXT = (
    "Each difference between two methods is the mean, over evaluation seeds, of the per-seed "
    "paired difference on the same test split. Its interval adds two sources of variation: "
    "the seeds (which training examples are labelled, one draw per seed below 100 % labels, "
    "and the classifier's initialisation and data order), estimated from the spread of the "
    "per-seed differences; and the test examples (which examples happen to be in the test "
    "split), estimated by a paired bootstrap over test examples that resamples the same "
    "examples for every seed and both methods. Not covered: the pretraining run. Each method "
    "is pretrained once, so another pretraining seed could move all of that method's numbers "
    "together. Where per-example test predictions are missing, the interval covers the seeds "
    "only and says so. A zero-width interval supports no verdict, and a win or loss must also "
    "survive Benjamini-Hochberg false-discovery-rate control over all comparisons of a "
    "modality and metric."
)


def ordered(names: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """Unique ``names`` with the ``preferred`` ones first (in that order), the rest sorted."""
    unique = set(names)
    head = [n for n in preferred if n in unique]
    return head + sorted(unique - set(head))


def fraction_label(fraction: float) -> str:
    """0.1 -> '10%', 0.01 -> '1%', 0.125 -> '12.5%'."""
    return f"{fraction * 100:.6g}%"


def fraction_key(fraction: float) -> str:
    """The metrics.json key of a label fraction: 0.1 -> 'frac_0.1'."""
    return f"frac_{fraction:g}"


def _fkey(fraction: Any) -> Any:
    """Label fraction(s) as lookup keys, rounded so that one fraction from two tables match."""
    return np.round(fraction, 9)


def summarise_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (NaN with one seed) and seed count per cell and metric."""
    if metrics.empty:
        return pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    keys = ["modality", "protocol", "method", "fraction", "metric"]
    grouped = metrics.groupby(keys, sort=True)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out[list(SUMMARY_COLUMNS)]


# ---------------------------------------------------------------- intervals


def describe_covers(covers: Sequence[str], n_test: int | None = None) -> str:
    """What an interval covers (the seeds, maybe the test examples), as a sentence fragment."""
    if SEEDS not in covers:
        return "no interval"
    text = (
        "covers seed-to-seed variation (labelled-subset draw, classifier initialisation and order)"
    )
    if TEST_EXAMPLES in covers:
        over = f"{n_test:,} test examples" if n_test else "the test examples"
        text += f" and test-set sampling (paired bootstrap over {over})"
    else:
        text += "; not test-set sampling (no per-example test predictions)"
    return text + "; not the pretraining run (one per method)"


@dataclass(frozen=True)
class Interval:
    """Mean difference ``a - b`` and its two-sided interval over ``n`` seeds. ``kind``:
    ``paired``, ``welch`` (``n``: the smaller arm) or ``n/a`` (under two seeds per arm, no
    ``low``/``high``). ``covers`` :data:`SEEDS` and maybe :data:`TEST_EXAMPLES` (``n_test``
    of them; ``note`` says why not); ``p_method``: ``t`` or ``mcnemar_exact``."""

    mean: float
    low: float
    high: float
    n: int
    kind: str
    covers: tuple[str, ...] = (SEEDS,)
    n_test: int | None = None
    p_value: float = math.nan
    p_method: str = ""
    se_seeds: float = math.nan
    se_test: float = math.nan
    dof: float = math.nan
    note: str = ""

    @property
    def available(self) -> bool:
        return self.kind != "n/a"

    @property
    def n_seeds(self) -> int:
        return self.n

    @property
    def width(self) -> float:
        return self.high - self.low if self.available else math.nan

    @property
    def se(self) -> float:
        """Standard error of ``mean``, both components (NaN without an interval)."""
        test = 0.0 if math.isnan(self.se_test) else self.se_test
        return math.sqrt(self.se_seeds**2 + test**2) if self.available else math.nan

    @property
    def zero_width(self) -> bool:
        """The interval measured no variation at all, so it supports no verdict."""
        return self.available and not (self.width > 1e-12)

    @property
    def degenerate(self) -> bool:  # no usable interval
        return not self.available or self.zero_width

    @property
    def covers_test(self) -> bool:
        return TEST_EXAMPLES in self.covers

    @property
    def covers_text(self) -> str:
        return describe_covers(self.covers, self.n_test)


@dataclass(eq=False)
class TestSet:
    """One test split: its labels (class ids), the bootstrap resamples all its arms share
    and, from :func:`index_predictions`, each arm's predictions (``arms[(method, protocol,
    fraction)]``, fraction rounded to 9 decimals) and the unusable arms (``problems``)."""

    __test__ = False  # not a pytest class
    labels: np.ndarray
    num_classes: int = 0  # 0: the largest label + 1
    n_boot: int = BOOTSTRAP_REPLICATES
    seed: int = BOOTSTRAP_SEED
    arms: dict[tuple[str, str, float], ArmPredictions] = field(default_factory=dict)
    problems: dict[tuple[str, str, float], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.num_classes = self.num_classes or int(self.labels.max()) + 1

    @property
    def n(self) -> int:
        return self.labels.size

    @cached_property
    def weights(self) -> np.ndarray:
        """(n_boot, n): how often bootstrap replicate r draws test example i. Every arm and
        seed gets the same replicates, so the bootstrap is paired."""
        draws = np.random.default_rng(self.seed).integers(0, self.n, (self.n_boot, self.n))
        return np.stack([np.bincount(row, minlength=self.n) for row in draws]).astype(np.float32)

    def get(self, method: str, protocol: str, fraction: float) -> ArmPredictions | None:
        return self.arms.get((method, protocol, float(_fkey(fraction))))


@dataclass(eq=False)
class ArmPredictions:
    """One arm's per-seed test predictions (``by_seed[s]``: a class id per test example)."""

    test_set: TestSet
    by_seed: dict[int, np.ndarray]

    def correct(self, seed: int) -> np.ndarray:
        return self.by_seed[seed] == self.test_set.labels

    def score(self, seed: int, metric: str) -> float:
        """The metric of one seed, recomputed from its predictions."""
        if metric == "accuracy":
            return float(self.correct(seed).mean())
        if metric != "macro_f1":
            raise ValueError(f"metric {metric!r} cannot be recomputed from predictions")
        c = self.test_set.num_classes
        cm = np.bincount(self.test_set.labels * c + self.by_seed[seed], minlength=c * c)
        cm = cm.reshape(c, c)  # the confusion matrix, rows = true class
        return float(_macro_f1(np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)))

    @cached_property
    def f1_replicates(self) -> dict[int, np.ndarray]:
        """Each seed's macro-F1 on every bootstrap replicate: ``{seed: (n_boot,)}``."""
        ts, seeds = self.test_set, sorted(self.by_seed)
        preds = np.stack([self.by_seed[s] for s in seeds])
        onehot = np.eye(ts.num_classes, dtype=np.float32)
        predicted = onehot[preds]  # (seeds, examples, classes)
        hits = predicted * (preds == ts.labels)[..., None]
        # the class counts of every replicate in one product (float32 sums of counts are
        # exact below 2^24): of the labels (support), each seed's true positives, its predictions
        counts = ts.weights @ np.hstack([onehot[ts.labels], *hits, *predicted])
        counts = counts.reshape(ts.n_boot, -1, ts.num_classes).astype(np.float64)
        support, tp, predicted = np.split(counts, [1, 1 + len(seeds)], axis=1)
        f1 = _macro_f1(tp, support, predicted)  # (n_boot, seeds)
        return {s: f1[:, i] for i, s in enumerate(seeds)}


def _macro_f1(tp: Any, support: Any, predicted: Any) -> Any:
    """Macro-F1 from class counts (last axis), over the classes present in the labels or the
    predictions, as ``evaluation.metrics.macro_f1_from_confusion``."""
    denom = np.asarray(support + predicted, dtype=np.float64)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    return f1.sum(axis=-1) / (denom > 0).sum(axis=-1)


def _seed_variance(values: np.ndarray) -> float:
    """Sample variance, with rounding noise (e.g. 0.712 - 0.704 vs 0.812 - 0.804) set to 0."""
    var = float(values.var(ddof=1))
    return var if var >= 1e-24 else 0.0


def _prediction_problem(
    a: Mapping[int, float],
    b: Mapping[int, float],
    predictions: tuple[ArmPredictions | None, ArmPredictions | None] | None,
    seeds: tuple[list[int], list[int]],
    metric: str,
) -> str:
    """Why the predictions cannot give the test component ("" when they can)."""
    if predictions is None:
        return "no per-example test predictions"
    pa, pb = predictions
    if pa is None or pb is None:
        arm = "either arm" if pa is None and pb is None else "one arm"
        return f"no per-example test predictions for {arm}"
    if pa.test_set is not pb.test_set:
        raise ValueError("both arms' predictions must share one TestSet (the same bootstrap)")
    if metric not in PREDICTION_METRICS:
        return f"{metric} cannot be recomputed from predictions"
    if pa.test_set.n < 2:
        return "fewer than 2 test examples"
    for arm, scores, preds, arm_seeds in zip("AB", (a, b), (pa, pb), seeds, strict=True):
        if missing := [s for s in arm_seeds if s not in preds.by_seed]:
            return f"no test predictions for seed(s) {missing} of arm {arm}"
        for s in arm_seeds:
            if abs((score := preds.score(s, metric)) - scores[s]) > PREDICTION_TOLERANCE:
                return (
                    f"test predictions of arm {arm}, seed {s} give {metric} {score:.6f}, "
                    f"eval_metrics says {scores[s]:.6f}"
                )
    return ""


def paired_difference(
    a: Mapping[int, float],
    b: Mapping[int, float],
    confidence: float = 0.95,
    *,
    predictions: tuple[ArmPredictions | None, ArmPredictions | None] | None = None,
    metric: str = "accuracy",
) -> Interval:
    """Difference ``a - b`` of two per-seed results with a ``confidence`` interval.

    Seeds in both are paired; without two pairs but with >= 2 seeds per arm, Welch. The
    arms' ``predictions`` on one :class:`TestSet` add the test component for ``metric``;
    without them, or when they disagree with ``a``/``b``, the interval is the classical
    paired-t (or Welch) one over the seeds, and ``note`` says why.
    """
    nan = math.nan
    if not a or not b:
        return Interval(nan, nan, nan, 0, "n/a", covers=(), note="no results")
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common])
        mean, n, kind, seeds = float(d.mean()), d.size, "paired", (common, common)
        parts = [(_seed_variance(d) / n, n - 1)]  # (variance, degrees of freedom)
    else:
        va, vb = np.array(list(a.values())), np.array(list(b.values()))
        mean, n, kind, seeds = float(va.mean() - vb.mean()), min(va.size, vb.size), "welch", None
        if n < 2:
            return Interval(
                mean, nan, nan, len(common), "n/a", covers=(), note="fewer than 2 seeds"
            )
        parts = [(_seed_variance(v) / v.size, v.size - 1) for v in (va, vb)]
        seeds = (sorted(a), sorted(b))
    note = _prediction_problem(a, b, predictions, seeds, metric)
    fields: dict[str, Any] = {"se_seeds": math.sqrt(sum(v for v, _ in parts)), "note": note}
    discordant = None
    if not note:
        pa, pb = predictions
        n_test = pa.test_set.n
        if metric == "accuracy":  # the bootstrap variance of a mean, in closed form
            xa = np.mean([pa.correct(s) for s in seeds[0]], axis=0)
            xb = np.mean([pb.correct(s) for s in seeds[1]], axis=0)
            var_test = float((xa - xb).var(ddof=1) / n_test)
        else:  # the variance over the shared bootstrap replicates
            xa = np.mean([pa.f1_replicates[s] for s in seeds[0]], axis=0)
            xb = np.mean([pb.f1_replicates[s] for s in seeds[1]], axis=0)
            var_test = float((xa - xb).var(ddof=1))
        parts.append((var_test, n_test - 1))
        fields.update(covers=(SEEDS, TEST_EXAMPLES), n_test=n_test, se_test=math.sqrt(var_test))
        same = kind == "paired" and all(
            np.array_equal(p.by_seed[s], p.by_seed[common[0]]) for p in (pa, pb) for s in common
        )
        if metric == "accuracy" and same:  # each arm predicts the same on every seed
            ca, cb = pa.correct(common[0]), pb.correct(common[0])
            discordant = int((ca & ~cb).sum()), int((~ca & cb).sum())
    total = sum(v for v, _ in parts)
    if not total > 0:
        return Interval(mean, mean, mean, n, kind, **fields)
    dof = total**2 / sum(v**2 / df for v, df in parts if v > 0)
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * math.sqrt(total)
    if discordant is None:
        p_value, p_method = 2 * stats.t.sf(abs(mean) / math.sqrt(total), dof), "t"
    else:  # one seed's worth of data: McNemar's exact test on the discordant test examples
        p_value, p_method = stats.binomtest(discordant[0], sum(discordant)).pvalue, "mcnemar_exact"
    fields.update(p_value=float(p_value), p_method=p_method, dof=dof)
    return Interval(mean, mean - half, mean + half, n, kind, **fields)


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values; NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    if (ok := np.isfinite(p)).any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


# ---------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Comparison:
    """``method`` (under ``protocol``) minus ``baseline`` (under ``baseline_protocol``);
    ``q_value`` is Benjamini-Hochberg over the ``fdr_family`` comparisons with a p-value of
    the same modality and metric, at level ``alpha``."""

    modality: str
    metric: str
    fraction: float
    protocol: str
    method: str
    baseline: str
    baseline_protocol: str
    interval: Interval
    method_mean: float
    method_std: float
    baseline_mean: float
    baseline_std: float
    q_value: float = math.nan
    alpha: float = 0.05
    fdr_family: int = 0

    @property
    def spread(self) -> float:
        """The larger seed std of the two arms (NaN when neither has two seeds)."""
        stds = [s for s in (self.method_std, self.baseline_std) if not math.isnan(s)]
        return max(stds, default=math.nan)

    @property
    def p_value(self) -> float:
        return self.interval.p_value

    @property
    def excludes_zero(self) -> bool:
        iv = self.interval
        return not iv.degenerate and (iv.low > 0 or iv.high < 0)

    @property
    def survives_fdr(self) -> bool:
        """q <= alpha (p <= alpha without a q-value; True without either)."""
        value = self.q_value if not math.isnan(self.q_value) else self.p_value
        return math.isnan(value) or value <= self.alpha

    @property
    def verdict(self) -> str:
        if self.interval.degenerate:
            return "n/a"
        if not self.excludes_zero or not self.survives_fdr:
            return "tie"
        return "win" if self.interval.low > 0 else "loss"

    @property
    def verdict_reason(self) -> str:
        """Why the verdict is what it is, in words the report can print."""
        iv = self.interval
        if not iv.available:
            return "fewer than 2 seeds per arm: no interval"
        if iv.zero_width and iv.covers_test and iv.mean == 0:
            return (
                "zero-width interval: both arms are right and wrong on exactly the same test "
                "examples on every seed"
            )
        if iv.zero_width and iv.covers_test:
            return (
                "zero-width interval: the per-example difference is the same on every test "
                "example and seed, so there is no variation to measure"
            )
        if iv.zero_width:
            return (
                "zero-width interval: every seed gave the same difference (same labelled examples "
                "and a deterministic classifier) and there are no per-example test predictions "
                "to measure test-set variation"
            )
        if not self.excludes_zero:
            return "the interval spans 0"
        if not self.survives_fdr:
            return (
                f"the interval excludes 0 (p = {self.p_value:.2g}) but the difference does not "
                f"survive false-discovery-rate control over {self.fdr_family} comparisons "
                f"(q = {self.q_value:.2g} > {self.alpha:g})"
            )
        q = f"q = {self.q_value:.2g}" if not math.isnan(self.q_value) else "no q-value"
        return f"the interval excludes 0 and survives false-discovery-rate control ({q})"


def apply_fdr(comparisons: Sequence[Comparison], alpha: float) -> list[Comparison]:
    """The comparisons with ``q_value``/``alpha``/``fdr_family`` set: Benjamini-Hochberg
    over each (modality, metric) family, in the given order."""
    out = list(comparisons)
    for family in {(c.modality, c.metric) for c in out}:
        idx = [i for i, c in enumerate(out) if (c.modality, c.metric) == family]
        q = benjamini_hochberg([out[i].p_value for i in idx])
        m = int(np.isfinite(q).sum())
        for i, qi in zip(idx, q, strict=True):
            out[i] = dataclasses.replace(out[i], q_value=float(qi), alpha=alpha, fdr_family=m)
    return out


@dataclass(frozen=True)
class ChanceSummary:
    """How many calls chance alone would give among some comparisons (with no real
    difference, each test at level ``alpha`` calls one with probability ``alpha``), and how
    many survive FDR control."""

    modality: str
    metric: str
    alpha: float
    n_comparisons: int
    n_tested: int  # with a p-value (no p: n/a or zero width)
    fdr_family: int  # size of the family the q-values were adjusted over
    n_ci_excludes_zero: int
    n_wins: int
    n_losses: int

    @property
    def expected_by_chance(self) -> float:
        """Wins + losses expected by chance alone, without FDR control: m * alpha."""
        return self.n_tested * self.alpha

    @property
    def p_any_by_chance(self) -> float:
        """P(at least one call by chance) for independent tests: 1 - (1 - alpha)^m."""
        return 1 - (1 - self.alpha) ** self.n_tested

    @property
    def n_survive_fdr(self) -> int:
        return self.n_wins + self.n_losses

    def sentence(self) -> str:
        """E.g. "21 comparisons; if no method differed, chance alone would put about 1.1 of
        them clear of zero at the 5% level (half as 'wins'); 3 intervals exclude zero and 2
        survive false-discovery-rate control at q <= 0.05 (2 wins, 0 losses)."."""
        n_excl, n_fdr = self.n_ci_excludes_zero, self.n_survive_fdr
        text = _count(self.n_comparisons, "comparison")
        if self.n_tested != self.n_comparisons:
            text += f" ({self.n_tested} with a usable interval)"
        text += (
            f"; if no method differed, chance alone would put about "
            f"{self.expected_by_chance:.1f} of them clear of zero at the {self.alpha * 100:g}% "
            f"level (half as 'wins'); {_count(n_excl, 'interval')} "
            f"exclude{'s' if n_excl == 1 else ''} zero and {n_fdr} "
            f"survive{'s' if n_fdr == 1 else ''} false-discovery-rate control at "
            f"q <= {self.alpha:g} ({_count(self.n_wins, 'win')}, "
            f"{_count(self.n_losses, 'loss', 'losses')})"
        )
        if self.fdr_family and self.fdr_family != self.n_tested:
            text += f"; q-values adjust over all {self.fdr_family} {self.metric} comparisons"
        return text + "."


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def chance_summary(
    comparisons: Sequence[Comparison],
    metric: str,
    *,
    modality: str | None = None,
    fraction: float | None = None,
    protocols: Sequence[str] | None = None,
    alpha: float | None = None,
) -> ChanceSummary:
    """:class:`ChanceSummary` of the ``metric`` comparisons (optionally of one ``fraction``
    and some ``protocols``); ``alpha`` defaults to the comparisons' FDR level."""
    sel = [
        c
        for c in comparisons
        if c.metric == metric
        and (modality is None or c.modality == modality)
        and (fraction is None or math.isclose(c.fraction, fraction))
        and (protocols is None or c.protocol in protocols)
    ]
    verdicts = [c.verdict for c in sel]
    return ChanceSummary(
        modality=modality or (sel[0].modality if sel else ""),
        metric=metric,
        alpha=alpha if alpha is not None else (sel[0].alpha if sel else 0.05),
        n_comparisons=len(sel),
        n_tested=sum(not math.isnan(c.p_value) for c in sel),
        fdr_family=max((c.fdr_family for c in sel), default=0),
        n_ci_excludes_zero=sum(c.excludes_zero for c in sel),
        n_wins=verdicts.count("win"),
        n_losses=verdicts.count("loss"),
    )


def index_predictions(
    predictions: pd.DataFrame | None,
    name: str = "test_predictions",
    *,
    modality: str | None = None,
    n_boot: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> TestSet | None:
    """The :class:`TestSet` of a per-example table (:data:`PREDICTION_COLUMNS`, optionally
    ``modality``) with one :class:`ArmPredictions` per method x protocol x fraction (None
    without rows). An example with two labels or a duplicate example is an error naming
    ``name``; an evaluation that lacks test examples puts its arm in ``problems`` (its
    comparisons fall back to seed-only intervals)."""
    if predictions is None or len(predictions) == 0:
        return None
    if missing := [c for c in PREDICTION_COLUMNS if c not in predictions.columns]:
        raise ReportInputError(f"{name}: missing column(s) {missing}")
    df = predictions
    if modality is not None and "modality" in df.columns:
        df = df[df["modality"].astype(str) == modality]
    if df.empty:
        return None
    values = df[["seed", "example", "label", "prediction"]].apply(pd.to_numeric, errors="coerce")
    for column, v in values.items():
        if not (np.isfinite(v) & (v % 1 == 0) & (v >= 0)).all():
            raise ReportInputError(f"{name}: column {column!r} must hold non-negative integers")
    seeds, example, label, prediction = values.to_numpy(dtype=np.int64).T
    examples, position = np.unique(example, return_inverse=True)
    labels = np.zeros(examples.size, dtype=np.int64)
    labels[position] = label
    if (two := labels[position] != label).any():
        raise ReportInputError(f"{name}: test example {example[two][0]} has more than one label")
    n, num_classes = examples.size, int(max(labels.max(), prediction.max())) + 1
    test_set = TestSet(labels, num_classes=num_classes, n_boot=n_boot, seed=seed)
    fractions = _fkey(df["fraction"].astype(float))
    keys = [df["method"].astype(str), df["protocol"].astype(str), fractions, seeds]
    for (method, protocol, fraction, s), rows in df.groupby(keys).indices.items():
        arm = (method, protocol, float(fraction))
        if arm in test_set.problems:
            continue
        if np.unique(position[rows]).size != rows.size:
            where = f"{method}/{protocol} at {fraction_label(fraction)} seed {s}"
            raise ReportInputError(f"{name}: {where} has duplicate test examples")
        if rows.size != n:
            test_set.problems[arm] = (
                f"seed {s} has predictions for {rows.size} of {n} test examples"
            )
            test_set.arms.pop(arm, None)
            continue
        pred = np.empty(n, dtype=np.int64)
        pred[position[rows]] = prediction[rows]
        test_set.arms.setdefault(arm, ArmPredictions(test_set, {})).by_seed[int(s)] = pred
    return test_set


def compare_methods(
    metrics: pd.DataFrame,
    modality: str,
    config: ReportConfig,
    predictions: pd.DataFrame | TestSet | None = None,
) -> list[Comparison]:
    """Each focus method (data2vec family) minus every method shown after it, every other
    method minus the reference method (scratch), per metric, protocol and fraction; and every
    method minus each context baseline (raw-input probe) at the same fraction.
    ``predictions`` (a per-example table or :func:`index_predictions` result) add
    the test component; q-values are per metric at level ``1 - confidence``."""
    if metrics.empty:
        return []
    test_set = predictions
    if isinstance(predictions, pd.DataFrame):
        name = f"{modality}.test_predictions"
        test_set = index_predictions(predictions, name, modality=modality)
    per_seed: dict[tuple[str, str, float, str], dict[int, float]] = {}
    for r in metrics.itertuples(index=False):
        key = (str(r.method), str(r.protocol), float(_fkey(r.fraction)), str(r.metric))
        per_seed.setdefault(key, {})[int(r.seed)] = float(r.value)

    def compare(metric: str, fraction: float, arm_a: tuple, arm_b: tuple) -> Comparison:
        key = float(_fkey(fraction))
        a, b = per_seed.get((*arm_a, key, metric), {}), per_seed.get((*arm_b, key, metric), {})
        preds = None
        if test_set is not None:
            preds = (test_set.get(*arm_a, fraction), test_set.get(*arm_b, fraction))
        iv = paired_difference(a, b, config.confidence, predictions=preds, metric=metric)
        if preds is not None and iv.available and not iv.covers_test:  # name the arm to blame
            reasons, missing = [], []
            for arm, p in zip((arm_a, arm_b), preds, strict=True):
                if why := test_set.problems.get((*arm, key)):
                    reasons.append(f"{'/'.join(arm)}: {why}")
                elif p is None:
                    missing.append("/".join(arm))
            if missing:
                reasons.append(f"no test predictions for {', '.join(missing)}")
            pair = f"{'/'.join(arm_a)} vs {'/'.join(arm_b)}"
            iv = dataclasses.replace(iv, note="; ".join(reasons) or f"{pair}: {iv.note}")
        (method, protocol), (baseline, b_protocol) = arm_a, arm_b
        mean_std = (*_mean_std(a), *_mean_std(b))
        return Comparison(
            modality, metric, float(fraction), protocol, method, baseline, b_protocol, iv, *mean_std
        )

    methods = ordered(metrics["method"], config.method_order)
    is_context = metrics["protocol"].isin(config.context_protocols)
    comparisons = []
    for metric in ordered(metrics["metric"], config.metrics):
        main = metrics[~is_context & (metrics["metric"] == metric)]
        context = metrics[is_context & (metrics["metric"] == metric)]
        for protocol in ordered(main["protocol"], config.protocol_order):
            in_protocol = main[main["protocol"] == protocol]
            for fraction in sorted(in_protocol["fraction"].unique()):
                at = np.isclose(in_protocol["fraction"], fraction)
                present = set(in_protocol.loc[at, "method"])
                ctx = context[np.isclose(context["fraction"], fraction)]
                baselines = [
                    (b, p)
                    for p in ordered(ctx["protocol"], config.protocol_order)
                    for b in ordered(ctx.loc[ctx["protocol"] == p, "method"], methods)
                ]
                ref = config.reference_method
                for i, method in enumerate(methods):
                    if method not in present:
                        continue
                    if method in config.focus_methods:
                        targets = [(b, protocol) for b in methods[i + 1 :] if b in present]
                    else:  # every other method against the reference (scratch) only
                        targets = [(ref, protocol)] if ref in present and method != ref else []
                    targets += [(b, p) for b, p in baselines if b != method]
                    comparisons += [
                        compare(metric, fraction, (method, protocol), t) for t in targets
                    ]
    return apply_fdr(comparisons, 1 - config.confidence)


def _mean_std(values: Mapping[int, float]) -> tuple[float, float]:
    v = list(values.values())
    std = float(np.std(v, ddof=1)) if len(v) >= 2 else math.nan
    return (float(np.mean(v)) if v else math.nan), std


# ---------------------------------------------------------------- the report summary


@dataclass
class ModalitySummary:
    """Per-modality results the document and figures need. ``n_test``: test examples (from
    the predictions, else the dataset summary); ``has_test_predictions``: whether intervals
    can cover the test examples; ``prediction_problems``: unusable arms."""

    modality: str
    methods: list[str]
    protocols: list[str]
    fractions: list[float]
    missing_protocols: list[str]
    headline_fraction: float | None
    comparisons: list[Comparison] = field(default_factory=list)
    n_test: int | None = None
    has_test_predictions: bool = False
    prediction_problems: list[str] = field(default_factory=list)

    def chance(
        self,
        metric: str,
        *,
        fraction: float | None = None,
        protocols: Sequence[str] | None = None,
        alpha: float | None = None,
    ) -> ChanceSummary:
        """:func:`chance_summary` of this modality's ``metric`` comparisons."""
        return chance_summary(self.comparisons, metric, modality=self.modality,
                              fraction=fraction, protocols=protocols, alpha=alpha)  # fmt: skip


@dataclass
class ReportSummary:
    """Everything computed from the metrics; figures and the document read this."""

    table: pd.DataFrame
    modalities: dict[str, ModalitySummary]
    config: ReportConfig

    def cells(self, modality: str, metric: str) -> pd.DataFrame:
        t = self.table
        return t[(t["modality"] == modality) & (t["metric"] == metric)]

    def best_cells(self, modality: str, metric: str) -> set[tuple[str, float, str]]:
        """(protocol, fraction, method) of the best mean per protocol x fraction, ties
        included; context protocols (raw-input baselines) are never best."""
        return best_cells(self.cells(modality, metric), self.config.context_protocols)

    def n_test(self, modality: str) -> int | None:
        """Test examples behind every score of ``modality`` (None when unknown)."""
        ms = self.modalities.get(modality)
        return ms.n_test if ms is not None else None


def best_cells(
    cells: pd.DataFrame, context_protocols: Sequence[str] = ()
) -> set[tuple[str, float, str]]:
    """Best mean per (protocol, fraction) among ``cells`` (a summary table slice)."""
    best: set[tuple[str, float, str]] = set()
    cells = cells[~cells["protocol"].isin(context_protocols)]
    for (protocol, fraction), group in cells.groupby(["protocol", "fraction"]):
        top = group["mean"].max()
        for method in group.loc[np.isclose(group["mean"], top, rtol=0, atol=1e-12), "method"]:
            best.add((str(protocol), float(fraction), str(method)))
    return best


def _summary_n_test(summary: Mapping[str, Any] | None) -> int | None:
    """``counts.test`` (ingest's dataset summary) or ``splits.test.n``, if present."""
    for path in (("counts", "test"), ("splits", "test", "n")):
        value: Any = summary or {}
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def summarise_report(inputs: ReportInputs, config: ReportConfig) -> ReportSummary:
    """Summary table over seeds and the comparisons of every modality."""
    frames = [m.eval_metrics for m in inputs.modalities.values() if not m.eval_metrics.empty]
    table = summarise_metrics(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    modalities: dict[str, ModalitySummary] = {}
    for name in ordered(inputs.modalities, ("image", "speech", "text")):
        mi = inputs.modalities[name]
        metrics = mi.eval_metrics
        test_set = index_predictions(mi.test_predictions, f"{name}.test_predictions", modality=name)
        comparisons = compare_methods(metrics, name, config, test_set)
        seed_only = sum(c.interval.available and not c.interval.covers_test for c in comparisons)
        if seed_only:
            why = "some predictions missing or unusable" if test_set else "no test predictions"
            text = "report: %s: %d of %d intervals cover the seeds only (%s)"
            logger.info(text, name, seed_only, len(comparisons), why)
        fractions = sorted(float(f) for f in metrics["fraction"].unique())
        protocols = ordered(metrics["protocol"], config.protocol_order)
        log_target = math.log(config.headline_fraction)  # the closest fraction on a log scale
        headline = min(fractions, key=lambda f: (abs(math.log(f) - log_target), -f), default=None)
        modalities[name] = ModalitySummary(
            modality=name,
            methods=ordered(metrics["method"], config.method_order),
            protocols=protocols,
            fractions=fractions,
            missing_protocols=[p for p in config.expected_protocols if p not in protocols],
            headline_fraction=headline,
            comparisons=comparisons,
            n_test=_summary_n_test(mi.dataset_summary) if test_set is None else test_set.n,
            has_test_predictions=test_set is not None,
            prediction_problems=[
                f"{m}/{p} at {fraction_label(f)}: {why}"
                for (m, p, f), why in sorted(test_set.problems.items() if test_set else [])
            ],
        )
    return ReportSummary(table=table, modalities=modalities, config=config)


def label_efficiency_table(summary: ReportSummary) -> pd.DataFrame:
    """Primary-metric mean/std/n per modality x protocol x method x fraction (for DVC plots)."""
    t = summary.table[summary.table["metric"] == summary.config.primary_metric]
    out = t.rename(columns={"mean": "accuracy_mean", "std": "accuracy_std"})
    types = dict(
        zip(LABEL_EFFICIENCY_COLUMNS, (str, str, str, float, float, float, int), strict=True)
    )
    out = out[list(types)].astype(types).round({"accuracy_mean": 6, "accuracy_std": 6})
    return out.sort_values(["modality", "protocol", "method", "fraction"]).reset_index(drop=True)


def _num(value: Any, digits: int = 6) -> float | None:
    """A JSON-safe rounded float (NaN/inf -> None: strict JSON has no NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def metrics_dict(summary: ReportSummary, inputs: ReportInputs | None = None) -> dict[str, Any]:
    """The compact nested dict for metrics.json (``dvc metrics show``).

    ``{m: {protocol: {method: {"frac_0.1": {"<metric>_mean", "<metric>_std", "n_seeds"}}},
    "deltas": {"<method>_minus_<baseline>": {protocol: {"frac_0.1": {"<metric>_mean",
    "ci_low", "ci_high", "n", "n_test", "p_value", "q_value", "verdict", "covers"}}}},
    "test_set": {"n_test"}, "pretrain": {method: {...}}}}``; deltas are on the primary
    metric, ``n`` counts paired seeds, ``n_test`` the test examples the interval covers (null
    for seeds only), ``covers`` is e.g. ``"seeds+test examples"``.
    """
    out: dict[str, Any] = {}
    primary = summary.config.primary_metric
    for row in summary.table.itertuples(index=False):
        cell = (
            out.setdefault(row.modality, {})
            .setdefault(row.protocol, {})
            .setdefault(row.method, {})
            .setdefault(fraction_key(row.fraction), {})
        )
        cell[f"{row.metric}_mean"] = _num(row.mean)
        cell[f"{row.metric}_std"] = _num(row.std)
        cell["n_seeds"] = max(int(row.n_seeds), cell.get("n_seeds", 0))
    for name, ms in summary.modalities.items():
        if ms.n_test is not None:
            out.setdefault(name, {})["test_set"] = {"n_test": int(ms.n_test)}
        for c in ms.comparisons:
            if c.metric != primary:
                continue
            key = f"{c.method}_minus_{c.baseline}"
            deltas = out.setdefault(name, {}).setdefault("deltas", {}).setdefault(key, {})
            iv = c.interval
            deltas.setdefault(c.protocol, {})[fraction_key(c.fraction)] = {
                f"{primary}_mean": _num(iv.mean),
                "ci_low": _num(iv.low),
                "ci_high": _num(iv.high),
                "n": iv.n,
                "n_test": iv.n_test,
                "p_value": _num(iv.p_value),
                "q_value": _num(c.q_value),
                "verdict": c.verdict,
                "covers": "+".join(iv.covers) or "none",
            }
    for name, mi in (inputs.modalities if inputs is not None else {}).items():
        for method, run in mi.runs.items():
            if run.meta is None:
                continue
            meta = run.meta
            out.setdefault(name, {}).setdefault("pretrain", {})[method] = {
                "collapsed": bool(meta.get("collapsed", False)),
                "final_loss": _num(meta.get("final_loss")),
                "final_target_std": _num(meta.get("final_target_std")),
                "final_pred_std": _num(meta.get("final_pred_std")),
                "wall_time_s": _num(meta.get("wall_time_s"), 2),
            }
    return out
