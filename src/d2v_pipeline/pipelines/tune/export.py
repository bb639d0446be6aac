"""What a study is read back as: the trials table, the summary and the figures.

Everything here reads the study from its storage and writes nothing itself; the export node
hands the results to the catalog.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .config import KNOBS, TuneConfig
from .knobs import knobs_from_params
from .storage import replacements, trial_counts

log = logging.getLogger(__name__)

# What a trial's value is (README "Tuning"): the figures name it instead of Optuna's
# generic "Objective Value".
OBJECTIVE = "validation probe accuracy"


def _trial_knobs(t: FrozenTrial, defaults: Mapping[str, Any]) -> dict[str, Any]:
    if all(k in t.user_attrs for k in KNOBS):
        return {k: t.user_attrs[k] for k in KNOBS}
    return knobs_from_params(t.params, defaults)


def trials_table(
    study: optuna.Study, defaults: Mapping[str, Any], tuned: Sequence[str]
) -> pd.DataFrame:
    """One row per trial: number, state, value, knob values (full-run units), budget used,
    duration, the prune/fail reason, and which trial re-ran a lost one's parameters
    (``replaces`` / ``replaced_by``: trial numbers, empty when none)."""
    knob_columns = [k for k in KNOBS if k != "lr" or "lr" in tuned]
    columns = ["number", "state", "value", "default", *knob_columns, "trial_ema_decay",
               "trial_ema_end_decay", "steps", "duration_s", "counted", "reason", "replaces",
               "replaced_by", "intermediate", "params"]  # fmt: skip
    rows = []
    trials = study.get_trials(deepcopy=False)
    replaced_by = replacements(trials)  # read from the replacements: always recorded
    for t in trials:
        knobs = _trial_knobs(t, defaults)
        ua = t.user_attrs
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "default": ua.get("enqueued") == "default",
                **{k: knobs[k] for k in knob_columns},
                "trial_ema_decay": ua.get("trial_ema_decay"),
                "trial_ema_end_decay": ua.get("trial_ema_end_decay"),
                "steps": ua.get("steps"),
                "duration_s": duration,
                "counted": trial_counts(t),
                "reason": ua.get("prune_reason") or ua.get("fail_reason"),
                "replaces": ua.get("replaces_trial"),
                "replaced_by": replaced_by.get(t.number),
                "intermediate": json.dumps({str(k): v for k, v in t.intermediate_values.items()}),
                "params": json.dumps(t.params, sort_keys=True),
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    # trial numbers, not floats with NaN for "none"
    return table.astype({"replaces": "Int64", "replaced_by": "Int64"})


# fewest complete trials for a rank correlation worth printing
MIN_TRIALS_FOR_CORRELATION = 4


def probe_rank_correlation(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Per probe step: the Spearman rank correlation between the complete trials' probe at
    that step and their final value (how far an early probe already orders the settings as
    the full budget does: what a successive-halving or hyperband rung at that step relies
    on), and how many trials it covers. ``None`` when the values tie (no ranking)."""
    from scipy.stats import spearmanr

    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    steps = sorted({s for t in complete for s in t.intermediate_values})
    out: dict[str, Any] = {}
    for step in steps:
        pairs = [(t.intermediate_values[step], t.value) for t in complete
                 if step in t.intermediate_values]  # fmt: skip
        if len(pairs) < MIN_TRIALS_FOR_CORRELATION:
            continue
        early, final = np.array(pairs).T
        tied = np.ptp(early) == 0 or np.ptp(final) == 0
        rho = None if tied else float(spearmanr(early, final).statistic)
        out[str(step)] = {"spearman": rho, "trials": len(pairs)}
    return out


