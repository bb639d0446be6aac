"""``<m>.finetune`` (conf/base/parameters_finetune.yml): how every encoder is evaluated.

The protocol is docs/protocol.md: probes and fine-tuning choose on the validation split, the
test split is scored once. ``finetune`` and ``raw_baseline`` mirror the evaluation library's
``FinetuneConfig`` and ``RawBaselineConfig`` key for key (``seed`` is set per evaluation seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field

from d2v_pipeline.evaluation.finetune import FinetuneConfig
from d2v_pipeline.evaluation.probe import DEFAULT_CS
from d2v_pipeline.evaluation.raw_baselines import RawBaselineConfig
from d2v_pipeline.schema.base import (
    Block,
    Count,
    Fraction,
    Interval,
    Items,
    LibraryBlock,
    NonNegative,
    Positive,
    PositiveInt,
    Rate,
    sub_block,
)

Protocol = Literal["probe_final", "probe_topk", "finetune"]
Pool = Literal["mean", "cls"]
Fractions = Annotated[list[Fraction], Items()]
Seeds = Annotated[list[Count], Items()]
CList = Annotated[list[Positive], Items()]


class Probe(Block):
    """Linear probes (logistic regression) on frozen features; C chosen on validation."""

    pool: Pool = Field("mean", description="mean over tokens (padding ignored) | cls")
    # absent = the encoder depth; an explicit null is refused (the node needs a number)
    top_k: PositiveInt = Field(None, description="probe_topk: mean of the top-K block outputs")
    Cs: CList = Field(list(DEFAULT_CS), description="inverse regularisation strengths tried")
    max_iter: PositiveInt = Field(1000, description="lbfgs iterations per fit")


class Finetune(LibraryBlock):
    """Fine-tuning of the whole encoder + a linear head (FinetuneConfig), early-stopped.
    Device, precision and threads are `<m>.runtime` (parameters_runtime.yml)."""

    library = FinetuneConfig
    epochs: PositiveInt = Field(description="passes over the labelled subset (then capped)")
    batch_size: PositiveInt = Field(description="examples per step")
    lr: Positive = Field(description="peak learning rate (shared by every arm)")
    weight_decay: NonNegative = Field(description="AdamW weight decay")
    layer_decay: Annotated[float, Interval(0, 1, low_open=True)] = Field(
        description="1 = one lr for all layers; < 1 = BEiT-style decay"
    )
    warmup_fraction: Rate = Field(description="share of steps with a linear warmup")
    min_lr: NonNegative = Field(description="learning rate at the end of the cosine decay")
    label_smoothing: Rate = Field(description="label smoothing of the cross-entropy")
    grad_clip: NonNegative = Field(description="max gradient norm; 0 = off")
    beta1: Rate = Field(description="Adam beta1")
    beta2: Rate = Field(description="Adam beta2")
    patience: PositiveInt | None = Field(description="evaluations without a new best; null = off")
    eval_every: PositiveInt = Field(description="epochs between validation passes")
    eval_min_interval_steps: Count = Field(description="... and at least this many steps")
    min_steps: Count = Field(description="optimiser steps at least (tiny subsets still train)")
    max_steps: PositiveInt | None = Field(description="optimiser steps at most; same for all")
    time_budget_s: Positive | None = Field(description="wall-clock cap (machine-dependent)")
    pool: Pool = Field(description="pooling of the final features: mean | cls")
    head_norm: Literal["none", "batch", "layer"] = Field(description="norm before the head")
    augment: bool = Field(description="image shift / speech shift and gain augmentation")
    image_max_shift: Count = Field(description="pixels of random shift")
    speech_max_shift_s: NonNegative = Field(description="seconds of circular time shift")
    speech_gain_db: NonNegative = Field(description="random gain in [-g, +g] dB")
    sample_rate: PositiveInt = Field(description="Hz of the speech clips")
    eval_batch_size: PositiveInt = Field(description="examples per validation batch")
    head_init_std: NonNegative = Field(description="std of the head's initial weights")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.max_steps is not None and self.max_steps < self.min_steps:
            yield "max_steps", f"{self.max_steps} < min_steps {self.min_steps}"


class RawBaseline(LibraryBlock):
    """Raw-input baseline features (RawBaselineConfig): pixels, log-mel statistics, TF-IDF."""

    library = RawBaselineConfig
    sample_rate: PositiveInt = Field(description="speech: Hz")
    n_mels: PositiveInt = Field(description="speech: mel bands")
    win_ms: Positive = Field(description="speech: window length, ms")
    hop_ms: Positive = Field(description="speech: hop, ms")
    n_fft: PositiveInt | None = Field(description="speech: FFT size; null = next power of 2")
    fmin: NonNegative = Field(description="speech: lowest mel frequency, Hz")
    fmax: Positive | None = Field(description="speech: highest mel frequency; null = Nyquist")
    deltas: bool = Field(description="speech: also statistics of the deltas")
    log_eps: Positive = Field(description="speech: floor inside the log")
    ngram_max: PositiveInt = Field(description="text: TF-IDF word n-grams up to this n")
    min_df: PositiveInt = Field(description="text: smallest document frequency kept")
    max_features: PositiveInt | None = Field(description="text: vocabulary cap; null = none")
    sublinear_tf: bool = Field(description="text: 1 + log(tf)")
    batch_size: PositiveInt = Field(description="speech: clips per feature batch")

    def problems(self) -> Iterator[tuple[str, str]]:
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if fmax > nyquist:
            yield "fmax", f"{fmax} is above sample_rate / 2 = {nyquist}"
        elif self.fmin >= fmax:
            yield "fmin", f"{self.fmin} is not below fmax {fmax}"
        win_length = round(self.win_ms * self.sample_rate / 1000)
        if self.n_fft is not None and self.n_fft < win_length:
            yield "n_fft", f"{self.n_fft} is shorter than the window ({win_length} samples)"


class Projection(Block):
    """The report's 2-D PCA of test features."""

    max_points: PositiveInt = Field(1000, description="test examples drawn per method")
    seed: Count = Field(0, description="seed of that draw")


class Evaluation(Block):
    """One modality's evaluation: the same protocol and budget for every method."""

    fractions: Fractions = Field(description="label fractions; among ingest's label_fractions")
    seeds: Seeds = Field(description="evaluation seeds; each < ingest's label_subset_draws")
    protocols: Annotated[list[Protocol], Items()] = Field(
        ["probe_final", "probe_topk", "finetune"], description="evaluations run per encoder"
    )
    # absent = every fraction; an explicit null is refused (the node needs a list)
    finetune_fractions: Fractions = Field(
        None, description="fractions that are also fine-tuned (the expensive protocol)"
    )
    progress: bool = Field(True, description="progress bars while fine-tuning")
    probe: Probe = sub_block()
    finetune: Finetune = sub_block()
    raw_baseline: RawBaseline = sub_block()
    projection: Projection = sub_block()

    def problems(self) -> Iterator[tuple[str, str]]:
        extra = sorted(set(self.finetune_fractions or ()) - set(self.fractions))
        if extra:
            yield "finetune_fractions", f"{extra} are not among fractions {self.fractions}"
        if self.probe.pool == "cls" and "probe_topk" in self.protocols:
            yield "probe.pool", "cls needs the final layer; probe_topk averages blocks without CLS"
