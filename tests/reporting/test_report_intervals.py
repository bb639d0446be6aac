"""Honest uncertainty in the comparison report: intervals that cover the seeds and the test
examples, no verdict from a zero-width interval, Benjamini-Hochberg control over the
comparisons of a modality, the seed-only fallback, and the time-to-accuracy summary rule
(checkpoints chosen on validation). Real computations on small synthetic data, fixed seeds."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from d2v_pipeline.evaluation.metrics import classification_metrics
from d2v_pipeline.reporting import gather_inputs, report_config_from_dict
from d2v_pipeline.reporting.stats import (
    INTERVALS_COVER_TEXT,
    SEEDS,
    TEST_EXAMPLES,
    ArmPredictions,
    Comparison,
    Interval,
    TestSet,
    apply_fdr,
    benjamini_hochberg,
    chance_summary,
    compare_methods,
    metrics_dict,
    paired_difference,
    summarise_report,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = report_config_from_dict({})


# ---------------------------------------------------------------- helpers


def _wrong(labels: np.ndarray, rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """A wrong class for every example."""
    return (labels + rng.integers(1, num_classes, labels.size)) % num_classes


def _tables(arms: dict[tuple[str, str], dict[int, np.ndarray]], labels: np.ndarray, c: int):
    """(eval_metrics, test_predictions) of one modality ("image") at fraction 1.0 from
    per-arm, per-seed predictions; the metrics are computed from the predictions."""
    metric_rows, frames = [], []
    for (method, protocol), by_seed in arms.items():
        for seed, pred in by_seed.items():
            m = classification_metrics(labels, pred, c)
            for metric in ("accuracy", "macro_f1"):
                metric_rows.append(
                    {
                        "modality": "image",
                        "method": method,
                        "fraction": 1.0,
                        "seed": seed,
                        "protocol": protocol,
                        "metric": metric,
                        "value": m[metric],
                    }
                )
            frames.append(
                pd.DataFrame(
                    {
                        "modality": "image",
                        "method": method,
                        "protocol": protocol,
                        "fraction": 1.0,
                        "seed": seed,
                        "example": np.arange(labels.size),
                        "label": labels,
                        "prediction": pred,
                    }
                )
            )
    return pd.DataFrame(metric_rows), pd.concat(frames, ignore_index=True)


def _only(comparisons, metric="accuracy", baseline="scratch", method="data2vec") -> Comparison:
    (c,) = [
        c for c in comparisons if (c.metric, c.baseline, c.method) == (metric, baseline, method)
    ]
    return c


def _deterministic_arms(rng, labels, c, skill_a=0.80, skill_b=0.72, seeds=(0, 1, 2)):
    """100 % labels with a deterministic probe: every seed predicts exactly the same."""
    n = labels.size
    pa = np.where(rng.random(n) < skill_a, labels, _wrong(labels, rng, c))
    pb = np.where(rng.random(n) < skill_b, labels, _wrong(labels, rng, c))
    return {
        ("data2vec", "probe_final"): {s: pa for s in seeds},
        ("scratch", "probe_final"): {s: pb for s in seeds},
    }


# ---------------------------------------------------------------- zero width, no verdict


def test_identical_seed_differences_without_predictions_give_no_verdict():
    # the case: +0.8 points on every seed, no test predictions -> "CI 0.8 to 0.8"
    a = {0: 0.712, 1: 0.712, 2: 0.712}
    b = {0: 0.704, 1: 0.704, 2: 0.704}
    iv = paired_difference(a, b)
    assert iv.zero_width and iv.degenerate and iv.available
    assert iv.covers == (SEEDS,) and not iv.covers_test and iv.n_test is None
    assert math.isnan(iv.p_value)
    c = Comparison("image", "accuracy", 1.0, "probe_final", "data2vec", "scratch",
                   "probe_final", iv, 0.712, 0.0, 0.704, 0.0)  # fmt: skip
    (c,) = apply_fdr([c], 0.05)
    assert c.verdict == "n/a"
    assert "zero-width" in c.verdict_reason and "no per-example test" in c.verdict_reason
    # the same through the report summary (the fixture-shaped path compose.py uses)
    rows = [
        {"modality": "image", "method": m, "fraction": 1.0, "seed": s,
         "protocol": "probe_final", "metric": "accuracy", "value": v}
        for m, v in (("data2vec", 0.712), ("scratch", 0.704)) for s in (0, 1, 2)
    ]  # fmt: skip
    summary = summarise_report(gather_inputs({"image.eval_metrics": pd.DataFrame(rows)}), CONFIG)
    c = _only(summary.modalities["image"].comparisons)
    assert c.verdict == "n/a" and c.interval.zero_width
    assert not summary.modalities["image"].has_test_predictions


def test_identical_predictions_give_a_zero_width_interval_and_no_verdict():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 300)
    same = np.where(rng.random(300) < 0.7, labels, _wrong(labels, rng, 4))
    arms = {
        ("data2vec", "probe_final"): {s: same for s in (0, 1, 2)},
        ("scratch", "probe_final"): {s: same for s in (0, 1, 2)},
    }
    metrics, preds = _tables(arms, labels, 4)
    for c in compare_methods(metrics, "image", CONFIG, preds):
        assert c.interval.covers == (SEEDS, TEST_EXAMPLES)
        assert c.interval.zero_width and c.interval.mean == 0.0
        assert c.verdict == "n/a"
        assert "same test examples" in c.verdict_reason


def test_identical_seed_differences_but_different_predictions_give_a_real_interval():
    rng = np.random.default_rng(2)
    n, c = 400, 5
    labels = rng.integers(0, c, n)
    arms = _deterministic_arms(rng, labels, c)
    metrics, preds = _tables(arms, labels, c)
    comps = compare_methods(metrics, "image", CONFIG, preds)
    acc, f1 = _only(comps, "accuracy"), _only(comps, "macro_f1")
    for comp in (acc, f1):
        iv = comp.interval
        assert iv.covers == (SEEDS, TEST_EXAMPLES) and iv.n_test == n and iv.n_seeds == 3
        assert iv.se_seeds == 0.0 and iv.se_test > 0
        assert iv.width > 0.02 and not iv.zero_width
        assert iv.low < iv.mean < iv.high
    # accuracy: the closed-form paired bootstrap variance, df = n - 1, and McNemar's exact
    # test (one seed's worth of data) for the p-value
    ca = arms[("data2vec", "probe_final")][0] == labels
    cb = arms[("scratch", "probe_final")][0] == labels
    x = ca.astype(float) - cb
    half = stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)
    assert acc.interval.mean == pytest.approx(x.mean())
    assert (acc.interval.low, acc.interval.high) == pytest.approx(
        (x.mean() - half, x.mean() + half)
    )
    assert acc.interval.p_method == "mcnemar_exact"
    discordant_a, discordant_b = int((ca & ~cb).sum()), int((~ca & cb).sum())
    p = stats.binomtest(discordant_a, discordant_a + discordant_b, 0.5).pvalue
    assert acc.interval.p_value == pytest.approx(p)
    assert f1.interval.p_method == "t"
    assert "test-set sampling (paired bootstrap over 400 test examples)" in acc.interval.covers_text


# ---------------------------------------------------------------- the bootstrap itself


def test_macro_f1_bootstrap_matches_a_plain_loop_over_replicates():
    rng = np.random.default_rng(3)
    n, c = 90, 6
    labels = rng.integers(0, c, n)
    preds = {
        arm: {s: np.where(rng.random(n) < p, labels, _wrong(labels, rng, c)) for s in (0, 1)}
        for arm, p in (("a", 0.7), ("b", 0.6))
    }
    ts = TestSet(labels, num_classes=c, n_boot=200, seed=11)
    pa, pb = ArmPredictions(ts, preds["a"]), ArmPredictions(ts, preds["b"])
    fast = np.mean([pa.f1_replicates[s] for s in (0, 1)], axis=0) - np.mean(
        [pb.f1_replicates[s] for s in (0, 1)], axis=0
    )
    # the same resamples, one replicate at a time, with the evaluation's own metric code
    idx = np.random.default_rng(11).integers(0, n, size=(200, n))
    slow = []
    for rows in idx:
        score = {
            arm: np.mean([classification_metrics(labels[rows], p[rows], c)["macro_f1"]
                          for p in by_seed.values()])
            for arm, by_seed in preds.items()
        }  # fmt: skip
        slow.append(score["a"] - score["b"])
    assert fast == pytest.approx(np.array(slow), abs=1e-12)
    # the macro-F1 interval's test component is the spread of those replicates
    a = {s: pa.score(s, "macro_f1") for s in (0, 1)}
    b = {s: pb.score(s, "macro_f1") for s in (0, 1)}
    iv = paired_difference(a, b, predictions=(pa, pb), metric="macro_f1")
    assert iv.se_test == pytest.approx(np.std(slow, ddof=1), rel=1e-9)
    # and the accuracy closed form agrees with the bootstrap it replaces (MC error ~10 %)
    a = {s: pa.score(s, "accuracy") for s in (0, 1)}
    b = {s: pb.score(s, "accuracy") for s in (0, 1)}
    iv = paired_difference(a, b, predictions=(pa, pb), metric="accuracy")
    boot = {
        arm: np.mean([(p == labels)[idx].mean(axis=1) for p in by_seed.values()], axis=0)
        for arm, by_seed in preds.items()
    }
    assert iv.se_test == pytest.approx((boot["a"] - boot["b"]).std(ddof=1), rel=0.2)


def _simulate(delta: float, n_sets: int, seed: int) -> tuple[float, float]:
    """Share of simulated datasets called different (CI excludes 0 and p <= 0.05) by the
    combined interval and by the old seed-only interval. Each dataset: a fresh test set of
    500 examples; arm A right with probability 0.70 + delta, arm B with 0.70 (independently
    per example); 3 seeds, each redrawing 10 % of every arm's per-example outcomes."""
    rng = np.random.default_rng(seed)
    n, seeds = 500, (0, 1, 2)
    called = {"combined": 0, "seeds": 0}
    for _ in range(n_sets):
        labels = rng.integers(0, 2, n)
        by_arm = {}
        for arm, p in (("a", 0.70 + delta), ("b", 0.70)):
            base = rng.random(n) < p
            runs = {}
            for s in seeds:
                right = base.copy()
                redraw = rng.random(n) < 0.10
                right[redraw] = rng.random(int(redraw.sum())) < p
                runs[s] = np.where(right, labels, 1 - labels)
            by_arm[arm] = runs
        ts = TestSet(labels, num_classes=2)
        pa, pb = ArmPredictions(ts, by_arm["a"]), ArmPredictions(ts, by_arm["b"])
        a = {s: pa.score(s, "accuracy") for s in seeds}
        b = {s: pb.score(s, "accuracy") for s in seeds}
        for name, preds in (("combined", (pa, pb)), ("seeds", None)):
            iv = paired_difference(a, b, 0.95, predictions=preds)
            if not iv.degenerate and (iv.low > 0 or iv.high < 0) and iv.p_value <= 0.05:
                called[name] += 1
    return called["combined"] / n_sets, called["seeds"] / n_sets


