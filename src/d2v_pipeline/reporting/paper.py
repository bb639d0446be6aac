"""What the papers report (quoted from docs/data2vec.md §7 and §5, with its source tags).

These numbers were NOT measured by this project; the report shows them in a separate
"context" section so nobody reads them as our results. Source tags: [P1 T1] = data2vec
(arXiv 2202.03555) Table 1; [P2 abstract] = data2vec 2.0 (arXiv 2212.07525) abstract.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperTable:
    """One quoted table: caption with its source tag, header and rows (strings as printed)."""

    caption: str
    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # row labels (first cell) that are data2vec itself, shown emphasised
    highlight: tuple[str, ...] = ("data2vec",)


PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        caption="ImageNet-1K top-1 accuracy (%), fine-tuned; data2vec ViT-B 800 epochs, "
        "ViT-L 1,600 epochs",
        source="[P1 T1]",
        columns=("method", "ViT-B", "ViT-L"),
        rows=(
            ("BEiT (uses a tokenizer)", "83.2", "85.2"),
            ("PeCo (multiple models)", "84.5", "86.5"),
            ("MoCo v3 / DINO", "83.2 / 82.8", "84.1 / -"),
            ("MAE", "83.6", "85.9"),
            ("SimMIM / iBOT / MaskFeat", "83.8 / 83.8 / 84.0", "- / - / 85.7"),
            ("data2vec", "84.2", "86.6"),
        ),
    ),
    PaperTable(
        caption="LibriSpeech test-other WER (lower is better), 4-gram LM, labelled data "
        "10 min / 1 h / 10 h / 100 h / 960 h; Base models pretrained on LS-960",
        source="[P1 T2]",
        columns=("method", "WER 10m / 1h / 10h / 100h / 960h"),
        rows=(
            ("wav2vec 2.0", "15.6 / 11.3 / 9.5 / 8.0 / 6.1"),
            ("HuBERT", "15.3 / 11.3 / 9.4 / 8.1 / -"),
            ("WavLM", "- / 10.8 / 9.2 / 7.7 / -"),
            ("data2vec", "12.3 / 9.1 / 8.1 / 6.8 / 5.5"),
        ),
    ),
    PaperTable(
        caption="LibriSpeech test-other WER, same protocol; Large models pretrained on "
        "Libri-light 60k h",
        source="[P1 T2]",
        columns=("method", "WER 10m / 1h / 10h / 100h / 960h"),
        rows=(
            ("wav2vec 2.0", "10.3 / 7.1 / 5.8 / 4.6 / 3.6"),
            ("HuBERT", "10.1 / 6.8 / 5.5 / 4.5 / 3.7"),
            ("WavLM (MIX-94K)", "- / 6.6 / 5.5 / 4.6 / -"),
            ("data2vec", "8.4 / 6.3 / 5.3 / 4.6 / 3.7"),
        ),
    ),
    PaperTable(
        caption="GLUE dev average (MNLI, QNLI, RTE, MRPC, QQP, STS-B, CoLA, SST-2)",
        source="[P1 T4]",
        columns=("method", "GLUE average"),
        rows=(
            ("BERT", "80.7"),
            ("RoBERTa (re-trained baseline)", "82.5"),
            ("data2vec", "82.7"),
            ("data2vec + wav2vec 2.0-style span masking", "82.9"),
        ),
        highlight=("data2vec", "data2vec + wav2vec 2.0-style span masking"),
    ),
    PaperTable(
        caption="AudioSet mAP",
        source="[P1 T3]",
        columns=("method", "mAP"),
        rows=(
            ("SSAST", "31.0"),
            ("MaskSpec", "32.3"),
            ("MAE-AST", "30.6"),
            ("data2vec", "34.5"),
        ),
    ),
)

# data2vec 2.0 efficiency claims: only the abstract was consulted (data2vec.md §5)
PAPER_CLAIMS: tuple[tuple[str, str], ...] = (
    (
        "data2vec 2.0 matches MAE's ImageNet-1K accuracy with 16.4x less pre-training time.",
        "[P2 abstract]",
    ),
    (
        "data2vec 2.0 matches wav2vec 2.0 on LibriSpeech with 10.6x less pre-training time.",
        "[P2 abstract]",
    ),
    (
        "data2vec 2.0 matches a retrained RoBERTa on GLUE in half the pre-training time.",
        "[P2 abstract]",
    ),
    ("data2vec 2.0 ViT-L trained for 150 epochs reaches 86.8% ImageNet top-1.", "[P2 abstract]"),
)

SOURCES: tuple[tuple[str, str], ...] = (
    (
        "[P1]",
        "Baevski et al., data2vec: A General Framework for Self-supervised Learning in "
        "Speech, Vision and Language, ICML 2022, arXiv 2202.03555 (T = table).",
    ),
    (
        "[P2]",
        "Baevski et al., Efficient Self-supervised Learning with Contextualized Target "
        "Representations for Vision, Speech and Language (data2vec 2.0), arXiv 2212.07525.",
    ),
)
