"""Kedro datasets that write atomically to the local filesystem.

Kedro's stock datasets write in place, so a run killed mid-save leaves a
truncated file that the next run would load. These classes write to a
temporary file next to the target and rename it over the target only when the
write finished (see :mod:`d2v_pipeline.io`). They are used in conf/*/catalog*.yml
as ``type: d2v_pipeline.datasets.<Name>``.

Local paths only: for S3/GCS/... keep the artefacts local and use a DVC remote.

Tables, JSON documents and figure folders have a ``preview`` method: Kedro-Viz shows the
first rows / the (shortened) document / one figure when a dataset node is clicked
(``kedro viz run``, or ``kedro viz build --include-previews``). The return annotation
(kedro_datasets' ImagePreview, JSONPreview, TablePreview; exactly that, Kedro-Viz reads its
name) tells Kedro-Viz how to draw it; a file not written yet previews as None (nothing).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview, JSONPreview, TablePreview

from d2v_pipeline.io import (
    _UMASK,
    CONTENT_HASH_KEY,
    DamagedFileError,
    EncoderWeights,
    atomic_write,
    check_table_rows,
    read_safetensors,
    write_safetensors,
)

log = logging.getLogger(__name__)

_REBUILD = "re-run the pipeline that writes it"


class DamagedArtefactError(DatasetError):
    """An artefact file is unreadable, cut short or changed since it was written; the
    message names the file and the command that rebuilds it."""


class _LocalFileDataset(AbstractDataset):
    """Shared plumbing: a local ``filepath``, a clear error when it is missing."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        if "://" in str(filepath) and not str(filepath).startswith("file://"):
            raise DatasetError(
                f"{type(self).__name__}: only local paths are supported, got {filepath!r} "
                "(use a DVC remote for remote storage)"
            )
        self._filepath = Path(str(filepath).removeprefix("file://"))
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _require(self) -> Path:
        if not self._filepath.exists():
            raise DatasetError(
                f"{type(self).__name__}: {self._filepath} does not exist; "
                "run the pipeline that produces it first"
            )
        return self._filepath


class _OptionalFileDataset(_LocalFileDataset):
    """A file that may legitimately be absent: with ``missing_ok: true`` a missing file
    loads as ``default`` (run bookkeeping a first run has not written yet, or an input of
    a partial report whose stage has not run)."""

    def __init__(
        self,
        filepath: str,
        missing_ok: bool = False,
        default: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata)
        self._missing_ok = missing_ok
        self._default = default

    def _absent(self) -> bool:
        """True when the file is missing and that is allowed (load returns ``default``)."""
        return self._missing_ok and not self._filepath.exists()


class TensorDictDataset(_LocalFileDataset):
    """A ``dict[str, torch.Tensor]`` stored as one safetensors file (no pickle involved).

    The header records the tensors' ``content_sha256`` and every load checks it (files
    written before that field existed load unchecked). A file that is unreadable or no longer
    matches its hash is refused with a :class:`DamagedArtefactError` naming the file and
    ``rebuild``, the command that writes it again.
    """

    def __init__(
        self,
        filepath: str,
        rebuild: str = _REBUILD,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata)
        self._rebuild = rebuild

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "rebuild": self._rebuild}

    def _read(self) -> tuple[dict[str, Any], dict[str, str]]:
        path = self._require()
        try:
            return read_safetensors(path)
        except DamagedFileError as err:
            raise DamagedArtefactError(f"{err}. Rebuild it: {self._rebuild}") from err

    def load(self) -> dict[str, Any]:
        return self._read()[0]

    def _check(self, data: Any) -> dict[str, Any]:
        import torch

        if not isinstance(data, dict) or not all(
            isinstance(v, torch.Tensor) for v in data.values()
        ):
            raise DatasetError(f"{self._filepath}: expected a dict of torch tensors")
        return data

    def save(self, data: dict[str, Any]) -> None:
        write_safetensors(self._filepath, self._check(data))


