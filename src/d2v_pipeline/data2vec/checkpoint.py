"""Atomic training checkpoints: tensors in safetensors, everything else as JSON.

One file holds both (the JSON rides in the safetensors header metadata), so a single atomic
rename publishes a consistent state: a SIGKILL at any moment leaves the previous checkpoint
or the new one, never a mix. Nothing is pickled, so loading a file cannot run code.

The header also records the tensors' ``content_sha256`` (:func:`d2v_pipeline.io.tensors_sha256`),
so a checkpoint whose bytes changed on disk is detected instead of resumed from. A training
state keeps the last two checkpoints (``checkpoint.safetensors`` and
``checkpoint.previous.safetensors``); :func:`resume_training_state` moves a damaged one aside
(``checkpoint.damaged-<n>.safetensors``, with a warning naming it) and falls back to the
previous checkpoint or to a fresh start: a damaged state costs time, never a dead end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from d2v_pipeline.io import DamagedFileError, read_safetensors, write_safetensors

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.safetensors"
_META_KEY = "d2v_pipeline.meta"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match the model; the message names it."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.previous.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _damaged_path(path: Path) -> Path:
    """The first free ``<stem>.damaged-<n><suffix>`` next to ``path`` (the stem without any
    ``.previous``, so both copies of one state are numbered in one series)."""
    stem = path.stem.removesuffix(".previous")
    n = 1
    while (target := path.with_name(f"{stem}.damaged-{n}{path.suffix}")).exists():
        n += 1
    return target


def save_checkpoint(
    path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any], keep_previous: bool = False
) -> Path:
    """Write ``tensors`` + JSON ``meta`` to ``path`` atomically (temp file + rename).

    With ``keep_previous`` the checkpoint being replaced stays as :func:`previous_path`
    (a hard link, made before the rename: at every moment ``path`` holds a complete
    checkpoint, old or new, and the previous one survives a damaged newest one).
    """
    path = Path(path)
    if keep_previous and path.is_file():
        _keep_as_previous(path)
    header = {_META_KEY: json.dumps({"format_version": FORMAT_VERSION, **meta})}
    write_safetensors(path, tensors, header)
    return path


def _keep_as_previous(path: Path) -> None:
    previous = previous_path(path)
    previous.unlink(missing_ok=True)
    try:
        os.link(path, previous)
    except OSError:  # a filesystem without hard links: copy, atomically
        tmp = previous.with_name(f".{previous.name}.tmp")
        shutil.copy2(path, tmp)
        os.replace(tmp, previous)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: (tensors, meta).

    Raises FileNotFoundError for a missing file, CheckpointError (naming the file) for one
    that is unreadable, cut short, changed since it was written (content hash), or not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        tensors, header = read_safetensors(path)
    except DamagedFileError as err:
        raise CheckpointError(f"unreadable checkpoint: {err}") from err
    if _META_KEY not in header:
        raise CheckpointError(f"{path} is not a d2v_pipeline checkpoint (no {_META_KEY} header)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: damaged {_META_KEY} header ({err})") from err
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: format_version {version} unsupported")
    return tensors, meta


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete temp files a killed writer left next to the checkpoint (``atomic_path`` names)."""
    directory = Path(directory)
    stale = list(directory.glob(f".{CHECKPOINT_FILE}.*.tmp"))
    stale += directory.glob(f".{previous_path(CHECKPOINT_FILE).name}*.tmp")
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _optimizer_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            name = f"optim.{idx}.{key}"
            if isinstance(value, Tensor):
                tensors[name] = value
            else:
                scalars[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    items = [(k, v) for k, v in tensors.items() if k.startswith("optim.")]
    items += list(meta["scalars"].items())
    for name, value in items:
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> Path:
    """Model (student, head and teacher), optimiser state and ``meta`` in one atomic file; the
    checkpoint it replaces is kept as :func:`previous_path` (the last two survive)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_flat(optimizer)
    tensors.update(opt_tensors)
    return save_checkpoint(path, tensors, {**meta, "optimizer": opt_meta}, keep_previous=True)


def _restore_all_or_nothing(
    path: str | Path,
    tensors: dict[str, Tensor],
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Restore ``model`` and ``optimizer`` in place; when the file does not fit
    (CheckpointError), both are put back as they were, so the caller can fall back to another
    checkpoint or a fresh start with exactly the fresh initialisation."""
    model_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_before = optimizer.state_dict()
    try:
        _restore(path, tensors, meta, model, optimizer)
    except BaseException:
        model.load_state_dict(model_before)
        optimizer.load_state_dict(opt_before)
        raise


def _restore(
    path: str | Path,
    tensors: dict[str, Tensor],
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(model_sd, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise CheckpointError(f"{path} does not match the model: {err}") from err
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: optimiser state does not match: {err!r}") from err


def resume_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    check: Callable[[dict[str, Any], Path], None] | None = None,
    required: Iterable[str] = (),
) -> tuple[dict[str, Any], Path] | None:
    """Restore the newest usable checkpoint of a training state: ``(meta, file)``, or None for
    a fresh start (no checkpoint, or none usable).

    Tries ``path`` and then :func:`previous_path`. A file that cannot be loaded (unreadable,
    cut short, content hash mismatch, not matching the model or optimiser, or its meta lacks
    a ``required`` key) is damaged: it is renamed to ``checkpoint.damaged-<n>.safetensors``
    (kept for inspection; safe to delete) with a warning naming it, and the next candidate is
    tried. ``model`` and ``optimizer`` are only changed by the checkpoint that is returned.

    ``check(meta, file)`` runs on the loaded checkpoint; what it raises (e.g. "made with
    another config") propagates: a checkpoint of another run is not damaged, and is not moved.
    """
    path = Path(path)
    required = tuple(required)
    candidates = [p for p in (path, previous_path(path)) if p.is_file()]
    for i, candidate in enumerate(candidates):
        try:
            tensors, meta = load_checkpoint(candidate)
            missing = [key for key in required if key not in meta]
            if missing:
                raise CheckpointError(f"{candidate}: meta lacks {missing}")
            _restore_all_or_nothing(candidate, tensors, meta, model, optimizer)
        except CheckpointError as err:
            following = candidates[i + 1 :]
            then = f"trying {following[0]}" if following else "training restarts from step 0"
            _move_aside(candidate, err, then)
            continue
        if check is not None:
            check(meta, candidate)
        if candidate != path:
            log.warning("resuming from the previous checkpoint %s", candidate)
        return meta, candidate
    return None


def _move_aside(candidate: Path, err: Exception, then: str) -> Path:
    """Rename a damaged checkpoint out of the way (kept, never deleted) and say so."""
    target = _damaged_path(candidate)
    try:
        os.replace(candidate, target)
    except OSError as move_err:
        raise CheckpointError(
            f"{candidate} is damaged ({err}) and could not be moved aside ({move_err}): "
            f"delete {candidate} and run again"
        ) from err
    log.warning(
        "training state %s is damaged or unusable (%s): moved it to %s (kept for inspection; "
        "safe to delete); %s",
        candidate,
        err,
        target,
        then,
    )
    return target
