"""Pretraining throughput: steps/s, samples/s, model FLOP/s and the fraction of a matmul
peak measured in the same process on the same threads. Writes JSON; not a test.

    python benchmarks/pretrain_throughput.py [--env base] [--steps 30] [--out FILE]

For each modality and method, the encoder, method and batch settings come from
``conf/<env>/parameters_pretrain.yml`` (merged over base), so the figures describe the
default models. Inputs are real ingested tensors when ``data/05_model_input`` has them, else
random tensors of the same shape (speed does not depend on content). One full step is what
``d2v_pipeline.data2vec.train.pretrain`` does: masking, student forward/backward, teacher
forward and targets, optimiser step, EMA update.

Model FLOPs are nanoGPT-style matmul counts (``model.flops_per_step``); the peak is the best
of square fp32 matmuls (1024 and 2048) timed here. A plain ``torch.nn.TransformerEncoder``
(width 128, depth 6) is timed the same way as a reference for what this CPU reaches on
small transformers.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning worker threads collapse throughput whenever another
# process shares the cores (see d2v_pipeline/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from d2v_pipeline.data2vec import config as cfgs  # noqa: E402
from d2v_pipeline.data2vec.models import build_pretrain_model  # noqa: E402
from d2v_pipeline.data2vec.train import pretrain  # noqa: E402
from d2v_pipeline.experiment import encoder_config, environment, load_parameters  # noqa: E402
from d2v_pipeline.io import atomic_write  # noqa: E402

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "masked_recon")


def matmul_peak(threads: int, sizes: tuple[int, ...] = (1024, 2048), seconds: float = 1.0) -> float:
    """Best fp32 matmul FLOP/s over square sizes, on ``threads`` threads."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def reference_transformer(
    threads: int, batch: int = 128, tokens: int = 17, steps: int = 20
) -> dict:
    """torch.nn.TransformerEncoder (D 128, depth 6, FFN 512), forward + backward + AdamW."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    d, depth, ffn = 128, 6, 512
    layer = torch.nn.TransformerEncoderLayer(
        d, 4, ffn, dropout=0.0, batch_first=True, norm_first=True
    )
    model = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(batch, tokens, d)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        loss = model(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    n_params = depth * (4 * d * d + 2 * d * ffn)
    flops = 6 * n_params * batch * tokens + depth * 3 * 4 * batch * tokens * tokens * d
    return {"batch": batch, "tokens": tokens, "s_per_step": dt, "flops_per_s": flops / dt}


def load_data(modality: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(dataset_info, {"x", ["attention_mask"]}, origin): ingested data, else shaped noise."""
    folder = ROOT / "data" / "05_model_input" / modality
    info_path, arrays = folder / "dataset_info.json", folder / "arrays.safetensors"
    if info_path.is_file() and arrays.is_file():
        from safetensors.torch import load_file

        info = json.loads(info_path.read_text())
        t = load_file(str(arrays))
        data = {"x": t["train.x"]}
        if "train.attention_mask" in t:
            data["attention_mask"] = t["train.attention_mask"]
        return info, data, "ingested"
    g = torch.Generator().manual_seed(0)
    n = 512
    if modality == "image":
        info = {"modality": "image", "input_shape": [1, 28, 28]}
        return info, {"x": torch.randn(n, 1, 28, 28, generator=g)}, "random"
    if modality == "speech":
        info = {"modality": "speech", "input_shape": [16000], "sample_rate": 16000}
        return info, {"x": torch.randn(n, 16000, generator=g)}, "random"
    info = {
        "modality": "text", "vocab_size": 4096, "pad_id": 0, "mask_id": 2, "cls_id": 1,
        "seq_len": 64, "input_shape": [64],
    }  # fmt: skip
    x = torch.randint(5, 4096, (n, 64), generator=g)
    return info, {"x": x, "attention_mask": torch.ones(n, 64, dtype=torch.bool)}, "random"


