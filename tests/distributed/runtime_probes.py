"""Worker functions for the runtime tests (module level: ``runtime.launch`` pickles them)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from d2v_pipeline.data2vec.runtime import (
    all_reduce_sum_,
    barrier,
    dist_info,
    shard_slice,
    sum_gradients_,
)


def where_am_i(tag: str) -> dict[str, Any]:
    """Where a launched function ran: process, group state, rank info."""
    return {
        "tag": tag,
        "pid": os.getpid(),
        "group": dist.is_initialized(),
        "info": tuple(dist_info()),
    }


def probe(batch_size: int) -> dict[str, Any]:
    """Collectives and helpers as a rank sees them; rank 0 returns every rank's view."""
    info = dist_info()
    total = all_reduce_sum_(torch.tensor([float(info.rank + 1)]))
    # gradients: p0 used by rank 0 only, p1 by both ranks, p2 by nobody
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    if info.rank == 0:
        params[0].grad = torch.full((3,), 1.0)
    params[1].grad = torch.full((3,), float(info.rank + 1))
    sum_gradients_(params)
    grads = [None if p.grad is None else p.grad.tolist() for p in params]
    barrier()
    view = {
        "info": tuple(info),
        "backend": dist.get_backend(),
        "threads": torch.get_num_threads(),
        "sum": float(total),
        "rows": shard_slice(batch_size, info),
        "grads": grads,
    }
    views: list[Any] = [None] * info.world_size
    dist.all_gather_object(views, view)
    return {"views": views, "pid": os.getpid()}


def fail_on_rank_1(message: str) -> None:
    """Rank 1 raises; rank 0 waits in a collective, which then breaks."""
    if dist_info().rank == 1:
        raise ValueError(message)
    barrier()
