"""Base configuration dataclasses and the from-dict machinery of the data2vec library.

Nothing here knows a modality: each modality file (:mod:`.modalities`) subclasses these
classes with its spec defaults (spec §1-§5), and :mod:`.config` picks the subclass by name
through the modality registry. Keeping this module free of modality imports is what keeps
the package's import graph acyclic (the modality files import it; it imports none of them).

τ defaults are the paper's (400k-1M step runs). For runs of a few thousand steps the
recommended setting is spec §2's rescaling, ``Data2VecConfig.short_run(steps)``, or an explicit
schedule in the params (the calibration run used 0.99 -> 0.999 over the first 30%).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Tap = Literal["ffn", "block"]
TargetNorm = Literal["instance", "layer", "none"]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``.

    Value ranges (a probability in [0, 1], a positive learning rate, ...) are declared once, in
    the parameter schema (``d2v_pipeline.schema``), which checks every run's parameters before
    anything runs. The dataclasses here only keep the few checks the code itself needs: shapes
    that must divide, settings a loop divides by, and values that come from the data, which the
    schema never sees; a direct caller breaking one of these would otherwise get a wrong shape
    or an unrelated error deep inside torch.
    """
    if not ok:
        raise ConfigError(message)


# ---------------------------------------------------------------- encoders (spec §4)
@dataclass(kw_only=True)
class EncoderConfig:
    """Transformer settings shared by every front-end (pre-LN blocks)."""

    modality: ClassVar[str] = ""
    dim: int = 128
    depth: int = 4
    heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layerdrop: float = 0.0
    layer_scale_init: float | None = None  # LayerScale γ init; None = off

    def __post_init__(self) -> None:
        # attention splits the width into equal heads
        require(
            self.heads >= 1 and self.dim % self.heads == 0,
            f"dim {self.dim} not divisible by heads {self.heads}",
        )


# ---------------------------------------------------------------- masking (spec §3)
@dataclass(kw_only=True)
class MaskConfig:
    modality: ClassVar[str] = ""
    mask_prob: float


# ---------------------------------------------------------------- data2vec v1 (spec §1, §2)
@dataclass(kw_only=True)
class Data2VecConfig:
    """Teacher, targets and loss. ``ema_ref_steps`` is the reference run length for short_run()."""

    modality: ClassVar[str] = ""
    mask: MaskConfig
    top_k: int
    tap: Tap
    target_layer_norm: TargetNorm
    target_final_norm: TargetNorm
    head_layers: int = 1
    loss_beta: float  # 0 = L2 (MSE), else Smooth L1 with this beta
    loss_reduce: Literal["sum", "mean"] = "sum"  # over the D channels of a token
    loss_scale: float | None  # None = 1/sqrt(D)
    ema_decay: float
    ema_end_decay: float
    ema_anneal_end_step: int
    ema_ref_steps: int

    def short_run(self, steps: int, floor: float = 0.9) -> Data2VecConfig:
        """Spec §2 rec. for short runs: keep tau_n/T, scale the teacher memory 1/(1-tau) by T/T_ref.

        ``tau' = max(floor, 1 - (1 - tau) * T_ref / T)``; ``tau_n' = round(tau_n * T / T_ref)``.
        E.g. speech at T = 2,000: 0.999 -> 0.9, 0.9999 -> 0.98, tau_n 30,000 -> 150.
        """
        return _short_run(self, steps, floor)


def _short_run(cfg: Any, steps: int, floor: float) -> Any:
    """The spec §2 short-run rescaling of any config with ``ema_*`` fields (v1 and v2)."""
    require(steps > 0, "steps must be > 0")  # an argument the schema never sees; divides below
    ratio = cfg.ema_ref_steps / steps

    def scale(tau: float) -> float:
        return tau if tau >= 1.0 else max(floor, 1.0 - (1.0 - tau) * ratio)

    return dataclasses.replace(
        cfg,
        ema_decay=scale(cfg.ema_decay),
        ema_end_decay=scale(cfg.ema_end_decay),
        ema_anneal_end_step=round(cfg.ema_anneal_end_step / ratio),
    )


