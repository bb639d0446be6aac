"""Ingest's parameter reading (through the schema) and the split errors' counts and remedies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2v_pipeline.pipelines.ingest import nodes
from d2v_pipeline.pipelines.ingest.params import IngestParameterError, parse_ingest_params


def _folder(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for label, count in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_every_problem_of_the_block_is_reported_at_once(ingest_params):
    params = ingest_params("image", seed=-1, val_fraction=1.5, max_exmaples=3)
    with pytest.raises(IngestParameterError) as err:
        parse_ingest_params("image", params)
    assert str(err.value).splitlines() == [
        "parameters_ingest.yml: image.ingest.seed: -1 is outside [0, inf]",
        "parameters_ingest.yml: image.ingest.val_fraction: 1.5 is outside (0, 1)",
        "parameters_ingest.yml: image.ingest.max_exmaples: unknown key; did you mean "
        "'max_examples'?",
    ]


def test_the_chosen_source_needs_its_block(ingest_params):
    params = ingest_params("image", source="folder")
    del params["folder"]
    with pytest.raises(IngestParameterError, match=r"image\.ingest\.folder: missing: source"):
        parse_ingest_params("image", params)


def test_a_class_of_two_is_counted_exactly_and_the_remedy_given(ingest_params, tmp_path):
    root = _folder(tmp_path / "images", {"cat": 2, "dog": 6, "eel": 6})
    params = ingest_params("image", source="folder", folder={"root": str(root)})
    data = nodes.load_image_source(params)
    assert np.bincount(data.labels).tolist() == [2, 6, 6]
    with pytest.raises(ValueError) as err:
        nodes.split_dataset(data, params)
    message = str(err.value)
    assert "class 'cat' (id 0) has only 2 examples: 1 for test (20%) and 1 for val (10%)" in message
    assert "add 1 more example(s) of it, or remove the class from the source" in message
    assert "max_examples" not in message  # nothing was subsampled


def test_a_class_thinned_by_max_examples_says_so(ingest_params):
    params = ingest_params("image", max_examples=20)  # 2 digits per class out of ~500
    data = nodes.load_image_source(params)
    with pytest.raises(ValueError) as err:
        nodes.split_dataset(data, params)
    assert "has only 2 examples" in str(err.value)
    assert "after max_examples: 20 subsampled the source; raise it or set it to null" in str(
        err.value
    )


def test_big_fractions_ask_for_smaller_fractions(ingest_params, tmp_path):
    root = _folder(tmp_path / "images", {"cat": 4, "dog": 4})
    params = ingest_params(
        "image", source="folder", folder={"root": str(root)}, val_fraction=0.25, test_fraction=0.7
    )
    data = nodes.load_image_source(params)
    with pytest.raises(ValueError, match="lower val_fraction / test_fraction"):
        nodes.split_dataset(data, params)
