"""``<m>.runtime`` (conf/base/parameters_runtime.yml): where and how a modality's training runs.

Mirrors the library's :class:`~d2v_pipeline.data2vec.runtime.Runtime` key for key, with its
defaults. One block per modality, read by every stage that runs the encoder (pretraining, the
probes' feature extraction, fine-tuning, tuning): the device is chosen in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field

from d2v_pipeline.data2vec.config_base import ConfigError
from d2v_pipeline.data2vec.runtime import Runtime as LibraryRuntime
from d2v_pipeline.data2vec.runtime import runtime_from_dict
from d2v_pipeline.schema.base import Count, LibraryBlock, Positive, PositiveInt
from d2v_pipeline.schema.check import validated

PARAMS_FILE = "parameters_runtime.yml"


class Runtime(LibraryBlock):
    """Device, precision, compile, processes, loader workers and threads (Runtime). The
    default is one CPU process in fp32: the run the committed results come from."""

    library = LibraryRuntime
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        description="auto = CUDA when present, else CPU"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        description="bf16 autocast (CPU, CUDA) | fp16 autocast + gradient scaler (CUDA only)"
    )
    compile: bool = Field(description="torch.compile the student / classifier forward")
    nproc_per_node: PositiveInt = Field(
        description="> 1: data-parallel (DDP) worker processes on this machine"
    )
    workers: Count = Field(
        description="data-loader worker processes (no effect yet: every stage indexes in-memory "
        "tensors)"
    )
    threads: PositiveInt | None = Field(description="torch threads per process; null = as is")
    timeout_s: Positive = Field(
        description="seconds a collective may wait for the other ranks before the run fails"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.precision == "fp16" and self.device in ("cpu", "mps"):
            yield "precision", f"fp16 needs CUDA (device is {self.device!r}); use bf16 on CPU"
        if self.device == "mps" and self.nproc_per_node > 1:
            yield "nproc_per_node", f"{self.nproc_per_node}: MPS runs in one process only"


def runtime_of(values: Mapping[str, Any] | None, modality: str) -> LibraryRuntime:
    """``<m>.runtime`` validated by the schema (errors name the file and the full key path)
    and turned into the library's :class:`~d2v_pipeline.data2vec.runtime.Runtime`. Absent =
    the schema's defaults (one CPU process, fp32)."""
    block = validated(Runtime, values, f"{modality}.runtime", PARAMS_FILE, ConfigError)
    return runtime_from_dict(block.model_dump(), f"{modality}.runtime")
