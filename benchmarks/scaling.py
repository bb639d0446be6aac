"""Scaling benchmark: data-parallel pretraining on this machine, bf16 vs fp32, compile vs
eager, and what a GPU would reach by the FLOP count. Writes JSON; not a test.

    python benchmarks/scaling.py [--steps 20] [--repeats 3] [--out FILE]
    python benchmarks/scaling.py --quick        # smoke models, 2 steps: does it run?

Measured cases (image data2vec, the default model and batch of conf/base; the step is the
pipeline's own: the pretrain node's plan run through ``runtime.launch``):

- world size 1 and 2: gloo, 1 thread per process, the same global batch (each of the 2
  processes trains half of it); scaling efficiency = samples/s(2) / (2 x samples/s(1));
- bf16 vs fp32 autocast on the CPU, 1 process on every core;
- torch.compile vs eager, 1 process on every core, fp32.

Each case runs ``2 x steps`` optimiser steps and times the second half (the first holds the
warm-up and, for compile, the compilation); the median of ``repeats`` runs is kept. Only
meaningful on an otherwise idle machine. Keys per case: ``world_size``, ``precision``,
``compile``, ``samples_per_s``, ``step_ms``, ``threads_per_process``; top level: ``host``,
``started``, the ratios, and ``gpu_estimate`` (FLOP counts on paper, not a measurement).
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning worker threads collapse throughput whenever another
# process shares the cores (see d2v_pipeline/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pretrain_throughput import load_data  # noqa: E402

from d2v_pipeline.data2vec.models import build_pretrain_model  # noqa: E402
from d2v_pipeline.experiment import environment, load_parameters  # noqa: E402
from d2v_pipeline.io import atomic_write  # noqa: E402
from d2v_pipeline.pipelines.pretrain.nodes import (  # noqa: E402
    plan_pretraining,
    run_pretraining,
)

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon")
# A100 (SXM) dense bf16 tensor-core peak, and the share of it a well-fed transformer reaches
A100_BF16_PEAK = 312e12
ASSUMED_MFU = 0.4


def measure(
    params: dict[str, Any], runtime: dict[str, Any], steps: int, repeats: int, method: str
) -> dict[str, Any]:
    """Median over ``repeats`` runs of the timed second half of ``2 x steps`` steps."""
    info, data, origin = load_data("image")
    block = params["image"]["pretrain"]
    block = {
        **block,
        "state_dir": None,  # nothing resumable: every run trains from step 0
        "progress": False,
        "train": {**block["train"], "steps": 2 * steps, "log_every": steps, "checkpoint_every": 0},
    }
    plan = plan_pretraining(method, info, block, runtime)
    data = {k: v[: plan.train.batch_size * 8] for k, v in data.items()}
    rates = []
    for _ in range(repeats):
        result = run_pretraining(plan, data)
        rates.append(result.history[-1]["samples_per_s"])  # the timed (second) interval
    rate = statistics.median(rates)
    return {
        "method": method,
        "modality": "image",
        "data": origin,
        "world_size": runtime.get("nproc_per_node", 1),
        "precision": runtime.get("precision", "fp32"),
        "compile": runtime.get("compile", False),
        "threads_per_process": runtime.get("threads"),
        "batch_size": plan.train.batch_size,
        "steps_timed": steps,
        "repeats": repeats,
        "samples_per_s": rate,
        "step_ms": 1e3 * plan.train.batch_size / rate,
        "samples_per_s_runs": rates,
    }


def gpu_estimate(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Step time and samples/s of every default model on an A100 in bf16, from the library's
    FLOP count (``flops_per_step``) at ASSUMED_MFU of the peak: an estimate on paper. The
    default models are tiny (D 128, 4 blocks): on a GPU they are bound by kernel launches,
    not FLOPs, so read these as upper bounds for them; paper-size models get near it."""
    rows = []
    for modality in MODALITIES:
        info, data, _ = load_data(modality)
        for method in METHODS:
            plan = plan_pretraining(method, info, params[modality]["pretrain"], None)
            model = build_pretrain_model(method, plan.encoder, plan.method_config, seed=0)
            flops = model.flops_per_step(
                plan.train.batch_size, model.modality_ops.input_len(data["x"])
            )
            step_s = flops / (A100_BF16_PEAK * ASSUMED_MFU)
            rows.append(
                {
                    "modality": modality,
                    "method": method,
                    "batch_size": plan.train.batch_size,
                    "steps": plan.train.steps,
                    "model_flops_per_step": flops,
                    "estimated_step_ms": 1e3 * step_s,
                    "estimated_samples_per_s": plan.train.batch_size / step_s,
                    "estimated_run_s": plan.train.steps * step_s,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--env", default="base", help="Kedro environment of the models")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median kept)")
    parser.add_argument("--method", default="data2vec", choices=METHODS)
    parser.add_argument(
        "--quick", action="store_true", help="smoke models, 2 steps, 1 repeat; prints only"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    out_path = args.out
    if out_path is None and not args.quick:
        out_path = ROOT / "benchmarks" / "results" / "scaling.json"
    logging.basicConfig(level=logging.WARNING)  # the nodes' INFO lines would drown the table
    logging.getLogger("d2v_pipeline.pipelines.pretrain.nodes").setLevel(logging.ERROR)
    env = "smoke" if args.quick else args.env
    params = load_parameters(ROOT / "conf", env)
    steps, repeats = (2, 1) if args.quick else (args.steps, args.repeats)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    cases = [
        ("world size 1, 1 thread", {"nproc_per_node": 1, "threads": 1}),
        ("world size 2, 1 thread each", {"nproc_per_node": 2, "threads": 1}),
        ("fp32 eager", {"threads": cores}),
        ("bf16 eager", {"threads": cores, "precision": "bf16"}),
        ("fp32 compiled", {"threads": cores, "compile": True}),
    ]
    results = []
    for label, runtime in cases:
        t0 = time.perf_counter()
        try:
            row = measure(params, runtime, steps, repeats, args.method)
        except Exception as exc:  # e.g. compile without a C++ compiler: record, go on
            row = {"error": f"{type(exc).__name__}: {exc}", "samples_per_s": None}
            print(f"{label:30s} FAILED: {row['error']}", flush=True)
        else:
            print(
                f"{label:30s} {row['samples_per_s']:9.1f} samples/s {row['step_ms']:8.1f} "
                f"ms/step ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        results.append({"case": label, **row})
    rate = {r["case"]: r["samples_per_s"] for r in results}

    def ratio(num: str, den: str, scale: float = 1.0) -> float | None:
        return None if not rate[num] or not rate[den] else rate[num] / (scale * rate[den])

    one, two = "world size 1, 1 thread", "world size 2, 1 thread each"
    summary = {
        "scaling_efficiency_2_processes": ratio(two, one, 2.0),
        "speedup_2_processes": ratio(two, one),
        # step time ratios (< 1: faster) = inverse samples/s ratios
        "bf16_over_fp32_step_time": ratio("fp32 eager", "bf16 eager"),
        "compiled_over_eager_step_time": ratio("fp32 eager", "fp32 compiled"),
    }
    for key, value in summary.items():
        print(f"{key:32s} {'n/a' if value is None else f'{value:.3f}'}")
    report = {
        "benchmark": "scaling",
        "started": started,
        "env": env,
        "quick": args.quick,
        "host": {"cores": cores, **environment()},
        "torch_version": torch.__version__,
        **summary,
        "cases": results,
        "gpu_estimate": {
            "what": "A100 bf16 dense peak x an assumed MFU, from the library's FLOP count: "
            "an estimate on paper, not a measurement",
            "peak_flops_per_s": A100_BF16_PEAK,
            "assumed_mfu": ASSUMED_MFU,
            "models": gpu_estimate(params),
        },
    }
    if out_path is None:
        print(json.dumps(report, indent=2))
        return
    atomic_write(out_path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