class EncoderDataset(TensorDictDataset):
    """An encoder's weights as a self-describing, hash-checked safetensors file.

    Saving an :class:`~d2v_pipeline.io.EncoderWeights` writes its ``header`` (modality, method,
    ``encoder_config`` JSON, format version; see :func:`~d2v_pipeline.io.encoder_header`) next
    to the tensors' ``content_sha256``, so a plain safetensors reader has what it needs to
    rebuild the model. Loading returns ``EncoderWeights`` (``.header``, ``.path``) after
    checking the hash; a file without one (written by an older version) loads with a warning.
    ``rebuild`` is the remedy a damaged file's error names, e.g. ``kedro run --namespaces
    image --pipelines pretrain`` (the catalog fills in the namespace), which rewrites the
    encoder from the finished training state in seconds.
    """

    def load(self) -> EncoderWeights:
        tensors, header = self._read()
        if CONTENT_HASH_KEY not in header:
            log.warning(
                "%s has no %s in its header (written before encoders recorded one): loading "
                "it unchecked; %s to add it",
                self._filepath,
                CONTENT_HASH_KEY,
                self._rebuild,
            )
        return EncoderWeights(tensors, header, self._filepath)

    def save(self, data: dict[str, Any]) -> None:
        header = dict(getattr(data, "header", None) or {})
        header.pop(CONTENT_HASH_KEY, None)  # recomputed from the tensors being written
        write_safetensors(self._filepath, self._check(data), header)


class JSONDataset(_OptionalFileDataset):
    """Any JSON-serialisable object, pretty-printed with sorted keys for stable diffs.

    With ``missing_ok: true`` a missing file loads as ``default``. Kedro-Viz previews it
    as JSON, long lists cut to ``max_items`` (metadata ``kedro-viz: preview_args``).
    """

    def load(self) -> Any:
        if self._absent():
            return copy.deepcopy(self._default)
        path = self._require()
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DamagedArtefactError(
                f"{path} is not valid JSON ({err}): cut short or edited. Rebuild it: {_REBUILD}"
            ) from err

    def save(self, data: Any) -> None:
        atomic_write(self._filepath, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def preview(self, max_items: int = 10) -> JSONPreview:
        if not self._filepath.is_file():
            return None
        with open(self._filepath, encoding="utf-8") as fh:
            data = json.load(fh)
        return JSONPreview(json.dumps(_shorten(data, max_items), indent=2, sort_keys=True))


def _shorten(data: Any, max_items: int) -> Any:
    """``data`` with every list cut to ``max_items`` (plus a note of how many were left out)."""
    if isinstance(data, dict):
        return {k: _shorten(v, max_items) for k, v in data.items()}
    if isinstance(data, list):
        head = [_shorten(v, max_items) for v in data[:max_items]]
        return head + ([f"... {len(data) - max_items} more"] if len(data) > max_items else [])
    return data


class YAMLDataset(_LocalFileDataset):
    """A YAML document (parameters shaped like conf/base/parameters_*.yml)."""

    def load(self) -> Any:
        with open(self._require(), encoding="utf-8") as fh:
            return yaml.safe_load(fh)

    def save(self, data: Any) -> None:
        atomic_write(self._filepath, yaml.safe_dump(data, sort_keys=False))


class CSVDataset(_OptionalFileDataset):
    """A pandas DataFrame as CSV (the index is not written).

    Only empty fields load as missing: a review that reads "NA" or "null" stays text.
    With ``missing_ok: true`` a missing file loads as ``default`` (None unless set).
    Kedro-Viz previews the first ``nrows`` rows as a table.
    """

    def load(self) -> pd.DataFrame | Any:
        if self._absent():
            return copy.deepcopy(self._default)
        path = self._require()
        content = path.read_bytes()
        try:
            text = content.decode("utf-8")
            if content and not content.endswith(b"\n"):  # to_csv ends every row with one
                raise ValueError(f"{path}: the last line has no newline")
            check_table_rows(path, text)
        except (UnicodeDecodeError, ValueError) as err:
            raise DamagedArtefactError(
                f"{path} looks cut short or edited ({err}). Rebuild it: {_REBUILD}"
            ) from err
        return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])

    def save(self, data: pd.DataFrame) -> None:
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(f"{self._filepath}: expected a pandas DataFrame, got {type(data)}")
        buf = io.StringIO()
        data.to_csv(buf, index=False)
        atomic_write(self._filepath, buf.getvalue())

    def preview(self, nrows: int = 10) -> TablePreview:
        if not self._filepath.is_file():
            return None
        df = pd.read_csv(self._filepath, nrows=nrows, keep_default_na=False, na_values=[""])
        return TablePreview(df.astype(object).where(df.notna(), None).to_dict(orient="split"))


