"""Where and how a training run executes: device, precision, compile, worker processes.

One :class:`Runtime` per modality (``<m>.runtime`` in the parameters) is passed to
pretraining, fine-tuning and probe feature extraction, so the device is chosen in one place.
The default ``Runtime()`` is today's run: one CPU process in fp32, and every helper here is
then a no-op (no process group, no autocast, no gradient scaler), so its numbers do not change.

Data parallelism uses PyTorch's own machinery: :func:`launch` starts ``nproc_per_node``
workers through ``torch.distributed`` elastic launching (the engine behind ``torchrun``), or,
when the process already runs under ``torchrun`` (``WORLD_SIZE`` in the environment), joins
that job's process group. The backend follows the device: NCCL on CUDA, gloo otherwise.
Every collective has a timeout (``Runtime.timeout_s``), so a rank that dies cannot leave the
others waiting forever; a dead worker ends the launch with :class:`DistributedRunError`,
which names the rank and its exit code or signal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from .config_base import ConfigError, from_dict, require

Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Execution settings of one run; none of them is part of what is learned, except that
    bf16/fp16 round the student's arithmetic and a world size > 1 reorders float sums."""

    device: Device = "cpu"  # "auto" = CUDA when available, else CPU
    precision: Precision = "fp32"  # fp16 needs CUDA (it needs a gradient scaler and fast fp16)
    compile: bool = False  # torch.compile the student encoder / classifier forward
    nproc_per_node: int = 1  # > 1: data-parallel workers on this machine
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    threads: int | None = None  # torch intra-op threads per process; None = leave as is
    timeout_s: float = 120.0  # process-group timeout: a collective waiting longer fails

    def __post_init__(self) -> None:
        # launch() branches on it; 0 or less would silently run nothing
        require(self.nproc_per_node >= 1, f"nproc_per_node must be >= 1, got {self.nproc_per_node}")


def runtime_from_dict(values: Mapping[str, Any] | None, where: str = "runtime") -> Runtime:
    """Build a :class:`Runtime` from a parameters block; unknown keys and bad values raise
    :class:`ConfigError` naming ``where.<key>``. None or {} = the default CPU fp32 run."""
    return from_dict(Runtime, values, where)


# ---------------------------------------------------------------- process group
class DistInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int
    is_main: bool  # rank 0: the one process that writes files and logs progress


def dist_info() -> DistInfo:
    """Rank, world size and local rank of this process; (0, 1, 0, True) without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo(0, 1, 0, True)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return DistInfo(rank, world, local_rank, rank == 0)


def shard_slice(batch_size: int, info: DistInfo | None = None) -> slice:
    """The rows of a global batch that this rank trains on: rank r gets the r-th part of
    ``torch.tensor_split(range(batch_size), world_size)`` (the first ``batch_size % W`` parts
    one row longer). The whole batch without a group."""
    info = info or dist_info()
    base, extra = divmod(batch_size, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return slice(start, start + base + (1 if info.rank < extra else 0))


def all_reduce_sum_(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks in place (a no-op in a single process); returns ``t``."""
    if dist_info().world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def collective_device() -> torch.device:
    """Where tensors for collectives live: the process's CUDA device under NCCL (``launch``
    set it from LOCAL_RANK), else the CPU (gloo, or no process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_gradients_(params: Iterable[Tensor]) -> None:
    """Replace every ``p.grad`` by its sum over all ranks, in one collective.

    A parameter no rank used this step (e.g. a layer dropped by layerdrop everywhere) keeps
    ``grad = None``, so AdamW skips it as a single process would; one that some rank used gets
    the sum, a missing gradient counting as zeros. A no-op in a single process.
    """
    if dist_info().world_size == 1:
        return
    params = list(params)
    if not params:
        return
    ref = params[0]
    pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    used = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([*(x.to(ref.dtype) for x in pieces), used])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    used = flat[-len(params) :].tolist()
    offset = 0
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone() if used[i] > 0 else None
        offset += n


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist_info().world_size > 1:
        dist.barrier()


# ---------------------------------------------------------------- device and precision
def resolve_device(rt: Runtime) -> torch.device:
    """The device of this process: ``cuda:<LOCAL_RANK>`` for CUDA under data parallelism.

    Raises ConfigError when the device is missing, or when fp16 is asked for off CUDA
    (fp16 needs a gradient scaler and fp16 kernels; on CPU use bf16)."""
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    kind = auto if rt.device == "auto" else rt.device
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("runtime.device is 'mps' but MPS is not available")
    if rt.precision == "fp16" and kind != "cuda":
        raise ConfigError(
            f"runtime.precision 'fp16' needs CUDA (device resolves to {kind!r}); "
            "use 'bf16' for mixed precision on CPU"
        )
    if kind == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(kind)


def autocast(rt: Runtime, device: torch.device) -> AbstractContextManager[Any]:
    """Mixed-precision region for the student's forward and loss; a no-op for fp32."""
    if rt.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if rt.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def fp32_region(device: torch.device) -> AbstractContextManager[Any]:
    """Autocast switched off: the teacher's targets, their norms and the loss reduction stay
    fp32 inside an :func:`autocast` region (spec: targets are computed in fp32)."""
    return torch.autocast(device_type=device.type, enabled=False)


