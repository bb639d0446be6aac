"""Text sources on real Rotten Tomatoes snippets: cleaning, CSV/TSV tables, BPE tokenizer."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from d2v_pipeline.sources.text import (
    SPECIAL_TOKENS,
    encode_texts,
    read_rotten_tomatoes,
    read_text_table,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def reviews():
    return read_rotten_tomatoes()


@pytest.fixture(scope="module")
def tokenizer(reviews):
    return train_tokenizer(reviews.texts[:3000], vocab_size=1024, min_frequency=2)


def test_rotten_tomatoes_is_clean_and_labelled(reviews):
    assert len(reviews) > 12_000 and reviews.labels.dtype == np.int64
    assert reviews.class_names == ["rotten", "fresh"]
    fresh, rotten = np.bincount(reviews.labels)[[1, 0]]
    assert fresh > rotten > 5_000  # 7,403 fresh / 5,405 rotten before cleaning
    assert all(t and t == t.strip() for t in reviews.texts)
    assert len(set(reviews.texts)) == len(reviews.texts)
    assert 1_000 < len(reviews.unlabelled) < 1_100  # plot summaries
    assert not set(reviews.unlabelled) & set(reviews.texts)
    assert len(read_rotten_tomatoes(include_plot=False).unlabelled) == 0


def test_sst2_style_tsv_skips_empty_rows_with_a_count(tmp_path, reviews, caplog):
    lines = ["sentence\tlabel"]
    for text, label in zip(reviews.texts[:20], reviews.labels[:20], strict=True):
        lines.append(f"{text}\t{label}")
    lines.insert(5, "\"it 's unbalanced\t1")  # a stray quote, as in SST-2
    lines.insert(7, "   \t0")  # an empty text
    lines.append(f"{reviews.texts[0]}\t{reviews.labels[0]}")  # a duplicate
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        data = read_text_table(path)
    assert "skipped 1 rows with an empty text" in caplog.text and "train.tsv" in caplog.text
    assert len(data) == 21 and data.class_names == ["0", "1"]
    assert data.texts[4] == "\"it 's unbalanced"
    assert data.labels.tolist()[:4] == reviews.labels[:4].tolist()


def test_csv_with_named_columns_and_string_labels(tmp_path, reviews):
    path = tmp_path / "reviews.csv"
    rows = ["review,sentiment"] + [
        f'"{t.replace(chr(34), chr(39))}",{reviews.class_names[y]}'
        for t, y in zip(reviews.texts[:30], reviews.labels[:30], strict=True)
    ]
    path.write_text("\n".join(rows), encoding="utf-8")
    data = read_text_table(path, text_column="review", label_column="sentiment")
    assert data.class_names == ["fresh", "rotten"]  # sorted
    names = [data.class_names[i] for i in data.labels]
    assert names == [reviews.class_names[y] for y in reviews.labels[:30]]


def test_text_table_bad_inputs_are_named(tmp_path):
    path = tmp_path / "t.tsv"
    with pytest.raises(FileNotFoundError, match=r"t\.tsv"):
        read_text_table(path)
    path.write_text("sentence\tlabel\ngood film\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.tsv: label_column 'polarity' is not a column"):
        read_text_table(path, label_column="polarity")
    path.write_text("sentence\tlabel\ngood film\t1\nbad film\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.tsv: data row 1: empty 'label'"):
        read_text_table(path)
    path.write_bytes(b"sentence\tlabel\ngood\t1\n\xff\xfe broken\t0\n")
    with pytest.raises(ValueError, match=r"t\.tsv: line 3: not UTF-8"):
        read_text_table(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_text_table(path)


def test_tokenizer_round_trips_and_fixes_special_ids(reviews, tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.get_vocab_size() == 1024
    for text in [*reviews.texts[5000:5200], "Ünïcödé café 🎬 — tabs\tand  spaces"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == text


def test_encode_texts_adds_cls_eos_pads_and_truncates(reviews, tokenizer):
    texts = reviews.texts[:200]
    ids, mask, truncated = encode_texts(tokenizer, texts, seq_len=24)
    assert ids.shape == mask.shape == (200, 24) and ids.dtype == np.int64 and mask.dtype == bool
    assert np.all(ids[:, 0] == 1)  # <cls>
    lengths = mask.sum(axis=1)
    assert np.all(ids[np.arange(200), lengths - 1] == 4)  # <eos> ends every row
    assert np.all((ids == 0) == ~mask)  # <pad> exactly where masked out
    raw = [len(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    assert truncated == sum(n > 22 for n in raw) > 0
    np.testing.assert_array_equal(lengths, np.minimum(raw, 22) + 2)
    short = tokenizer.decode(ids[np.argmin(raw)].tolist())
    assert short == texts[int(np.argmin(raw))]
    with pytest.raises(ValueError, match="no room"):
        encode_texts(tokenizer, texts, seq_len=2)
