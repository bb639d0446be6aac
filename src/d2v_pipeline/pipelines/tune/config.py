"""The ``<m>.tune`` parameter block: its vocabulary, validation and the Optuna components it names.

:func:`tune_config_from_dict` validates ``<m>.tune`` against the parameter schema
(:mod:`d2v_pipeline.schema.tune`, which declares every key, type and range once) and returns a
frozen :class:`TuneConfig`; :func:`make_sampler` and :func:`make_pruner` build the Optuna
objects its ``sampler`` and ``pruner`` entries describe. Nothing here runs a trial.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from d2v_pipeline.schema.check import validated

# The knobs a trial sets, in the units of the full pretraining run (parameters_pretrain.yml).
KNOBS = ("ema_decay", "ema_end_decay", "mask_prob", "top_k", "lr")
# Optuna parameter names (what the study, the dashboard and the figures show).
SPACE_KEYS = ("one_minus_ema_decay", "ema_end_ratio", "mask_prob", "top_k", "lr")


class TuneConfigError(ValueError):
    """A tune parameter is invalid; the message names the key."""


@dataclass(frozen=True)
class Range:
    """A numeric search range; ``high=None`` (top_k only) means the encoder depth."""

    low: float
    high: float | None
    log: bool = False


@dataclass(frozen=True)
class ProbeSettings:
    """How a trial's encoder is scored (validation split only, never test)."""

    label_fraction: float = 0.1  # labelled train subset from ingest's label_subsets
    subset_seed: int = 0  # which per-seed subset when label_subsets holds one per seed
    split_seed: int = 0  # the fixed split of val into a C-selection half and a scoring half
    layers: str = "top_k_mean"  # final | top_k_mean | concat (evaluation.extract_features)
    top_k: int | None = None  # blocks for top_k_mean/concat; None = every block
    pool: str = "mean"
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    max_iter: int = 300
    batch_size: int = 256


@dataclass(frozen=True)
class TuneConfig:
    """Everything ``<m>.tune`` holds (conf/base/parameters_tune.yml documents each key)."""

    modality: str
    study_name: str
    storage: str | None = None  # None = journal file in the study folder; or an RDB URL
    n_trials: int = 20
    timeout_s: float | None = None
    steps: int = 500
    report_every: int = 100
    train: dict[str, Any] = field(default_factory=dict)  # other <m>.pretrain.train overrides
    ema_budget_scaling: bool = True
    ema_floor: float = 0.9
    enqueue_default: bool = True
    enqueue: tuple[dict[str, Any], ...] = ()
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    search_space: dict[str, Range | None] = field(default_factory=dict)
    stale_after_s: float = 900.0
    heartbeat_s: float = 30.0
    progress: bool = True

    def searched(self) -> list[str]:
        """The Optuna parameters this study searches (``search_space`` entries not null)."""
        return [k for k in SPACE_KEYS if self.search_space.get(k) is not None]

    def setup(self) -> dict[str, Any]:
        """What of this config defines the objective (the trials' train config is added by the
        caller): a study may only be continued with the same setup."""
        return {
            "steps": self.steps,
            "report_every": self.report_every,
            "ema_budget_scaling": self.ema_budget_scaling,
            "ema_floor": self.ema_floor,
            "probe": asdict(self.probe),
            "search_space": {
                k: None if r is None else asdict(r) for k, r in sorted(self.search_space.items())
            },
        }


PARAMS_FILE = "parameters_tune.yml"


def config_error(where: str, message: str) -> TuneConfigError:
    """The error for a bad value at ``where`` (a dotted key of parameters_tune.yml)."""
    return TuneConfigError(f"{PARAMS_FILE}: {where}: {message}")


