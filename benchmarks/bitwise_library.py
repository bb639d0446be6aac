"""Bitwise fingerprints of the data2vec library's training, to prove a refactor changed no
weight: every modality × pretraining method trained from the smoke settings, and one
fine-tuning run per modality, each reduced to a sha256 of its state_dict tensors.

Run it once per version of the code and compare (the library is imported from PYTHONPATH, so
an old checkout can be measured without installing it)::

    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/bitwise_library.py > before.json
    PYTHONPATH=src .venv/bin/python benchmarks/bitwise_library.py > after.json
    .venv/bin/python benchmarks/bitwise_library.py --compare before.json after.json

Settings: conf/base/parameters_pretrain.yml with conf/smoke/parameters_pretrain.yml merged
over it (the smoke run's sizes and step counts); the method's own ``train`` block overrides
the shared one, as in the pretraining pipeline. Threads: 2 per run, the committed default
(``train.threads`` / ``FinetuneConfig.threads`` in trees before issue 13, a ``Runtime`` in
trees after it, where the device and threads left those configs). Data: deterministic tensors
from a seeded generator shaped like the ingested data (28×28 one-channel images, 1 s of
16 kHz audio, padded token rows with <cls>/<eos>), so no data download is needed. Only the
library's public API is used (``d2v_pipeline.data2vec`` and ``d2v_pipeline.evaluation``), the
same in both versions. ``--compare`` exits 1 and names every fingerprint that differs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon")
VOCAB, PAD, MASK, CLS, EOS, SEQ_LEN = 120, 0, 1, 2, 3, 32


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in key order (its own copy
    of io.tensors_sha256: the script also runs against trees that predate that function)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def merged(base: Any, over: Any) -> Any:
    """``over`` merged into ``base`` key by key (nested mappings merged, the rest replaced)."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if key in out else copy.deepcopy(value)
    return out


def smoke_params(modality: str) -> dict[str, Any]:
    """``<modality>.pretrain`` of the smoke environment."""
    files = [ROOT / "conf" / env / "parameters_pretrain.yml" for env in ("base", "smoke")]
    base, smoke = (yaml.safe_load(f.read_text())[modality]["pretrain"] for f in files)
    return merged(base, smoke)


def synthetic_data(modality: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic inputs shaped like the ingested data of ``modality``."""
    g = torch.Generator().manual_seed(seed)
    if modality == "image":  # strokes on a dark background, in [0, 1]
        x = (torch.rand(n, 1, 28, 28, generator=g) > 0.8).float()
        return {"x": torch.nn.functional.avg_pool2d(x, 3, 1, 1)}
    if modality == "speech":  # a tone with noise, per clip
        t = torch.arange(16000) / 16000
        f = 100 + 400 * torch.rand(n, 1, generator=g)
        x = torch.sin(2 * torch.pi * f * t) + 0.1 * torch.randn(n, 16000, generator=g)
        return {"x": x}
    lengths = torch.randint(6, SEQ_LEN + 1, (n,), generator=g)
    ids = torch.randint(EOS + 1, VOCAB, (n, SEQ_LEN), generator=g)
    am = torch.arange(SEQ_LEN)[None] < lengths[:, None]
    ids[:, 0] = CLS
    ids[torch.arange(n), lengths - 1] = EOS
    return {"x": ids.masked_fill(~am, PAD), "attention_mask": am}


def encoder_dict(modality: str, params: dict[str, Any]) -> dict[str, Any]:
    """The encoder block plus what the pipeline takes from the data."""
    from_data = {
        "image": {"image_size": 28, "in_channels": 1},
        "speech": {"sample_len": 16000, "sample_rate": 16000},
        "text": {"vocab_size": VOCAB, "pad_id": PAD, "mask_id": MASK, "cls_id": CLS,
                 "special_ids": [EOS], "seq_len": SEQ_LEN},
    }[modality]  # fmt: skip
    return {**params["encoder"], **from_data}


THREADS = 2  # the committed default of every run


def runtime_kwargs() -> dict[str, Any]:
    """``runtime=Runtime(threads=2)`` for a library that has a Runtime (issue 13 on), else {}."""
    import d2v_pipeline.data2vec as d2v

    runtime = getattr(d2v, "Runtime", None)
    return {} if runtime is None else {"runtime": runtime(threads=THREADS)}


def pretrain_case(modality: str, method: str) -> tuple[str, Any]:
    import d2v_pipeline.data2vec as d2v

    params = smoke_params(modality)
    block = dict(params.get(method) or {})
    train = {**params["train"], **block.pop("train", {})}
    for key in ("threads", "device"):  # a Runtime's since issue 13 (conf of either age)
        train.pop(key, None)
    if not runtime_kwargs():
        train["threads"] = THREADS
    enc_cfg = d2v.encoder_config_from_dict(modality, encoder_dict(modality, params))
    method_cfg = d2v.method_config_from_dict(method, modality, block)
    train_cfg = d2v.train_config_from_dict(train)
    model = d2v.build_pretrain_model(method, enc_cfg, method_cfg, seed=train_cfg.seed)
    data = synthetic_data(modality, 4 * train_cfg.batch_size, seed=1)
    result = d2v.pretrain(model, data, train_cfg, progress=False, **runtime_kwargs())
    return state_sha256(result.model_state), enc_cfg


def finetune_case(modality: str, enc_cfg: Any) -> str:
    import d2v_pipeline.data2vec as d2v
    from d2v_pipeline.evaluation import FinetuneConfig, finetune

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        encoder = d2v.build_encoder(enc_cfg)
    data = synthetic_data(modality, 48, seed=2)
    y = torch.arange(48) % 3
    am = data.get("attention_mask")
    split = [(data["x"][s], y[s]) + (() if am is None else (am[s],))
             for s in (slice(0, 32), slice(32, 40), slice(40, 48))]  # fmt: skip
    settings = dict(epochs=1, batch_size=8, min_steps=8, max_steps=8, patience=None,
                    eval_min_interval_steps=0, layer_decay=0.75)  # fmt: skip
    extra = runtime_kwargs()
    if not extra:
        settings["threads"] = THREADS
    cfg = FinetuneConfig(**settings)
    res = finetune(encoder, 3, *split, cfg=cfg, progress=False, **extra)
    return state_sha256(res.model.state_dict())


def fingerprints() -> dict[str, str]:
    import d2v_pipeline

    out = {"_library": str(Path(d2v_pipeline.__file__).parent)}
    for modality in MODALITIES:
        enc_cfg = None
        for method in METHODS:
            out[f"pretrain/{modality}/{method}"], enc_cfg = pretrain_case(modality, method)
            print(f"{modality}/{method} done", file=sys.stderr)
        out[f"finetune/{modality}"] = finetune_case(modality, enc_cfg)
    return out


def compare(a: Path, b: Path) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    keys = sorted((set(left) | set(right)) - {"_library"})
    bad = [k for k in keys if left.get(k) != right.get(k)]
    for k in keys:
        print(f"{'EQUAL ' if k not in bad else 'DIFFER'} {k} {left.get(k)} {right.get(k)}")
    print(f"{len(keys) - len(bad)} of {len(keys)} fingerprints equal")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    print(json.dumps(fingerprints(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
