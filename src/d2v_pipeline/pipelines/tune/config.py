"""The ``<m>.tune`` parameter block: its vocabulary, validation and the Optuna components it names.

Everything that reads ``parameters_tune.yml`` lives here, in one place:
:func:`tune_config_from_dict` checks every key (errors name it) and returns a frozen
:class:`TuneConfig`; :func:`make_sampler` and :func:`make_pruner` build the Optuna objects
its ``sampler`` and ``pruner`` entries describe. Nothing here runs a trial.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

# The knobs a trial sets, in the units of the full pretraining run (parameters_pretrain.yml).
KNOBS = ("ema_decay", "ema_end_decay", "mask_prob", "top_k", "lr")
# Optuna parameter names (what the study, the dashboard and the figures show).
SPACE_KEYS = ("one_minus_ema_decay", "ema_end_ratio", "mask_prob", "top_k", "lr")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "threshold", "none")
SAMPLERS = ("tpe", "random")


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


_TOP_KEYS = {
    "study_name", "storage", "n_trials", "timeout_s", "steps", "report_every", "train",
    "ema_budget_scaling", "ema_floor", "enqueue_default", "enqueue", "sampler", "pruner",
    "probe", "search_space", "stale_after_s", "heartbeat_s", "progress",
}  # fmt: skip


def config_error(where: str, message: str) -> TuneConfigError:
    """The error for a bad value at ``where`` (a dotted key of parameters_tune.yml)."""
    return TuneConfigError(f"parameters_tune.yml: {where}: {message}")


def _number(value: Any, where: str, *, integer: bool = False, positive: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise config_error(
            where, f"expected {'an integer' if integer else 'a number'}, got {value!r}"
        )
    if positive and value <= 0:
        raise config_error(where, f"must be > 0, got {value!r}")
    return value if integer else float(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise config_error(where, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _range(value: Any, where: str, *, integer: bool = False) -> Range | None:
    if value is None:
        return None
    spec = _mapping(value, where)
    unknown = sorted(set(spec) - {"low", "high", "log"})
    if unknown or "low" not in spec:
        raise config_error(where, f"expected {{low, high[, log]}}, got keys {sorted(spec)}")
    low = _number(spec["low"], f"{where}.low", integer=integer)
    high = spec.get("high")
    if high is not None or not integer:
        high = _number(high, f"{where}.high", integer=integer)
        if high < low:
            raise config_error(where, f"high {high} < low {low}")
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise config_error(f"{where}.log", f"expected true/false, got {log_scale!r}")
    if log_scale and low <= 0:
        raise config_error(where, f"a log range needs low > 0, got {low}")
    return Range(low=low, high=high, log=log_scale)


_SPACE_LIMITS = {  # (smallest low, largest high) allowed for each knob
    "one_minus_ema_decay": (0.0, 1.0),
    "ema_end_ratio": (0.0, 1.0),  # <= 1 keeps ema_end_decay >= ema_decay
    "mask_prob": (0.0, 1.0),
    "top_k": (1, None),
    "lr": (0.0, None),
}


def tune_config_from_dict(modality: str, params: Mapping[str, Any] | None) -> TuneConfig:
    """Validate ``<m>.tune`` and build a :class:`TuneConfig`; errors name the key."""
    p = _mapping(params, f"{modality}.tune")
    unknown = sorted(set(p) - _TOP_KEYS)
    if unknown:
        raise config_error(
            f"{modality}.tune", f"unknown key {unknown[0]!r} (allowed: {sorted(_TOP_KEYS)})"
        )
    w = f"{modality}.tune"
    kw: dict[str, Any] = {"modality": modality}
    kw["study_name"] = p.get("study_name") or f"d2v_{modality}"
    if not isinstance(kw["study_name"], str):
        raise config_error(f"{w}.study_name", f"expected a string, got {kw['study_name']!r}")
    storage = p.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise config_error(f"{w}.storage", f"expected null or a URL/path string, got {storage!r}")
    kw["storage"] = storage
    for key in ("n_trials", "steps", "report_every"):
        if key in p:
            kw[key] = _number(p[key], f"{w}.{key}", integer=True, positive=True)
    for key in ("stale_after_s", "heartbeat_s"):
        if key in p:
            kw[key] = _number(p[key], f"{w}.{key}", positive=True)
    if p.get("timeout_s") is not None:
        kw["timeout_s"] = _number(p["timeout_s"], f"{w}.timeout_s", positive=True)
    if "ema_floor" in p:
        kw["ema_floor"] = _number(p["ema_floor"], f"{w}.ema_floor")
        if not 0.0 <= kw["ema_floor"] < 1.0:
            raise config_error(f"{w}.ema_floor", f"must be in [0, 1), got {kw['ema_floor']}")
    for key in ("ema_budget_scaling", "enqueue_default", "progress"):
        if key in p:
            if not isinstance(p[key], bool):
                raise config_error(f"{w}.{key}", f"expected true/false, got {p[key]!r}")
            kw[key] = p[key]
    train = _mapping(p.get("train"), f"{w}.train")
    if "steps" in train:
        raise config_error(f"{w}.train.steps", "set the trial budget with tune.steps")
    kw["train"] = train
    enqueue = p.get("enqueue") or []
    if not isinstance(enqueue, list | tuple):
        raise config_error(f"{w}.enqueue", f"expected a list of mappings, got {enqueue!r}")
    for i, entry in enumerate(enqueue):
        bad = sorted(set(_mapping(entry, f"{w}.enqueue[{i}]")) - set(KNOBS))
        if bad:
            raise config_error(
                f"{w}.enqueue[{i}]", f"unknown knob {bad[0]!r} (allowed: {list(KNOBS)})"
            )
    kw["enqueue"] = tuple(dict(e) for e in enqueue)
    kw["sampler"] = _component(p.get("sampler"), f"{w}.sampler", SAMPLERS, "tpe")
    kw["pruner"] = _component(p.get("pruner"), f"{w}.pruner", PRUNERS, "median")
    kw["probe"] = _probe_settings(p.get("probe"), f"{w}.probe")
    kw["search_space"] = _search_space(p.get("search_space"), f"{w}.search_space")
    if "lr" in train and kw["search_space"].get("lr") is not None:
        raise config_error(f"{w}.train.lr", "lr is searched (search_space.lr); remove the override")
    cfg = TuneConfig(**kw)
    # build once so a bad sampler/pruner argument fails before any trial runs
    make_sampler(cfg.sampler, seed=0)
    make_pruner(cfg.pruner)
    return cfg


def _component(value: Any, where: str, allowed: Sequence[str], default: str) -> dict[str, Any]:
    spec = _mapping(value, where)
    spec.setdefault("type", default)
    if spec["type"] not in allowed:
        raise config_error(f"{where}.type", f"{spec['type']!r} is not one of {list(allowed)}")
    return spec


def _probe_settings(value: Any, where: str) -> ProbeSettings:
    spec = _mapping(value, where)
    allowed = set(ProbeSettings.__dataclass_fields__)
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise config_error(where, f"unknown key {unknown[0]!r} (allowed: {sorted(allowed)})")
    if "label_fraction" in spec:
        spec["label_fraction"] = _number(spec["label_fraction"], f"{where}.label_fraction")
        if not 0.0 < spec["label_fraction"] <= 1.0:
            raise config_error(f"{where}.label_fraction", "must be in (0, 1]")
    for key in ("subset_seed", "split_seed"):
        if key in spec:
            spec[key] = _number(spec[key], f"{where}.{key}", integer=True)
    for key in ("max_iter", "batch_size"):
        if key in spec:
            spec[key] = _number(spec[key], f"{where}.{key}", integer=True, positive=True)
    if spec.get("top_k") is not None:
        spec["top_k"] = _number(spec["top_k"], f"{where}.top_k", integer=True, positive=True)
    if spec.get("layers", "top_k_mean") not in ("final", "top_k_mean", "concat"):
        raise config_error(f"{where}.layers", f"{spec['layers']!r} is not final/top_k_mean/concat")
    if spec.get("pool", "mean") not in ("mean", "cls"):
        raise config_error(f"{where}.pool", f"{spec['pool']!r} is not mean/cls")
    if "Cs" in spec:
        cs = spec["Cs"]
        if not isinstance(cs, list | tuple) or not cs:
            raise config_error(f"{where}.Cs", f"expected a non-empty list, got {cs!r}")
        spec["Cs"] = tuple(_number(c, f"{where}.Cs", positive=True) for c in cs)
    return ProbeSettings(**spec)


def _search_space(value: Any, where: str) -> dict[str, Range | None]:
    spec = _mapping(value, where)
    unknown = sorted(set(spec) - set(SPACE_KEYS))
    if unknown:
        raise config_error(where, f"unknown key {unknown[0]!r} (allowed: {list(SPACE_KEYS)})")
    space: dict[str, Range | None] = {}
    for key in SPACE_KEYS:
        r = _range(spec.get(key), f"{where}.{key}", integer=key == "top_k")
        if r is not None:
            lo, hi = _SPACE_LIMITS[key]
            if r.low < lo or (hi is not None and r.high is not None and r.high > hi):
                raise config_error(
                    f"{where}.{key}", f"range [{r.low}, {r.high}] outside [{lo}, {hi}]"
                )
            if key in ("one_minus_ema_decay", "ema_end_ratio", "lr") and r.low <= 0:
                raise config_error(f"{where}.{key}", f"low must be > 0, got {r.low}")
        space[key] = r
    return space


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