def test_a_known_difference_is_detected_and_no_difference_rarely_is():
    power, _ = _simulate(delta=0.10, n_sets=150, seed=5)
    false_positive, seed_only_false_positive = _simulate(delta=0.0, n_sets=150, seed=6)
    # a 10-point gap on 500 examples: z ~ 3.4, power ~ 0.9
    assert power >= 0.75, power
    # no gap: about alpha = 0.05 (binomial sd ~ 0.018 over 150 datasets)
    assert false_positive <= 0.10, false_positive
    # the old interval over seeds alone ignores the test set and calls far too many
    assert seed_only_false_positive >= 0.25, seed_only_false_positive


# ---------------------------------------------------------------- multiple comparisons


def test_benjamini_hochberg_matches_a_hand_checked_example():
    p = [0.01, 0.04, 0.03, 0.005, math.nan, 0.5]
    # m = 5 finite p-values; sorted 0.005, 0.01, 0.03, 0.04, 0.5 -> m p / rank = 0.025,
    # 0.025, 0.05, 0.05, 0.5 -> running minimum from the top: the same
    q = benjamini_hochberg(p)
    expected = [0.025, 0.05, 0.05, 0.025, math.nan, 0.5]
    np.testing.assert_allclose(q, expected, equal_nan=True)
    finite = np.isfinite(q)
    assert (q[finite] >= np.asarray(p)[finite]).all()
    order = np.argsort(np.asarray(p)[finite])
    assert (np.diff(q[finite][order]) >= 0).all()  # monotone in p
    ref = stats.false_discovery_control(np.asarray(p)[finite], method="bh")
    np.testing.assert_allclose(q[finite], ref)
    assert np.isnan(benjamini_hochberg([math.nan])).all()