def bench_one(
    modality: str, method: str, params: dict[str, Any], steps: int, peak: float
) -> dict[str, Any]:
    info, data, origin = load_data(modality)
    p = params[modality]["pretrain"]
    enc = encoder_config(info, p.get("encoder", {}))
    mcfg = cfgs.method_config_from_dict(method, modality, p.get(method))
    train = cfgs.train_config_from_dict(
        {**p.get("train", {}), "steps": steps, "log_every": steps, "checkpoint_every": 0}
    )
    data = {k: v[: max(train.batch_size * 4, 1)] for k, v in data.items()}
    model = build_pretrain_model(method, enc, mcfg, seed=0)
    warm = cfgs.train_config_from_dict({**cfgs.config_to_dict(train), "steps": 3, "log_every": 3})
    pretrain(build_pretrain_model(method, enc, mcfg, seed=0), data, warm, progress=False)
    result = pretrain(model, data, train, progress=False)
    s_per_step = result.wall_time_s / result.steps
    flops_per_s = result.flops_per_step / s_per_step
    return {
        "modality": modality,
        "method": method,
        "data": origin,
        "batch_size": train.batch_size,
        "tokens_per_sample": model.encoder.num_tokens(
            data["x"].shape[-1] if modality == "speech" else None
        ),
        "encoder_params": result.num_params,
        "steps_timed": result.steps,
        "s_per_step": s_per_step,
        "steps_per_s": 1 / s_per_step,
        "samples_per_s": train.batch_size / s_per_step,
        "model_flops_per_step": result.flops_per_step,
        "model_flops_per_s": flops_per_s,
        "fraction_of_matmul_peak": flops_per_s / peak,
        "threads": torch.get_num_threads(),
    }


def profile_image_step(params: dict[str, Any], top: int = 15) -> list[dict[str, Any]]:
    """Where the time of a data2vec image step goes (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    info, data, _ = load_data("image")
    p = params["image"]["pretrain"]
    enc = encoder_config(info, p.get("encoder", {}))
    mcfg = cfgs.method_config_from_dict("data2vec", "image", p.get("data2vec"))
    train = cfgs.train_config_from_dict(
        {**p.get("train", {}), "steps": 6, "log_every": 6, "checkpoint_every": 0}
    )
    data = {k: v[: train.batch_size * 2] for k, v in data.items()}
    model = build_pretrain_model("data2vec", enc, mcfg, seed=0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pretrain(model, data, train, progress=False)
    rows = []
    for evt in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        rows.append(
            {
                "op": evt.key,
                "calls": evt.count,
                "self_cpu_ms": evt.self_cpu_time_total / 1e3,
                "cpu_total_ms": evt.cpu_time_total / 1e3,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--modalities", nargs="*", default=list(MODALITIES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "pretrain_throughput.json"
    )
    args = parser.parse_args()
    params = load_parameters(ROOT / "conf", args.env)
    threads = int(params["image"]["pretrain"]["train"].get("threads", 2))
    peak = matmul_peak(threads)
    print(f"matmul peak on {threads} threads: {peak / 1e9:.1f} GFLOP/s", flush=True)
    ref = reference_transformer(threads)
    ref["fraction_of_matmul_peak"] = ref["flops_per_s"] / peak
    print(f"reference TransformerEncoder: {ref['fraction_of_matmul_peak']:.0%} of peak", flush=True)
    runs = []
    for modality in args.modalities:
        for method in args.methods:
            r = bench_one(modality, method, params, args.steps, peak)
            runs.append(r)
            print(
                f"{modality:6s} {method:12s} {r['samples_per_s']:8.1f} samples/s "
                f"{r['s_per_step'] * 1e3:7.1f} ms/step {r['model_flops_per_s'] / 1e9:6.1f} GFLOP/s "
                f"{r['fraction_of_matmul_peak']:5.0%} of peak",
                flush=True,
            )
    out = {
        "benchmark": "pretrain_throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "env": args.env,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), **environment()},
        "threads": threads,
        "matmul_peak_flops_per_s": peak,
        "reference_transformer_encoder": ref,
        "runs": runs,
        "profile_image_data2vec": [] if args.no_profile else profile_image_step(params),
    }
    atomic_write(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
