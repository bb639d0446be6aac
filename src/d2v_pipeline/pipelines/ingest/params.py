"""``<modality>.ingest`` as the ingest nodes use it, validated by the schema.

The keys, types and ranges are declared once, in :mod:`d2v_pipeline.schema.ingest`; this module
only turns a validated block into what the readers and the splitter take. Errors name the key
as a user finds it in conf: ``parameters_ingest.yml: image.ingest.label_fractions: 1.5 is
outside (0, 1]`` (all of a block's problems at once, one per line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from d2v_pipeline.schema import find_problems
from d2v_pipeline.schema.ingest import ImageIngest, Ingest, SpeechIngest, TextIngest
from d2v_pipeline.sources.speech import SynthesisConfig

PARAMS_FILE = "parameters_ingest.yml"
_MODELS: dict[str, type[Ingest]] = {
    "image": ImageIngest,
    "speech": SpeechIngest,
    "text": TextIngest,
}


class IngestParameterError(ValueError):
    """A value in parameters_ingest.yml is missing, unknown or out of range."""


@dataclass(frozen=True)
class SplitConfig:
    """What every modality shares: seed, split fractions, label fractions, subsampling."""

    seed: int
    val_fraction: float
    test_fraction: float
    label_fractions: tuple[float, ...]
    max_examples: int | None
    label_subset_draws: int = 1


@dataclass(frozen=True)
class IngestConfig:
    """The validated ``<modality>.ingest`` block; ``options`` holds the source-specific part."""

    modality: str
    source: str
    split: SplitConfig
    options: dict[str, Any]


_SOURCE_BLOCKS = ("torchvision", "folder", "espeak", "table")
_NOT_SYNTHESIS = ("cache_dir", "workers", "progress")  # they do not change the clips


def _options(block: Ingest) -> dict[str, Any]:
    """The source-specific values, flat: the chosen source's block and the tokenizer's keys
    beside the modality's own; espeak's generation values as one SynthesisConfig."""
    values = block.model_dump(exclude={*SplitConfig.__dataclass_fields__, "source"})
    chosen = values.get(block.source) or {}
    values = {k: v for k, v in values.items() if k not in _SOURCE_BLOCKS}
    values |= values.pop("tokenizer", None) or {}
    if block.source == "espeak":
        synthesis = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in chosen.items()
            if k not in _NOT_SYNTHESIS
        }
        values["synthesis"] = SynthesisConfig(
            **synthesis, sample_rate=values["sample_rate"], clip_seconds=values["clip_seconds"]
        )
        chosen = {k: chosen[k] for k in _NOT_SYNTHESIS}
    return values | chosen


def parse_ingest_params(modality: str, params: dict[str, Any]) -> IngestConfig:
    """Validate ``<modality>.ingest`` from conf; raises :class:`IngestParameterError`."""
    if modality not in _MODELS:
        raise IngestParameterError(f"unknown modality {modality!r}; expected {list(_MODELS)}")
    block, problems = find_problems(_MODELS[modality], params, f"{modality}.ingest")
    if problems:
        raise IngestParameterError(
            "\n".join(f"{PARAMS_FILE}: {p.path}: {p.message}" for p in problems)
        )
    split = SplitConfig(
        seed=block.seed,
        val_fraction=float(block.val_fraction),
        test_fraction=float(block.test_fraction),
        label_fractions=tuple(sorted({float(f) for f in block.label_fractions})),
        max_examples=block.max_examples,
        label_subset_draws=block.label_subset_draws,
    )
    return IngestConfig(modality, block.source, split, _options(block))
