"""The export module: the study figures name the objective and keep log-scale ticks legible;
the rank correlation of early probes with the final value."""

from __future__ import annotations

import matplotlib.pyplot as plt
import optuna
import pytest

from d2v_pipeline.pipelines.tune.export import OBJECTIVE, probe_rank_correlation, study_figures


def test_study_figures_name_the_objective_and_keep_log_ticks_apart():
    """Real Optuna plots of a study over the shipped search space (an analytic objective
    instead of pretraining): the objective is named, and log-scale tick labels are plain
    numbers that do not overlap."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_float("one_minus_ema_decay", 0.002, 0.025, log=True)
        b = trial.suggest_float("ema_end_ratio", 0.02, 1.0, log=True)
        m = trial.suggest_float("mask_prob", 0.3, 0.8)
        trial.report(0.4 + m / 10, 100)
        return 0.45 + m / 10 + a + b / 100

    study.optimize(objective, n_trials=8)
    figures = study_figures(study)
    try:
        texts, log_axes = [], 0
        for fig in figures.values():
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            texts += [t.get_text() for t in fig.findobj(plt.Text)]
            for ax in fig.axes:
                for axis in (ax.xaxis, ax.yaxis):
                    if axis.get_scale() != "log":
                        continue
                    log_axes += 1
                    lo, hi = sorted(axis.get_view_interval())
                    locs, all_labels = axis.get_majorticklocs(), axis.get_ticklabels()
                    labels = [  # the labels drawn: ticks inside the view
                        label
                        for loc, label in zip(locs, all_labels, strict=True)
                        if lo <= loc <= hi and label.get_text()
                    ]
                    assert 2 <= len(labels) <= 6
                    assert not any("times" in t.get_text() for t in labels)  # no 3x10^-2
                    assert not any(t.get_text() for t in axis.get_minorticklabels())
                    boxes = [t.get_window_extent(renderer) for t in labels]
                    pairs = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]]
                    assert not any(a.overlaps(b) for a, b in pairs)
        assert log_axes >= 4  # slice x axes and parallel-coordinate axes of both EMA knobs
        assert not any("Objective Value" in t for t in texts)
        assert sum(OBJECTIVE in t for t in texts) >= 4
    finally:
        plt.close("all")


def test_probe_rank_correlation_says_whether_early_probes_rank_like_the_final_value():
    """Spearman correlation per probe step over the complete trials (an analytic study)."""
    study = optuna.create_study(direction="maximize")
    for i in range(5):
        trial = study.ask()
        trial.report(i / 10, 1)  # same order as the final value
        trial.report(-i / 10, 2)  # reversed
        trial.report(0.5, 3)  # ties: no ranking
        if i < 3:
            trial.report(i / 10, 4)  # reported by 3 trials only: too few
        study.tell(trial, 0.2 + i / 100)
    pruned = study.ask()
    pruned.report(0.9, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)  # no final value: left out
    assert probe_rank_correlation(study.get_trials()) == {
        "1": {"spearman": pytest.approx(1.0), "trials": 5},
        "2": {"spearman": pytest.approx(-1.0), "trials": 5},
        "3": {"spearman": None, "trials": 5},
    }
