"""Atomic training checkpoints: tensors in safetensors, everything else as JSON.

One file holds both (the JSON rides in the safetensors header metadata), so a single atomic
rename publishes a consistent state: a SIGKILL at any moment leaves the previous checkpoint
or the new one, never a mix. Nothing is pickled, so loading a file cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from d2v_pipeline.io import atomic_path

CHECKPOINT_FILE = "checkpoint.safetensors"
_META_KEY = "d2v_pipeline.meta"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match the model; the message names it."""


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` + JSON ``meta`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {_META_KEY: json.dumps({"format_version": FORMAT_VERSION, **meta})}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=header)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: (tensors, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"unreadable checkpoint {path}: {err}") from err
    if _META_KEY not in header:
        raise CheckpointError(f"{path} is not a d2v_pipeline checkpoint (no {_META_KEY} header)")
    meta = json.loads(header[_META_KEY])
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')} unsupported")
    return tensors, meta


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete temp files a killed writer left next to the checkpoint (``atomic_path`` names)."""
    stale = list(Path(directory).glob(f".{CHECKPOINT_FILE}.*.tmp"))
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
    """Model (student, head and teacher), optimiser state and ``meta`` in one atomic file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_flat(optimizer)
    tensors.update(opt_tensors)
    return save_checkpoint(path, tensors, {**meta, "optimizer": opt_meta})


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` in place from ``path``; returns the JSON meta."""
    tensors, meta = load_checkpoint(path)
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
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: optimiser state does not match: {err}") from err
    return meta
