"""Atomic file writes, content hashing, and the checked tensor-file format.

Every artefact the project writes goes through :func:`atomic_write`: the bytes
land in a temporary file in the same folder, are flushed to disk, and only then
renamed over the target. A run that dies half-way leaves the previous file (or
no file), never a truncated one that a later run would trust.

Tensor files (safetensors) written through :func:`write_safetensors` carry the sha256 of
their tensors in the header (``content_sha256``); :func:`read_safetensors` recomputes it, so a
file whose bytes changed after it was written (a bad copy, a tampered weight, a reshaped
tensor) is refused instead of being evaluated. Files without the field (written before it
existed) still load.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)

CONTENT_HASH_KEY = "content_sha256"  # safetensors header field: see tensors_sha256


class DamagedFileError(ValueError):
    """A file's bytes are not what the project wrote: unreadable, cut short, or its content no
    longer matches the hash recorded when it was written. The message names the file."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success.

    Use this for writers that insist on a file name (safetensors, matplotlib, sqlite).
    On any exception the temporary file is removed and ``target`` is untouched.
    The file gets the usual mode (0666 minus the umask, 0644 by default) even when the writer
    replaced the temporary file with its own (safetensors does: its files came out 0600).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp (and safetensors) make 0600
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(
    target: str | os.PathLike[str],
    data: bytes | str | Callable[[IO[bytes]], None],
) -> Path:
    """Write ``data`` (bytes, text, or a function that writes to a binary file) atomically."""
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        elif isinstance(data, str):
            fh.write(data.encode("utf-8"))
        else:
            fh.write(data)
    return Path(target)


def sha256_bytes(*chunks: bytes) -> str:
    """Hex SHA-256 of the concatenation of ``chunks``."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and raw bytes, in sorted name order.

    Dtype and shape are hashed with the bytes, so a reshaped or re-typed tensor with the same
    bytes is caught too. Independent of the file's header, so the value is the same before a
    save and after a load. Ingest's ``content_hash`` is this hash;
    benchmarks/weights_fingerprint.py recomputes it on its own (it must not import the tree
    it checks).
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    header: Mapping[str, str] | None = None,
) -> str:
    """Write ``tensors`` to ``path`` atomically with ``header`` and their ``content_sha256``.

    Safetensors header values must be strings. Returns the content hash.
    """
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    digest = tensors_sha256(flat)
    meta = {str(k): str(v) for k, v in (header or {}).items()}
    meta[CONTENT_HASH_KEY] = digest
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)
    return digest


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, header) of a safetensors file, its content hash checked when it has one.

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: empty, not safetensors, cut short, or the tensors do not hash to the
            header's ``content_sha256``; the message names the file (and both hashes).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise DamagedFileError(f"{path} is empty (0 bytes): an interrupted copy or download")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DamagedFileError(
            f"{path} is not a readable safetensors file ({size} bytes; {err})"
        ) from err
    recorded = header.get(CONTENT_HASH_KEY)
    if recorded is not None:
        actual = tensors_sha256(tensors)
        if actual != recorded:
            raise DamagedFileError(
                f"{path}: its tensors hash to {actual} but the file records {CONTENT_HASH_KEY} "
                f"{recorded}: the weights changed after the file was written (damaged or edited)"
            )
    return tensors, header


class EncoderWeights(dict):
    """An encoder's ``state_dict`` plus the header of the file it came from or goes to.

    Behaves as the plain ``dict[str, Tensor]`` every consumer expects; ``header`` (str -> str:
    ``modality``, ``method``, ``encoder_config`` JSON, ``content_sha256``, ...) rides along so
    the catalog can write a self-describing file, and ``path`` names the file it was loaded
    from (for error messages downstream).
    """

    def __init__(
        self,
        tensors: Mapping[str, Any] | None = None,
        header: Mapping[str, str] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(tensors or {})
        self.header: dict[str, str] = dict(header or {})
        self.path: Path | None = Path(path) if path is not None else None


ENCODER_FORMAT = "d2v_pipeline.encoder"
ENCODER_FORMAT_VERSION = "1"


def encoder_header(
    modality: str, method: str, encoder_config: Mapping[str, Any], rebuild: str
) -> dict[str, str]:
    """The safetensors header of an encoder file: enough to rebuild the model from the file
    alone (``load_encoder(json.loads(h["encoder_config"]), tensors, h["modality"])``).

    Values are strings (safetensors requires it); ``content_sha256`` is added on write.
    """
    return {
        "format": ENCODER_FORMAT,
        "format_version": ENCODER_FORMAT_VERSION,
        "modality": modality,
        "method": method,
        "encoder_config": json.dumps(dict(encoder_config), sort_keys=True),
        "load_with": "d2v_pipeline.data2vec.load_encoder(json.loads(encoder_config), "
        "tensors, modality)",
        "rebuild": rebuild,
    }


def check_table_rows(
    path: str | os.PathLike[str],
    content: str,
    sep: str = ",",
    quoting: int = csv.QUOTE_MINIMAL,
) -> None:
    """Every non-blank record of a delimited table has as many fields as its header.

    pandas fills a short row with missing values without a word, so a row cut short (a
    truncated download, a missing separator) would otherwise become a row with an empty label
    or a shifted column. Blank and whitespace-only lines are left to the caller (pandas
    skips them). Raises ValueError naming the file and the line where the record starts.
    """
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(content) + 1))  # one long cell is not an error
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=sep, quoting=quoting)
    width, header_line, start = None, 0, 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                if width is None:
                    width, header_line = len(row), start
                elif len(row) != width:
                    raise ValueError(
                        f"{path}: line {start}: {len(row)} field(s), but the header on line "
                        f"{header_line} has {width} (separator {sep!r}); a row cut short or a "
                        "stray separator: fix or remove that line"
                    )
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ValueError(f"{path}: line {start}: not a readable table row ({exc})") from exc
    finally:
        csv.field_size_limit(old_limit)
