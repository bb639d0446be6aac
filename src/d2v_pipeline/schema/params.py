"""The whole parameters tree (every ``parameters*.yml`` merged, plus ``--params``) as one model.

Top level: one block per modality (``image``, ``speech``, ``text``), each holding that
modality's stage blocks and its ``runtime`` (device, precision, processes), and ``report``.
Rules that span stages live on :class:`Modality`: the probes' top-K against the encoder depth,
the evaluated label fractions and seeds against what ingest drew.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from d2v_pipeline.schema.base import Block, sub_block
from d2v_pipeline.schema.finetune import Evaluation
from d2v_pipeline.schema.ingest import ImageIngest, Ingest, SpeechIngest, TextIngest
from d2v_pipeline.schema.pretrain import ImagePretrain, Pretrain, SpeechPretrain, TextPretrain
from d2v_pipeline.schema.report import Report
from d2v_pipeline.schema.runtime import Runtime
from d2v_pipeline.schema.tune import Tune

MODALITIES = ("image", "speech", "text")
# the parameters file of each top-level stage block (conf/<env>/parameters_<stage>.yml)
STAGE_FILES = {
    "ingest": "parameters_ingest.yml",
    "pretrain": "parameters_pretrain.yml",
    "finetune": "parameters_finetune.yml",
    "tune": "parameters_tune.yml",
    "report": "parameters_report.yml",
    "runtime": "parameters_runtime.yml",
}


IngestT = TypeVar("IngestT", bound=Ingest)
PretrainT = TypeVar("PretrainT", bound=Pretrain)


class Modality(Block, Generic[IngestT, PretrainT]):
    """One modality's stages; the cross-stage rules are checked here."""

    ingest: IngestT = sub_block("conf/base/parameters_ingest.yml")
    pretrain: PretrainT = sub_block("conf/base/parameters_pretrain.yml")
    finetune: Evaluation = sub_block("conf/base/parameters_finetune.yml")
    tune: Tune = sub_block("conf/base/parameters_tune.yml")
    runtime: Runtime = sub_block("conf/base/parameters_runtime.yml")

    def problems(self) -> Iterator[tuple[str, str]]:
        depth = self.pretrain.encoder.depth
        ingest, finetune, tune = self.ingest, self.finetune, self.tune
        too_deep = {
            "finetune.probe.top_k": finetune.probe.top_k,
            "tune.probe.top_k": tune.probe.top_k,
            "tune.search_space.top_k.low": getattr(tune.search_space.top_k, "low", None),
            "tune.search_space.top_k.high": getattr(tune.search_space.top_k, "high", None),
        }
        too_deep |= {f"tune.enqueue.{i}.top_k": knobs.top_k for i, knobs in enumerate(tune.enqueue)}
        for key, top_k in too_deep.items():
            if top_k is not None and top_k > depth:
                yield key, f"{top_k} > encoder depth {depth} (pretrain.encoder.depth)"
        drawn = ingest.label_fractions
        for key in ("fractions", "finetune_fractions"):
            missing = [f for f in getattr(finetune, key) or () if f not in drawn]
            if missing:
                yield f"finetune.{key}", f"{missing} are not among ingest.label_fractions {drawn}"
        label_fraction, draws = tune.probe.label_fraction, ingest.label_subset_draws
        if label_fraction not in drawn:
            problem = f"{label_fraction} is not among ingest.label_fractions {drawn}"
            yield "tune.probe.label_fraction", problem
        too_high = [s for s in finetune.seeds if s >= draws]
        if too_high:
            yield "finetune.seeds", f"{too_high} >= ingest.label_subset_draws {draws}"
        if tune.probe.subset_seed >= draws:
            yield "tune.probe.subset_seed", f"{tune.probe.subset_seed} >= {draws} draws"


Image = Modality[ImageIngest, ImagePretrain]
Speech = Modality[SpeechIngest, SpeechPretrain]
Text = Modality[TextIngest, TextPretrain]


class Parameters(Block):
    """Every parameter of a run: ``kedro run`` validates this before any node runs."""

    image: Image = sub_block("handwritten digits (MNIST 5k by default)")
    speech: Speech = sub_block("spoken keywords (espeak-ng synthesis by default)")
    text: Text = sub_block("movie-review sentiment (Rotten Tomatoes by default)")
    report: Report = sub_block("conf/base/parameters_report.yml")
