"""Glue between Kedro parameters, ingested data and the data2vec library.

The library takes dataclass configs; Kedro gives nested dicts. This module
builds the configs (filling in what the data decides: image size, vocabulary,
special token ids, clip length) so that pretraining, fine-tuning and tuning
build exactly the same encoder for a modality. It also gathers provenance
(package versions, git commit, hardware) for the metadata files.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the library load lazily: the Kedro hooks import this module
    import torch

    from d2v_pipeline.data2vec.config import EncoderConfig

PACKAGES = ("torch", "kedro", "dvc", "optuna", "numpy", "pandas", "scikit-learn", "tokenizers")


def encoder_config(dataset_info: Mapping[str, Any], params: Mapping[str, Any]) -> EncoderConfig:
    """Encoder config from ``params`` (parameters_pretrain.yml ``<m>.pretrain.encoder``),
    completed with the shape facts recorded by ingest in ``dataset_info``.

    A value set in params that contradicts the data (e.g. ``image_size: 32`` for 28x28
    digits) is an error naming the key, not a silent override.
    """
    from d2v_pipeline.data2vec.config import encoder_config_from_dict

    modality = dataset_info["modality"]
    params = dict(params or {})
    derived: dict[str, Any] = {}
    if modality == "image":
        channels, height, width = dataset_info["input_shape"]
        if height != width:
            raise ValueError(f"image.pretrain.encoder: images must be square, got {height}x{width}")
        derived = {"image_size": int(height), "in_channels": int(channels)}
    elif modality == "speech":
        derived = {"sample_len": int(dataset_info["input_shape"][-1])}
        if "sample_rate" in dataset_info:
            derived["sample_rate"] = int(dataset_info["sample_rate"])
    elif modality == "text":
        derived = {
            "vocab_size": int(dataset_info["vocab_size"]),
            "pad_id": int(dataset_info["pad_id"]),
            "mask_id": int(dataset_info["mask_id"]),
            "cls_id": dataset_info.get("cls_id"),
            "seq_len": int(dataset_info["seq_len"]),
        }
        special = [dataset_info.get(k) for k in ("eos_id", "unk_id")]
        derived["special_ids"] = [int(s) for s in special if s is not None]
    for key, value in derived.items():
        if key in params and params[key] != value:
            raise ValueError(
                f"{modality}.pretrain.encoder.{key}: {params[key]!r} contradicts the data "
                f"({value!r}, from {modality}.dataset_info); remove the key to use the data's value"
            )
        params[key] = value
    return encoder_config_from_dict(modality, params)


def pretraining_data(model_input: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unlabelled pretraining tensors: the train split (+ extra unlabelled text), never val/test."""
    import torch

    x = [model_input["train.x"]]
    masks = [model_input["train.attention_mask"]] if "train.attention_mask" in model_input else []
    if "unlabelled.x" in model_input:
        x.append(model_input["unlabelled.x"])
        if masks:
            masks.append(model_input["unlabelled.attention_mask"])
    data = {"x": torch.cat(x)}
    if masks:
        data["attention_mask"] = torch.cat(masks)
    return data


def load_parameters(conf_source: str | Path, env: str = "base") -> dict[str, Any]:
    """Kedro parameters of ``env`` merged over base, as the project's settings merge them
    (soft merge), for scripts that run outside a Kedro session (benchmarks)."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        conf_source=str(conf_source),
        base_env="base",
        default_run_env=env,
        merge_strategy={"parameters": "soft"},
    )
    return dict(loader["parameters"])


# What a run writes on purpose: its data root (conf/<env>/globals.yml ``data_root``) and,
# for `dvc repro`, dvc.lock. Changes there do not make the code or config a run used dirty.
RUN_OUTPUT_FILES = ("dvc.lock",)
DEFAULT_DATA_ROOT = "data"


@dataclass(frozen=True)
class GitState:
    """The git checkout a run starts from.

    Attributes:
        commit: short sha of HEAD; None outside git (or before the first commit).
        changes: paths (relative to the repository root, untracked ones included) that
            differ from HEAD outside the run outputs; empty = a clean tree.
    """

    commit: str | None
    changes: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.changes

    def describe(self) -> str | None:
        """``<sha>``, ``<sha>+dirty``, or None outside git."""
        if self.commit is None:
            return None
        return self.commit + ("" if self.clean else "+dirty")


def _git(path: str | Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def _porcelain_paths(out: str) -> list[str]:
    """Paths of ``git status --porcelain=v1 -z`` (both sides of a rename)."""
    entries, paths = out.split("\0"), []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # the original path follows as its own entry
            paths.append(entries[i])
            i += 1
    return paths


def git_state(path: str | Path = ".", data_root: str | Path = DEFAULT_DATA_ROOT) -> GitState:
    """The commit at ``path`` and the changes outside the run outputs: ``data_root``
    (relative to ``path``) and dvc.lock, which a run or ``dvc repro`` rewrites on purpose."""
    path = Path(path).resolve()
    try:
        top = Path(_git(path, "rev-parse", "--show-toplevel").strip())
        commit = _git(path, "rev-parse", "--short", "HEAD").strip() or None
        status = _git(path, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    except (OSError, subprocess.SubprocessError):
        return GitState(commit=None)
    outputs = [(path / data_root).resolve(), *(path / f for f in RUN_OUTPUT_FILES)]
    changes = tuple(
        p
        for p in _porcelain_paths(status)
        if not any((top / p).resolve().is_relative_to(out) for out in outputs)
    )
    return GitState(commit=commit, changes=changes)


_RUN_GIT_STATE: GitState | None = None


def set_run_git_state(state: GitState | None) -> None:
    """Record the git state of the current run (d2v_pipeline.hooks does, once at its start),
    so every node's metadata names the same commit; None forgets it."""
    global _RUN_GIT_STATE
    _RUN_GIT_STATE = state


def git_commit(path: str | Path = ".") -> str | None:
    """``<sha>`` or ``<sha>+dirty`` (changes outside the run outputs, see :func:`git_state`),
    None outside git. Inside a Kedro run: the state recorded at the run's start."""
    state = _RUN_GIT_STATE if _RUN_GIT_STATE is not None else git_state(path)
    return state.describe()


def environment() -> dict[str, Any]:
    """Package versions, Python, hardware and threads, for metadata and the report."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    try:
        versions["d2v_pipeline"] = importlib_metadata.version("d2v_pipeline")
    except importlib_metadata.PackageNotFoundError:
        versions["d2v_pipeline"] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "packages": versions,
        "git_commit": git_commit(),
    }


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()