def _comparison(p_value: float, mean: float, half: float, baseline: str) -> Comparison:
    iv = Interval(mean, mean - half, mean + half, 3, "paired", p_value=p_value)
    return Comparison("text", "accuracy", 0.1, "probe_final", "data2vec", baseline,
                      "probe_final", iv, 0.7, 0.01, 0.6, 0.01)  # fmt: skip


def test_a_marginal_win_does_not_survive_fdr_control_among_many_comparisons():
    marginal = _comparison(0.04, 0.03, 0.028, "b0")
    nulls = [_comparison(0.5 + i / 100, 0.0, 0.05, f"b{i + 1}") for i in range(9)]
    alone = apply_fdr([marginal], 0.05)[0]
    assert alone.verdict == "win" and alone.q_value == pytest.approx(0.04)
    many = apply_fdr([marginal, *nulls], 0.05)
    assert many[0].q_value == pytest.approx(0.4) and many[0].fdr_family == 10
    assert many[0].excludes_zero and many[0].verdict == "tie"
    assert "does not survive false-discovery-rate control over 10" in many[0].verdict_reason
    chance = chance_summary(many, "accuracy")
    assert (chance.n_comparisons, chance.n_tested, chance.n_ci_excludes_zero) == (10, 10, 1)
    assert chance.expected_by_chance == pytest.approx(0.5)
    assert chance.n_survive_fdr == 0
    assert chance.p_any_by_chance == pytest.approx(1 - 0.95**10)
    text = chance.sentence()
    assert text.startswith("10 comparisons; if no method differed, chance alone would put")
    assert "about 0.5 of them clear of zero at the 5% level" in text