def tune_config_from_dict(modality: str, params: Mapping[str, Any] | None) -> TuneConfig:
    """Validate ``<m>.tune`` against the schema and build a :class:`TuneConfig`.

    Keys, types, ranges and the cross-key rules are :class:`d2v_pipeline.schema.tune.Tune`'s;
    every problem is reported at once, one per line, naming its key.
    """
    from d2v_pipeline.schema.tune import Tune  # here: it reads this module's dataclasses

    block = validated(Tune, params, f"{modality}.tune", PARAMS_FILE, TuneConfigError)
    probe = block.probe.model_dump()
    space = block.search_space
    return TuneConfig(
        modality=modality,
        study_name=block.study_name or f"d2v_{modality}",
        storage=block.storage,
        n_trials=block.n_trials,
        timeout_s=block.timeout_s,
        steps=block.steps,
        report_every=block.report_every,
        train=block.train.model_dump(exclude_unset=True),
        ema_budget_scaling=block.ema_budget_scaling,
        ema_floor=block.ema_floor,
        enqueue_default=block.enqueue_default,
        enqueue=tuple(knobs.model_dump(exclude_unset=True) for knobs in block.enqueue),
        sampler={"type": block.sampler.type, **block.sampler.model_dump(exclude_unset=True)},
        pruner={"type": block.pruner.type, **block.pruner.model_dump(exclude_unset=True)},
        probe=ProbeSettings(**probe | {"Cs": tuple(probe["Cs"])}),
        search_space={
            key: None if (r := getattr(space, key)) is None else Range(r.low, r.high, r.log)
            for key in SPACE_KEYS
        },
        stale_after_s=block.stale_after_s,
        heartbeat_s=block.heartbeat_s,
        progress=block.progress,
    )


def make_sampler(spec: Mapping[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """TPE or random sampler from ``{type, seed, ...}``; ``seed`` overrides spec's seed."""
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "seed")}
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[spec["type"]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(seed=seed, **kwargs)
    except TypeError as err:
        raise config_error("tune.sampler", f"bad argument for {spec['type']}: {err}") from err


# Pruners that compare trials at rungs: min_resource x reduction_factor^k steps (Optuna's
# default reduction factor of each).
RUNG_PRUNERS = {"successive_halving": 4, "hyperband": 3}


def study_pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    """The study's pruner from ``tune.pruner``. Hyperband's ``max_resource`` defaults to the
    trial budget (``tune.steps``) instead of Optuna's "auto", which waits for a trial to
    complete before it prunes anything and then takes its last probe step + 1."""
    spec = dict(cfg.pruner)
    if spec["type"] == "hyperband" and spec.get("max_resource", "auto") == "auto":
        spec["max_resource"] = cfg.steps
    return make_pruner(spec)


def rung_steps(cfg: TuneConfig) -> list[list[int]]:
    """Successive halving / hyperband: per bracket, the steps (below ``tune.steps``) at which
    trials are compared; ``[]`` for other pruners.

    ``min_resource`` must be given in steps, as a multiple of ``report_every``: a rung then
    falls on a probe. Optuna's defaults (1, or "auto" = 1 % of the first complete trial's
    steps) are far below one report interval, so every rung up to the first probe would be
    judged at once on that one probe value. How early a probe already ranks settings as the
    full budget does is a measured property of the data and model (README "Tuning").
    """
    spec = cfg.pruner
    if spec["type"] not in RUNG_PRUNERS:
        return []
    where = "tune.pruner.min_resource"
    r = spec.get("min_resource")
    if not isinstance(r, int) or isinstance(r, bool):
        raise config_error(
            where,
            f"{r!r}: set it in steps, a multiple of tune.report_every ({cfg.report_every}): the "
            f"first step at which {spec['type']} compares trials",
        )
    if r % cfg.report_every or r >= cfg.steps:
        raise config_error(
            where,
            f"{r} must be a multiple of tune.report_every {cfg.report_every} (trials are "
            f"compared at probes) and below tune.steps {cfg.steps}",
        )
    eta = int(spec.get("reduction_factor", RUNG_PRUNERS[spec["type"]]))
    if spec["type"] == "successive_halving":
        first = [int(spec.get("min_early_stopping_rate", 0))]
    else:
        top = spec.get("max_resource", "auto")
        top = cfg.steps if top == "auto" else int(top)  # as study_pruner sets it
        n_brackets = math.floor(math.log(top / r, eta)) + 1 if top > r else 1
        first = list(range(n_brackets))
    brackets = []
    for s in first:
        steps, k = [], 0
        while (step := r * eta ** (s + k)) < cfg.steps:
            steps.append(step)
            k += 1
        brackets.append(steps)
    return brackets


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """A pruner from ``{type: median|percentile|successive_halving|hyperband|threshold|none}``
    plus that Optuna class's keyword arguments."""
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    cls = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }[spec["type"]]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise config_error("tune.pruner", f"bad argument for {spec['type']}: {err}") from err