def study_summary(
    study: optuna.Study,
    cfg: TuneConfig,
    defaults: Mapping[str, Any],
    full_steps: int,
    storage_name: str,
) -> dict[str, Any]:
    """Best vs default, trial counts by state and the pretraining steps pruning saved."""
    trials = study.get_trials(deepcopy=False)
    by_state = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    # the default config's trial; if a killed worker lost it, the replacement that counted
    tagged = [t for t in trials if t.user_attrs.get("enqueued") == "default"]
    default = next((t for t in tagged if trial_counts(t)), tagged[0] if tagged else None)
    counted = [t for t in trials if trial_counts(t) and t.state != TrialState.RUNNING]
    steps_run = sum(int(t.user_attrs.get("steps") or 0) for t in counted)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    saved = sum(cfg.steps - int(t.user_attrs.get("steps") or 0) for t in pruned)
    seconds = [float(t.user_attrs["seconds"]) for t in counted if "seconds" in t.user_attrs]
    tuned = cfg.searched()
    out: dict[str, Any] = {
        "modality": cfg.modality,
        "study_name": study.study_name,
        "storage": storage_name,
        "objective": (
            f"val-half linear-probe accuracy ({cfg.probe.layers} features, "
            f"{cfg.probe.label_fraction:g} of the train labels; C chosen on the other val half)"
        ),
        "direction": "maximize",
        "n_trials_target": cfg.n_trials,
        "n_trials_counted": sum(trial_counts(t) for t in trials),
        "states": by_state,
        # lost trials (killed worker, Ctrl-C) and the trials that re-ran their parameters
        "replaced": {str(k): v for k, v in sorted(replacements(trials).items())},
        # does an early probe rank settings like the final one? (pruning relies on it)
        "probe_rank_correlation": probe_rank_correlation(trials),
        "searched": tuned,
        "best": None,
        "default": None,
        "best_minus_default": None,
        "budget": {
            "steps_per_trial": cfg.steps,
            "full_run_steps": full_steps,
            "steps_run": steps_run,
            "steps_if_no_pruning": cfg.steps * len(counted),
            "steps_saved_by_pruning": saved,
            "saved_fraction": saved / (cfg.steps * len(counted)) if counted else 0.0,
            "trial_seconds_mean": float(np.mean(seconds)) if seconds else None,
            "trial_seconds_total": float(np.sum(seconds)) if seconds else 0.0,
        },
    }
    if best is not None:
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "knobs": _trial_knobs(best, defaults),
            "optuna_params": best.params,
        }
    if default is not None:
        out["default"] = {
            "number": default.number,
            "state": default.state.name,
            "value": default.value,
            "knobs": _trial_knobs(default, defaults),
        }
        if best is not None and default.value is not None:
            out["best_minus_default"] = best.value - default.value
    return out


def _placeholder(title: str, message: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def _readable_axes(fig: Any) -> None:
    """Log-scale axes (the EMA knobs) get a few plain ticks (0.002, 0.005, 0.01) instead
    of matplotlib's crowded 3x10^-2-style labels; log x labels are rotated."""
    from matplotlib import ticker

    for ax in fig.axes:
        for axis, rotate in ((ax.xaxis, True), (ax.yaxis, False)):
            if axis.get_scale() != "log":
                continue
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
            if rotate:
                for label in axis.get_ticklabels():
                    label.set_rotation(40)
                    label.set_horizontalalignment("right")


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures, labelled with the objective (OBJECTIVE) and with readable
    log-scale ticks; a placeholder figure when a plot needs more trials."""
    from functools import partial

    from optuna.visualization import matplotlib as ovm

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    searched = bool({k for t in complete for k in t.params})
    named = {"target_name": OBJECTIVE}
    plots = {  # name: (plot function, complete trials it needs, needs searched params)
        "optimization_history": (partial(ovm.plot_optimization_history, **named), 1, False),
        "param_importances": (partial(ovm.plot_param_importances, **named), 2, True),
        "parallel_coordinate": (partial(ovm.plot_parallel_coordinate, **named), 2, True),
        "slice": (partial(ovm.plot_slice, **named), 1, True),
        "intermediate_values": (ovm.plot_intermediate_values, 0, False),
    }
    figures: dict[str, Any] = {}
    for name, (plot, need, needs_params) in plots.items():
        title = name.replace("_", " ")
        if len(complete) < need or (needs_params and not searched):
            figures[name] = _placeholder(
                title, f"needs >= {max(need, 1)} complete trials with searched parameters "
                f"(have {len(complete)})"
            )  # fmt: skip
            continue
        if name == "intermediate_values" and not any(t.intermediate_values for t in trials):
            figures[name] = _placeholder(title, "no intermediate probe values were reported")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on every plot
                result = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            # e.g. importances when every complete trial has the same value
            log.warning("tune figure %s not drawn: %s", name, err)
            figures[name] = _placeholder(title, f"not drawn: {err}")
            continue
        ax = np.ravel(result)[0] if isinstance(result, np.ndarray) else result
        if name == "intermediate_values":
            ax.set_ylabel(f"{OBJECTIVE} (intermediate probe)")
        if name == "optimization_history":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
        _readable_axes(ax.figure)
        figures[name] = ax.figure
    return figures