def test_summary_counts_chance_wins_per_modality_and_writes_q_values():
    rng = np.random.default_rng(7)
    n, c = 500, 3
    labels = rng.integers(0, c, n)
    arms = _deterministic_arms(rng, labels, c, skill_a=0.85, skill_b=0.60)
    pm = np.where(rng.random(n) < 0.84, labels, _wrong(labels, rng, c))
    arms[("masked_recon", "probe_final")] = {s: pm for s in (0, 1, 2)}
    metrics, preds = _tables(arms, labels, c)
    inputs = gather_inputs({"image.eval_metrics": metrics})
    inputs.modalities["image"].test_predictions = preds
    summary = summarise_report(inputs, CONFIG)
    ms = summary.modalities["image"]
    assert ms.n_test == n and summary.n_test("image") == n and ms.has_test_predictions
    win = _only(ms.comparisons)
    assert win.verdict == "win" and win.q_value <= 0.05 and win.interval.covers_test
    chance = ms.chance("accuracy", fraction=1.0)
    assert chance.n_comparisons == 3 and chance.n_wins >= 1  # incl. masked_recon - scratch
    data = metrics_dict(summary, inputs)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    delta = data["image"]["deltas"]["data2vec_minus_scratch"]["probe_final"]["frac_1"]
    assert delta["n_test"] == n and delta["covers"] == "seeds+test examples"
    assert delta["verdict"] == "win" and delta["q_value"] >= delta["p_value"]
    assert delta["ci_low"] > 0
    assert data["image"]["test_set"] == {"n_test": n}


# ---------------------------------------------------------------- seed-only fallback


def test_seed_only_fallback_when_predictions_are_missing_for_an_arm():
    rng = np.random.default_rng(8)
    n, c = 200, 3
    labels = rng.integers(0, c, n)
    arms = {
        (m, "probe_final"): {
            s: np.where(rng.random(n) < p, labels, _wrong(labels, rng, c)) for s in (0, 1, 2)
        }
        for m, p in (("data2vec", 0.8), ("scratch", 0.6))
    }
    metrics, preds = _tables(arms, labels, c)
    only_data2vec = preds[preds["method"] == "data2vec"]
    c_acc = _only(compare_methods(metrics, "image", CONFIG, only_data2vec))
    iv = c_acc.interval
    assert iv.covers == (SEEDS,) and iv.n_test is None and not iv.covers_test
    assert "no test predictions for scratch/probe_final" in iv.note
    assert "not test-set sampling" in iv.covers_text
    # exactly the classical paired t-interval over seeds
    a = metrics[(metrics["method"] == "data2vec") & (metrics["metric"] == "accuracy")]
    b = metrics[(metrics["method"] == "scratch") & (metrics["metric"] == "accuracy")]
    ci = stats.ttest_rel(a["value"], b["value"]).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high))
    assert iv.p_value == pytest.approx(stats.ttest_rel(a["value"], b["value"]).pvalue)
    # with all predictions the standard error adds the test set (the Welch-Satterthwaite df
    # rises too, so the interval itself need not be wider)
    full = _only(compare_methods(metrics, "image", CONFIG, preds)).interval
    assert full.covers_test and full.se_seeds == pytest.approx(iv.se_seeds)
    assert full.se == pytest.approx(math.hypot(iv.se, full.se_test)) and full.se > iv.se
    assert full.dof > iv.dof == 2


