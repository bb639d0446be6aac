"""Statistics of the report: seed means/stds, best cells, confidence intervals, verdicts,
metrics.json and the label-efficiency table, checked against independent numpy/scipy code."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from d2v_pipeline.reporting import (
    best_cells,
    gather_inputs,
    label_efficiency_table,
    metrics_dict,
    paired_difference,
    report_config_from_dict,
    summarise_metrics,
    summarise_report,
    verdict_sentence,
)


def test_paired_interval_matches_an_independent_t_interval():
    a = {0: 0.70, 1: 0.72, 2: 0.75}
    b = {0: 0.60, 1: 0.65, 2: 0.66}
    d = np.array([0.10, 0.07, 0.09])
    half = stats.t.ppf(0.975, df=2) * d.std(ddof=1) / np.sqrt(3)
    iv = paired_difference(a, b, 0.95)
    assert iv.kind == "paired" and iv.n == 3
    assert iv.mean == pytest.approx(d.mean())
    assert (iv.low, iv.high) == pytest.approx((d.mean() - half, d.mean() + half))
    # and the same as scipy's paired t-test interval
    ci = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high))


def test_interval_pairs_only_common_seeds_and_respects_the_level():
    a = {0: 0.5, 1: 0.6, 2: 0.55, 7: 0.9}
    b = {0: 0.4, 1: 0.45, 2: 0.5}
    d = np.array([0.1, 0.15, 0.05])
    iv90 = paired_difference(a, b, 0.90)
    half = stats.t.ppf(0.95, df=2) * d.std(ddof=1) / np.sqrt(3)
    assert iv90.n == 3
    assert (iv90.low, iv90.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert paired_difference(a, b, 0.99).high > iv90.high


def test_unpaired_seeds_fall_back_to_welch():
    a = {0: 0.70, 1: 0.74, 2: 0.71}
    b = {10: 0.60, 11: 0.66}
    iv = paired_difference(a, b)
    ci = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).confidence_interval()
    assert iv.kind == "welch"
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high))


def test_single_seed_has_no_interval():
    iv = paired_difference({0: 0.7}, {0: 0.6})
    assert iv.kind == "n/a" and not iv.available
    assert iv.mean == pytest.approx(0.1)
    assert math.isnan(iv.low) and math.isnan(iv.high)


def test_summary_mean_std_and_seed_count(make_metrics):
    metrics = make_metrics("image", fractions=(0.1,))
    table = summarise_metrics(metrics)
    row = table[
        (table["method"] == "scratch")
        & (table["protocol"] == "finetune")
        & (table["metric"] == "accuracy")
    ].iloc[0]
    values = metrics[
        (metrics["method"] == "scratch")
        & (metrics["protocol"] == "finetune")
        & (metrics["metric"] == "accuracy")
    ]["value"].to_numpy()
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row["n_seeds"] == 3


def test_best_cell_is_the_highest_mean_per_protocol_and_fraction_with_ties():
    cells = pd.DataFrame(
        {
            "protocol": ["probe_final"] * 3 + ["finetune"] * 2 + ["raw_probe"],
            "fraction": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
            "method": ["data2vec", "scratch", "masked_recon", "data2vec", "scratch", "raw_input"],
            "mean": [0.60, 0.65, 0.50, 0.70, 0.70, 0.99],
        }
    )
    best = best_cells(cells, context_protocols=("raw_probe",))
    assert best == {
        ("probe_final", 0.1, "scratch"),
        ("finetune", 0.1, "data2vec"),
        ("finetune", 0.1, "scratch"),
    }


def _summary(metrics_by_modality, params=None):
    inputs = gather_inputs({f"{m}.eval_metrics": df for m, df in metrics_by_modality.items()})
    return inputs, summarise_report(inputs, report_config_from_dict(params))


def test_comparisons_pair_each_focus_method_with_the_methods_after_it_and_others_with_scratch(
    make_metrics,
):
    metrics = make_metrics("image", fractions=(0.1,), protocols=("probe_final",))
    extra = metrics[metrics["method"] == "data2vec"].assign(method="data2vec2")
    _, summary = _summary({"image": pd.concat([metrics, extra], ignore_index=True)})
    pairs = {
        (c.method, c.baseline, c.baseline_protocol)
        for c in summary.modalities["image"].comparisons
        if c.metric == "accuracy"
    }
    assert pairs == {
        ("data2vec2", "data2vec", "probe_final"),
        ("data2vec2", "masked_recon", "probe_final"),
        ("data2vec2", "scratch", "probe_final"),
        ("data2vec2", "raw_input", "raw_probe"),
        ("data2vec", "masked_recon", "probe_final"),
        ("data2vec", "scratch", "probe_final"),
        ("data2vec", "raw_input", "raw_probe"),
        # every other method against the reference (scratch) and the raw-input baseline
        ("masked_recon", "scratch", "probe_final"),
        ("masked_recon", "raw_input", "raw_probe"),
        ("scratch", "raw_input", "raw_probe"),
    }


def test_loss_is_said_plainly_with_a_positive_gap_and_its_interval(make_metrics):
    metrics = make_metrics("image", fractions=(0.1,), protocols=("probe_final",), raw=False)
    # make data2vec worse than scratch by 3, 4 and 5 points on seeds 0, 1, 2
    scratch = metrics["method"] == "scratch"
    d2v = metrics["method"] == "data2vec"
    # rows per method: seed 0 (accuracy, macro_f1), seed 1 (...), seed 2 (...)
    gaps = np.repeat([0.03, 0.04, 0.05], 2)
    metrics.loc[d2v, "value"] = metrics.loc[scratch, "value"].to_numpy() - gaps
    _, summary = _summary({"image": metrics})
    (c,) = [
        c
        for c in summary.modalities["image"].comparisons
        if (c.method, c.baseline, c.metric) == ("data2vec", "scratch", "accuracy")
    ]
    assert c.verdict == "loss"
    assert c.interval.mean == pytest.approx(-0.04)
    half = stats.t.ppf(0.975, 2) * np.std([3, 4, 5], ddof=1) / np.sqrt(3)
    text = verdict_sentence(c, summary.config)
    assert re.match(r"data2vec \([^)]*\) loses to scratch \([^)]*\) by 4\.0 points", text)
    assert f"95% CI {4 - half:.1f} to {4 + half:.1f}" in text


def test_tie_and_single_seed_verdicts(make_metrics):
    metrics = make_metrics("image", fractions=(0.1,), protocols=("probe_final",), raw=False)
    scratch = metrics[metrics["method"] == "scratch"]
    d2v = scratch.assign(method="data2vec")
    d2v["value"] = scratch["value"].to_numpy() + np.repeat([0.01, -0.01, 0.005], 2)
    tie_metrics = pd.concat([d2v, scratch], ignore_index=True)
    _, summary = _summary({"image": tie_metrics})
    (c,) = [
        c
        for c in summary.modalities["image"].comparisons
        if (c.method, c.metric) == ("data2vec", "accuracy")
    ]
    assert c.verdict == "tie"
    assert "no verdict: the interval spans 0" in verdict_sentence(c, summary.config)

    one_seed = tie_metrics[tie_metrics["seed"] == 0]
    _, summary = _summary({"image": one_seed})
    (c,) = [
        c
        for c in summary.modalities["image"].comparisons
        if (c.method, c.metric) == ("data2vec", "accuracy")
    ]
    assert c.verdict == "n/a"
    assert "n/a" in verdict_sentence(c, summary.config)


def test_metrics_json_round_trips_and_holds_means_and_deltas(make_metrics):
    metrics = make_metrics("speech")
    inputs, summary = _summary({"speech": metrics})
    data = metrics_dict(summary, inputs)
    text = json.dumps(data, allow_nan=False)  # strict JSON: no NaN anywhere
    assert json.loads(text) == data
    sel = metrics[
        (metrics["method"] == "data2vec")
        & (metrics["protocol"] == "probe_topk")
        & np.isclose(metrics["fraction"], 0.1)
        & (metrics["metric"] == "accuracy")
    ]["value"]
    cell = data["speech"]["probe_topk"]["data2vec"]["frac_0.1"]
    assert cell["accuracy_mean"] == pytest.approx(sel.mean(), abs=1e-6)
    assert cell["accuracy_std"] == pytest.approx(sel.std(ddof=1), abs=1e-6)
    assert cell["n_seeds"] == 3
    delta = data["speech"]["deltas"]["data2vec_minus_scratch"]["probe_final"]["frac_0.1"]
    assert delta["accuracy_mean"] == pytest.approx(LEVEL_GAP, abs=1e-6)
    assert delta["ci_low"] <= delta["accuracy_mean"] <= delta["ci_high"]
    # the fixture's per-seed differences are identical and it has no test predictions: a
    # zero-width interval over the seeds only, so no p/q-value and no verdict
    assert delta["covers"] == "seeds" and delta["n_test"] is None
    assert delta["p_value"] is None and delta["q_value"] is None
    assert delta["verdict"] == "n/a"


LEVEL_GAP = 0.70 - 0.55  # data2vec - scratch in the fixture tables


def test_label_efficiency_table_has_the_dvc_columns(make_metrics):
    _, summary = _summary({"image": make_metrics("image")})
    table = label_efficiency_table(summary)
    assert list(table.columns) == [
        "modality",
        "protocol",
        "method",
        "fraction",
        "accuracy_mean",
        "accuracy_std",
        "n_seeds",
    ]
    # 3 methods x 3 protocols x 3 fractions + raw_input x 3 fractions
    assert len(table) == 30
    row = table[(table["method"] == "raw_input") & np.isclose(table["fraction"], 1.0)].iloc[0]
    assert row["protocol"] == "raw_probe"
    assert row["accuracy_mean"] == pytest.approx(0.80 + np.mean([-0.02, 0.0, 0.03]), abs=1e-6)


def test_report_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"report\.confidance: unknown key"):
        report_config_from_dict({"confidance": 0.9})
    with pytest.raises(ValueError, match=r"report\.confidence"):
        report_config_from_dict({"confidence": 1.5})
    with pytest.raises(ValueError, match=r"report\.method_order"):
        report_config_from_dict({"method_order": "data2vec"})
    cfg = report_config_from_dict({"protocol_labels": {"probe_final": "probe"}})
    assert cfg.protocol_label("probe_final") == "probe"
    assert cfg.protocol_label("finetune") == "fine-tuning"
