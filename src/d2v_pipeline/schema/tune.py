"""``<m>.tune`` (conf/base/parameters_tune.yml): the Optuna study over data2vec's knobs.

Mirrors ``TuneConfig`` / ``ProbeSettings`` of ``d2v_pipeline.pipelines.tune.config`` key for
key. Knob values are in full-run units (what ``<m>.pretrain`` would use); a trial scores its
encoder on the validation split only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from d2v_pipeline.pipelines.tune import config as tune_lib
from d2v_pipeline.schema.base import (
    Block,
    Count,
    Fraction,
    Interval,
    Items,
    LibraryBlock,
    Positive,
    PositiveInt,
    Probability,
    Rate,
    Text,
    sub_block,
)
from d2v_pipeline.schema.finetune import CList, Pool
from d2v_pipeline.schema.pretrain import Train

Share = Annotated[float, Interval(0, 1, low_open=True)]


class Range(Block):
    """A search range ``{low, high, log}`` of one knob."""

    low: float = Field(description="smallest value tried")
    high: float = Field(description="largest value tried")
    log: bool = Field(False, description="sample on a log scale")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.high is not None and self.high < self.low:
            yield "high", f"{self.high} < low {self.low}"
        if self.log and self.low <= 0:
            yield "low", f"{self.low}: a log range needs low > 0"


class ShareRange(Range):
    low: Share = Field(description="smallest value tried")
    high: Share = Field(description="largest value tried")


class MaskRange(Range):
    low: Probability = Field(description="smallest value tried")
    high: Probability = Field(description="largest value tried")


class LrRange(Range):
    low: Positive = Field(description="smallest value tried")
    high: Positive = Field(description="largest value tried")


class TopKRange(Range):
    low: PositiveInt = Field(description="fewest blocks averaged")
    high: PositiveInt | None = Field(None, description="most blocks; null = encoder depth")


class SearchSpace(Block):
    """Knob ranges; null keeps the <m>.pretrain value."""

    one_minus_ema_decay: ShareRange | None = Field(
        None, description="1 - ema_decay (log scale suits a teacher memory)"
    )
    ema_end_ratio: ShareRange | None = Field(
        None, description="(1 - ema_end_decay) / (1 - ema_decay); <= 1 keeps end >= start"
    )
    mask_prob: MaskRange | None = Field(None, description="mask ratio / span start mass")
    top_k: TopKRange | None = Field(None, description="teacher blocks averaged")
    lr: LrRange | None = Field(None, description="null (not searched) or a log range")


class Knobs(Block):
    """One enqueued trial: knob values tried first (absent = the <m>.pretrain value)."""

    ema_decay: Probability = Field(None, description="tau at step 0")
    ema_end_decay: Probability = Field(None, description="tau at the end of the anneal")
    mask_prob: Probability = Field(None, description="mask ratio / span start mass")
    top_k: PositiveInt = Field(None, description="teacher blocks averaged")
    lr: Positive = Field(None, description="peak learning rate")


class Component(Block):
    """An Optuna sampler or pruner: ``type`` plus that class's keyword arguments."""

    type: str

    model_config = ConfigDict(extra="allow")  # the Optuna class's own arguments

    def problems(self) -> Iterator[tuple[str, str]]:
        try:
            self.build()
        except tune_lib.TuneConfigError as err:
            yield "", f"bad argument for {self.type}: {err.__cause__ or err}"

    def build(self) -> Any:
        raise NotImplementedError


class Sampler(Component):
    type: Literal["tpe", "random"] = Field("tpe", description="tpe | random")
    seed: Count | None = Field(None, description="sampler seed")

    def build(self) -> Any:
        return tune_lib.make_sampler(self.model_dump(), seed=0)


class Pruner(Component):
    type: Literal[
        "median", "percentile", "successive_halving", "hyperband", "threshold", "none"
    ] = Field("median", description="median | percentile | successive_halving | hyperband | ...")

    def build(self) -> Any:
        return tune_lib.make_pruner(self.model_dump())


class TuneProbe(LibraryBlock):
    """How a trial's encoder is scored: C chosen on one half of val, scored on the other."""

    library = tune_lib.ProbeSettings
    label_fraction: Fraction = Field(description="labelled train subset (ingest label_fractions)")
    subset_seed: Count = Field(description="which draw of that subset")
    split_seed: Count = Field(description="the fixed split of val into two halves")
    layers: Literal["final", "top_k_mean", "concat"] = Field(description="features probed")
    top_k: PositiveInt | None = Field(description="blocks for top_k_mean/concat; null = all")
    pool: Pool = Field(description="mean | cls")
    Cs: CList = Field(description="inverse regularisation strengths tried")
    max_iter: PositiveInt = Field(description="lbfgs iterations per fit")
    batch_size: PositiveInt = Field(description="examples per feature batch")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.layers == "final" and self.top_k is not None:
            yield "top_k", f"{self.top_k}: only used with layers top_k_mean or concat"
        if self.layers != "final" and self.pool == "cls":
            yield "pool", f"cls needs layers: final (tapped blocks carry no CLS), not {self.layers}"


class Tune(LibraryBlock):
    """One modality's study (`kedro run --pipelines tune`); not part of the default run."""

    library = tune_lib.TuneConfig
    study_name: Text | None = Field(None, description="null = d2v_<modality>")
    storage: Text | None = Field(
        description="null = a journal file under the data root; or an RDB URL / journal path"
    )
    n_trials: PositiveInt = Field(description="the study's target; a re-run continues it")
    timeout_s: Positive | None = Field(description="stop starting trials after this; null = no")
    steps: PositiveInt = Field(description="pretraining steps per trial")
    report_every: PositiveInt = Field(description="steps between intermediate probes")
    train: Train = sub_block("other overrides of <m>.pretrain.train for trials")
    ema_budget_scaling: bool = Field(description="convert the EMA schedule to the trial length")
    ema_floor: Rate = Field(description="lowest tau the short-run conversion gives")
    enqueue_default: bool = Field(description="trial 0 = the <m>.pretrain config")
    enqueue: Annotated[list[Knobs], Items(min=0, unique=False)] = Field(
        description="extra knob values to try first"
    )
    sampler: Sampler = sub_block("Optuna sampler")
    pruner: Pruner = sub_block("Optuna pruner")
    probe: TuneProbe = sub_block()
    search_space: SearchSpace = sub_block()
    stale_after_s: Positive = Field(description="a RUNNING trial this long silent is re-run")
    heartbeat_s: Positive = Field(description="seconds between a trial's heartbeats")
    progress: bool = Field(description="a progress bar over trials")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.train.given("steps"):
            yield "train.steps", "set the trial budget with tune.steps"
        if self.train.given("lr") and self.search_space.lr is not None:
            yield "train.lr", "lr is searched (search_space.lr); remove the override"