def test_predictions_that_disagree_with_eval_metrics_are_not_used():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 100)
    arms = _deterministic_arms(rng, labels, 2)
    metrics, preds = _tables(arms, labels, 2)
    shuffled = preds.copy()
    flip = (shuffled["method"] == "scratch") & (shuffled["example"] < 30)
    shuffled.loc[flip, "prediction"] = 1 - shuffled.loc[flip, "prediction"]
    iv = _only(compare_methods(metrics, "image", CONFIG, shuffled)).interval
    assert iv.covers == (SEEDS,)
    assert "eval_metrics says" in iv.note


def test_the_cover_text_names_what_is_and_is_not_covered():
    text = INTERVALS_COVER_TEXT
    for phrase in ("the seeds", "test examples", "paired bootstrap", "Not covered: the "
                   "pretraining run", "false-discovery-rate"):  # fmt: skip
        assert phrase in text


# ---------------------------------------------------------------- time to accuracy


def _benchmark_module():
    path = ROOT / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("time_to_accuracy_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _point(t: float, val: float, test: float) -> dict:
    probe = {"val_accuracy": val, "test_accuracy": test}
    return {"train_s": t, "final": dict(probe), "top_k_mean": dict(probe)}


def test_time_to_accuracy_summary_selects_on_validation_and_reports_test(tmp_path):
    bench = _benchmark_module()
    runs = [
        # v1: best validation at 60 s (0.60), best TEST at 120 s (0.70) -- must not be picked
        {"modality": "image", "method": "data2vec",
         "points": [_point(30, 0.50, 0.52), _point(60, 0.60, 0.58), _point(120, 0.59, 0.70)]},
        # v2: validation first reaches 0.60 at 60 s; its best validation is at 120 s
        {"modality": "image", "method": "data2vec2",
         "points": [_point(30, 0.55, 0.66), _point(60, 0.61, 0.57), _point(120, 0.65, 0.64)]},
    ]  # fmt: skip
    random_init = {"image": {f: {"val_accuracy": 0.1, "test_accuracy": 0.12}
                             for f in ("final", "top_k_mean")}}  # fmt: skip
    row = bench.summarise(runs, random_init)["image"]["final/test_accuracy"]
    assert row["selected_on"] == "val_accuracy"
    assert row["best_data2vec"] == 0.58 and row["best_data2vec_train_s"] == 60
    assert row["best_data2vec2"] == 0.64 and row["best_data2vec2_val"] == 0.65
    assert row["v1_best_val"] == 0.60 and row["v1_best"] == 0.58
    assert row["v1_time_to_best_s"] == 60 and row["v2_time_to_v1_best_s"] == 60
    assert row["v2_over_v1_time"] == 1.0 and row["v2_at_v1_best"] == 0.57
    assert row["random_init"] == 0.12
    val_row = bench.summarise(runs, random_init)["image"]["final/val_accuracy"]
    assert val_row["best_data2vec"] == 0.60 and val_row["v2_time_to_v1_best_s"] == 60
    # --resummarise rewrites only the summary of an existing file
    path = tmp_path / "tta.json"
    path.write_text(json.dumps({"runs": runs, "random_init": random_init, "summary": {},
                                "finished": "x"}))  # fmt: skip
    doc = bench.resummarise(path)
    on_disk = json.loads(path.read_text())
    assert on_disk == doc and on_disk["finished"] == "x"
    assert on_disk["summary"]["image"]["final/test_accuracy"] == row
    assert "validation" in on_disk["summary_rule"]


def test_committed_time_to_accuracy_summary_follows_the_validation_rule():
    bench = _benchmark_module()
    doc = json.loads((ROOT / "benchmarks" / "results" / "time_to_accuracy.json").read_text())
    assert doc["summary"] == json.loads(
        json.dumps(bench.summarise(doc["runs"], doc["random_init"]))
    )