class TextDataset(_LocalFileDataset):
    """A UTF-8 string (HTML, Markdown, a tokenizer's JSON)."""

    def load(self) -> str:
        return self._require().read_text(encoding="utf-8")

    def save(self, data: str) -> None:
        atomic_write(self._filepath, data)


class FiguresDataset(_LocalFileDataset):
    """A ``dict[str, matplotlib.figure.Figure]`` saved as ``<folder>/<key>.png``.

    The folder is written as a whole: figures go to a temporary sibling folder,
    which then replaces the old one, so a failed save leaves the old figures.
    Loading returns ``dict[str, Path]`` of the PNG files. Kedro-Viz previews one figure:
    the first of ``preview_args: {figure: [name, ...]}`` that exists, else the first file.
    """

    def __init__(
        self, filepath: str, dpi: int = 110, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(filepath, metadata)
        self._dpi = dpi

    def load(self) -> dict[str, Path]:
        folder = self._require()
        return {p.stem: p for p in sorted(folder.glob("*.png"))}

    def save(self, data: dict[str, Any]) -> None:
        import matplotlib.pyplot as plt

        target = self._filepath
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the usual folder mode
        try:
            for name, fig in data.items():
                fig.savefig(tmp / f"{name}.png", dpi=self._dpi, bbox_inches="tight")
                plt.close(fig)
            old = target.with_name(f".{target.name}.old")
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def preview(self, figure: str | list[str] | None = None) -> ImagePreview:
        if not self._filepath.is_dir():
            return None
        files = {p.stem: p for p in sorted(self._filepath.glob("*.png"))}
        wanted = [figure] if isinstance(figure, str) else list(figure or [])
        name = next((n for n in wanted if n in files), next(iter(files), None))
        if name is None:
            return None
        return ImagePreview(base64.b64encode(files[name].read_bytes()).decode("ascii"))


class DirectoryDataset(_LocalFileDataset):
    """A folder that a node manages itself (e.g. a resumable training state).

    Loading returns the folder's ``Path`` (created if missing) so the catalog,
    not the node, decides where it lives; saving is not supported.
    """

    def load(self) -> Path:
        self._filepath.mkdir(parents=True, exist_ok=True)
        return self._filepath

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath}: DirectoryDataset is read-only (a folder handle)")

    def _exists(self) -> bool:
        return True


class BaseParametersDataset(AbstractDataset):
    """The parameters of the base environment (``conf/base``), read-only.

    The report compares them with the run's parameters to show what a run changed.
    ``conf_source`` is relative to the project folder (the working directory of ``kedro run``).
    """

    def __init__(self, conf_source: str = "conf", metadata: dict[str, Any] | None = None) -> None:
        self._conf_source = conf_source
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"conf_source": self._conf_source}

    def load(self) -> dict[str, Any]:
        from kedro.config import OmegaConfigLoader

        if not Path(self._conf_source, "base").is_dir():
            raise DatasetError(f"BaseParametersDataset: {self._conf_source}/base is not a folder")
        loader = OmegaConfigLoader(
            conf_source=self._conf_source, base_env="base", default_run_env="base"
        )
        return dict(loader["parameters"])

    def save(self, data: Any) -> None:
        raise DatasetError("BaseParametersDataset is read-only")