def grad_scaler(rt: Runtime, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 needs (its small range underflows gradients); None otherwise."""
    if rt.precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for everything else (CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


# ---------------------------------------------------------------- launching
class DistributedRunError(RuntimeError):
    """A worker of a data-parallel run failed; ``rank`` is the first to fail, ``exitcode``
    its exit code (negative: killed by signal ``-exitcode``; None: killed by a signal the
    launcher did not see, only that the process vanished without a Python error)."""

    def __init__(self, message: str, rank: int, exitcode: int | None) -> None:
        super().__init__(message)
        self.rank, self.exitcode = rank, exitcode


def _under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _init_group(rt: Runtime) -> None:
    """Join the job's process group from the environment torchrun / the elastic agent set
    (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), with the backend of the device."""
    if rt.device == "mps" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("runtime.device 'mps' does not support more than one process")
    device = resolve_device(rt)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), timeout=timedelta(seconds=rt.timeout_s))


def _set_worker_threads(rt: Runtime) -> None:
    """Intra-op threads of a worker: ``rt.threads``, or 1 when unset and OMP_NUM_THREADS is not
    given either (torchrun's default: N processes × all cores would oversubscribe the CPU)."""
    if rt.threads is not None:
        torch.set_num_threads(rt.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def _write_report(report_dir: str, values: dict[str, Any]) -> None:
    """This worker's state for the launcher's error message (atomic: write, then rename)."""
    path = Path(report_dir) / f"rank{os.environ.get('RANK', '?')}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "time": time.time(), **values}))
    tmp.replace(path)


def _is_peer_error(err: BaseException) -> bool:
    """A collective failing because another rank went away (the consequence, not the cause)."""
    text = str(err)
    hints = ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out", "Timeout")
    return isinstance(err, dist.DistError) or any(h in text for h in hints)


def _worker(
    fn: Callable[..., Any], rt: Runtime, args: tuple, kwargs: dict[str, Any], report_dir: str
) -> Any:
    """Body of one elastic worker process: group up, run ``fn``, leave. Only rank 0's result
    travels back to the launcher (the others' would be pickled for nothing). The report file
    lets the launcher tell the rank that failed first from the ones that failed because of it."""
    _write_report(report_dir, {"state": "started"})
    try:
        _init_group(rt)
        try:
            _set_worker_threads(rt)
            result = fn(*args, **kwargs)
        finally:
            dist.destroy_process_group()
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"
        _write_report(report_dir, {"state": "error", "error": error, "peer": _is_peer_error(err)})
        raise
    _write_report(report_dir, {"state": "done"})
    return result if int(os.environ["RANK"]) == 0 else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def _describe_failure(err: Exception, report_dir: str) -> DistributedRunError:
    """The launcher's error: which rank failed first, and how.

    The elastic agent reports the first worker it notices, which may be a bystander whose
    collective broke because the culprit had died. The per-rank reports pick the culprit:
    a worker killed by a signal (no report of an error), else the earliest error that is not
    a broken collective."""
    failures = getattr(err, "failures", {}) or {}
    reports = {}
    for path in Path(report_dir).glob("rank*.json"):
        with contextlib.suppress(ValueError, OSError):
            reports[int(path.stem[4:])] = json.loads(path.read_text())
    seen_rank, seen = min(failures.items(), key=lambda kv: (kv[1].timestamp, kv[0]))
    errors = sorted(
        (r["time"], rank, r) for rank, r in reports.items() if r.get("state") == "error"
    )
    own = [e for e in errors if not e[2]["peer"]]
    vanished = sorted(rank for rank, r in reports.items() if r.get("state") == "started")
    if seen.exitcode < 0:
        rank, exitcode = seen_rank, seen.exitcode
        how = f"was killed by signal {-exitcode} ({_signal_name(-exitcode)})"
    elif own or (errors and not vanished):
        _, rank, r = (own or errors)[0]
        exitcode = 1
        how = f"raised {r['error']}"
    elif vanished:  # its exit status went to the agent, which only reported a bystander
        rank, exitcode = vanished[0], None
        how = "died without a Python error (killed by a signal, e.g. SIGKILL or out of memory)"
    else:
        rank, exitcode = seen_rank, seen.exitcode
        how = f"exited with code {exitcode}"
    pid = reports.get(rank, {}).get("pid", "?")
    others = [
        f"rank {k}: {r['error']}" for _, k, r in errors if k != rank
    ]  # the consequences, for the record
    message = (
        f"data-parallel run failed: rank {rank} (pid {pid}) {how}."
        + ("" if not others else " Then " + "; ".join(others) + ".")
        + " The other workers were stopped. Re-running the same command resumes from the "
        "last checkpoint written (when the run writes checkpoints)."
    )
    return DistributedRunError(message, rank, exitcode)


def launch(fn: Callable[..., Any], rt: Runtime, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on ``rt.nproc_per_node`` data-parallel workers; returns rank
    0's result.

    - Already in a process group: call ``fn`` as is.
    - Under ``torchrun`` (RANK and WORLD_SIZE set): join its group, call ``fn``, leave; each
      process returns its own result (``torchrun`` decides the world size, not ``rt``).
    - ``nproc_per_node == 1``: call ``fn`` directly in this process, no process group (the
      default run is exactly the single-process code).
    - Else: elastic launch of ``nproc_per_node`` spawned workers on this machine (c10d
      rendezvous on a free local port, no restarts). ``fn``, ``args`` and ``kwargs`` are
      pickled into the workers: ``fn`` must be a module-level function. A worker that raises
      or dies stops the others and raises :class:`DistributedRunError`.
    """
    if dist.is_available() and dist.is_initialized():
        return fn(*args, **kwargs)
    if _under_torchrun():
        _init_group(rt)
        try:
            _set_worker_threads(rt)
            return fn(*args, **kwargs)
        finally:
            dist.destroy_process_group()
    if rt.nproc_per_node == 1:
        return fn(*args, **kwargs)
    if rt.device == "mps":
        raise ConfigError("runtime.device 'mps' does not support nproc_per_node > 1")
    resolve_device(rt)  # fail here, in the launcher, on a missing device or fp16 on CPU
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=rt.nproc_per_node,
        run_id=f"d2v-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        rdzv_configs={"timeout": max(60, int(rt.timeout_s))},
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    with tempfile.TemporaryDirectory(prefix="d2v-launch-") as report_dir:
        try:
            results = elastic_launch(config, _worker)(fn, rt, args, kwargs, report_dir)
        except ChildFailedError as err:
            raise _describe_failure(err, report_dir) from None
    return results[0]