# ---------------------------------------------------------------- data2vec 2.0 (spec §5)
@dataclass(kw_only=True)
class DecoderConfig:
    """Convolutional decoder (spec §5 item 4): ``layers`` × [grouped conv -> LayerNorm (no
    affine) -> GELU], residual between layers, then a projection back to D (``projection_layers``
    2 = Linear(C, 2D)-GELU-Linear(2D, D), the text variant). Images convolve in 2-D over the
    patch grid, speech and text in 1-D over positions. ``dim`` None = the encoder width."""

    modality: ClassVar[str] = ""
    dim: int | None = None
    layers: int = 2  # spec §5 rec. for CPU: 2-3 layers of width D
    kernel: int = 3
    groups: int = 8
    residual: bool = True
    input_dropout: float = 0.0
    projection_layers: int = 1

    def __post_init__(self) -> None:
        # padding kernel // 2 keeps the length only for odd kernels (else a shape mismatch)
        require(self.kernel >= 1 and self.kernel % 2 == 1, f"kernel must be odd, got {self.kernel}")
        # groups must divide both widths: checked where they are known, in the decoder build
        # any value but 1 would silently build the 2-layer projection
        require(self.projection_layers in (1, 2), "projection_layers must be 1 or 2")


@dataclass(kw_only=True)
class Data2Vec2Config:
    """data2vec 2.0 (spec §5): M clones per sample share one teacher pass; the student encodes
    visible tokens only; a conv decoder fills the masked slots; L2 at masked positions.

    ``top_k``: spec §5 rec. for CPU is K = depth (default 4 = the default depth; None = every
    block of whatever depth). ``loss_scale`` None =
    1/sqrt(D) (spec §1.3 v2: images, speech); text 1. ``cls_loss`` (images only, spec §5
    item 5): weight of the CLS output regressing the mean of the patch targets.
    """

    modality: ClassVar[str] = ""
    mask: MaskConfig
    decoder: DecoderConfig
    clones: int = 4  # spec §5 rec. for CPU: M = 4 (FS: images 16, speech/text 8)
    top_k: int | None = 4
    tap: Tap = "ffn"  # spec §1.1: every v2 modality taps the FFN output
    target_layer_norm: TargetNorm = "instance"  # spec §1.2 v2 rows: instance norm per layer
    target_final_norm: TargetNorm
    loss_scale: float | None
    cls_loss: float = 0.0
    mask_noise_std: float = 0.01  # spec §5 item 4
    ema_decay: float
    ema_end_decay: float
    ema_anneal_end_step: int
    ema_ref_steps: int

    def __post_init__(self) -> None:
        # targets are shared by dividing clone rows by ``clones``
        require(self.clones >= 1, f"clones must be >= 1, got {self.clones}")

    def short_run(self, steps: int, floor: float = 0.9) -> Data2Vec2Config:
        """Spec §2 rec. for short runs (same rule as :meth:`Data2VecConfig.short_run`)."""
        return _short_run(self, steps, floor)


# ---------------------------------------------------------------- masked reconstruction (§10)
@dataclass(kw_only=True)
class ReconConfig:
    """Masked input reconstruction baseline with the same encoder and masks (spec §10.2)."""

    modality: ClassVar[str] = ""
    mask: MaskConfig
    norm_target: bool = True  # per-patch / per-frame mean-variance normalisation (MAE)


# ---------------------------------------------------------------- training loop
@dataclass(kw_only=True)
class TrainConfig:
    """One pretraining run. Warmup is a fraction of ``steps``; cosine decay to ``min_lr``.

    Where it runs (device, precision, threads, processes) is not part of it: that is the
    :class:`~.runtime.Runtime` given to ``pretrain``; ``batch_size`` is the global batch.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_frac: float = 0.1
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0
    augment_shift: int = 0  # images only: random shift of up to this many pixels
    # text only: drop the padding and cut the concatenated token stream into full rows
    # (RoBERTa's "full sentences", fairseq's break mode "complete"); see train.pack_sequences
    pack_sequences: bool = False
    log_every: int = 10
    checkpoint_every: int = 200  # 0 = only the final checkpoint
    collapse_target_std: float = 0.1  # spec §9 thresholds
    collapse_pred_std: float = 0.01
    collapse_grace_steps: int = 100  # tiny pred std early on is normal (calibration.md)
    stop_on_collapse: bool = False

    def __post_init__(self) -> None:
        # the loop divides by both (batches per epoch, logging steps)
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")


# ---------------------------------------------------------------- from_dict helpers
def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint, converting lists to tuples and dicts to
    dataclasses; raise ConfigError naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str, **nested: type) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {sorted(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in nested:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping")
            kwargs[key] = from_dict(nested[key], value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # missing required field
        raise ConfigError(f"{where}: {err}") from err
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


def train_config_from_dict(data: Mapping[str, Any] | None) -> TrainConfig:
    return from_dict(TrainConfig, data, "train")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg, dict_factory=lambda kv: {k: _jsonable(v) for k, v in kv})


def _jsonable(v: Any) -> Any:
    return [_jsonable(x) for x in v] if isinstance(v, tuple | list) else v
