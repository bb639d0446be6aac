"""What actually ran, read from the run's own records (pretraining metadata, eval_metrics,
dataset summaries), never from the base configuration: the budget in the run header and
the deviations from the paper (a smoke run with D 32 / 2 blocks must not say D 128)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from d2v_pipeline.reporting.inputs import ModalityInputs, ReportInputs
from d2v_pipeline.reporting.stats import fraction_label, ordered

# Pretraining-metadata deviation notes that hard-code the base run's sizes
# (pipelines/pretrain/nodes.py DEVIATIONS): the report states those sizes from each run's
# own config instead (:func:`deviations_as_run`) and drops these notes.
SIZED_NOTES = (
    "Tiny scale:",
    "MNIST 28x28",
    "Synthesised 1 s keyword clips",
    "Byte-level BPE with",
)


@dataclass
class LaneBudget:
    """One lane as run: pretraining steps/batch per method, encoder size, seeds, fractions."""

    modality: str
    steps: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    # fractions per protocol, for protocols that did not run at every fraction
    protocol_fractions: dict[str, list[float]] = field(default_factory=dict)
    n_test: int | None = None
    labelled: dict[float, int] = field(default_factory=dict)


def n_test_examples(mi: ModalityInputs) -> int | None:
    """Test-split size: the dataset summary's count, else the predictions' distinct examples."""
    counts = (mi.dataset_summary or {}).get("counts") or {}
    if isinstance(counts.get("test"), int):
        return counts["test"]
    preds = mi.test_predictions
    if preds is not None and not preds.empty:
        return int(preds["example"].nunique())
    return None


def lane_budget(mi: ModalityInputs, method_order: Sequence[str]) -> LaneBudget:
    """The :class:`LaneBudget` of one lane from its pretraining metadata and eval_metrics."""
    budget = LaneBudget(mi.name, n_test=n_test_examples(mi))
    for method in ordered(mi.runs, method_order):
        meta = mi.runs[method].meta or {}
        config = meta.get("config") or {}
        if meta.get("steps") is not None:
            budget.steps[method] = meta["steps"]
            budget.batch[method] = (config.get("train") or {}).get("batch_size")
        if not budget.encoder and config.get("encoder"):
            budget.encoder = dict(config["encoder"])
    metrics = mi.eval_metrics
    if not metrics.empty:
        budget.seeds = sorted(int(s) for s in metrics["seed"].unique())
        budget.fractions = sorted(float(f) for f in metrics["fraction"].unique())
        for protocol, rows in metrics.groupby("protocol"):
            fractions = sorted(float(f) for f in rows["fraction"].unique())
            if len(fractions) < len(budget.fractions):
                budget.protocol_fractions[str(protocol)] = fractions
    subsets = (mi.dataset_summary or {}).get("label_subsets") or {}
    for key, subset in subsets.items():
        try:
            budget.labelled[float(key)] = int(subset["size"])
        except (TypeError, ValueError, KeyError):
            continue
    return budget


def encoder_text(encoder: Mapping[str, Any]) -> str:
    """'D 32, 2 blocks, 2 heads' from an encoder config (what is known of it)."""
    parts = []
    if encoder.get("dim") is not None:
        parts.append(f"D {encoder['dim']}")
    if encoder.get("depth") is not None:
        parts.append(f"{encoder['depth']} blocks")
    if encoder.get("heads") is not None:
        parts.append(f"{encoder['heads']} heads")
    return ", ".join(parts) or "size not recorded"


def steps_text(budget: LaneBudget) -> str:
    """'data2vec2 12, data2vec 12, masked_recon 12 steps' (batch sizes when they differ)."""
    if not budget.steps:
        return "not recorded"
    batches = {b for b in budget.batch.values() if b is not None}
    parts = []
    for method, steps in budget.steps.items():
        b = budget.batch.get(method)
        parts.append(f"{method} {steps:,}" + (f" x {b}" if len(batches) > 1 and b else ""))
    unit = f"steps of batch {next(iter(batches))}" if len(batches) == 1 else "steps"
    return f"{', '.join(parts)} {unit}"


def fractions_text(budget: LaneBudget, protocol_label) -> str:
    """'1%, 10%, 100%; fine-tuning at 10% only'."""
    text = ", ".join(fraction_label(f) for f in budget.fractions) or "none"
    for protocol, fractions in budget.protocol_fractions.items():
        only = ", ".join(fraction_label(f) for f in fractions)
        text += f"; {protocol_label(protocol)} at {only} only"
    return text


def _first_config(mi: ModalityInputs, method: str, block: str) -> dict[str, Any]:
    run = mi.runs.get(method)
    return dict(((run.meta or {}).get("config") or {}).get(block) or {}) if run else {}


def deviations_as_run(inputs: ReportInputs, method_order: Sequence[str]) -> list[str]:
    """Where this run departs from the paper, with the sizes it actually used (spec §4 sizes,
    §2 EMA schedule, §5 data2vec 2.0), then the runs' own size-free notes with their runs."""
    items = []
    for modality, mi in inputs.modalities.items():
        b = lane_budget(mi, method_order)
        if b.encoder:
            enc = b.encoder
            ffn = f", FFN {enc['ffn_dim']}" if enc.get("ffn_dim") else ""
            items.append(
                f"{modality}: encoder {encoder_text(enc)}{ffn} (paper Base: D 768, 12 blocks, "
                f"12 heads, FFN 3072); pretraining {steps_text(b)} on "
                f"{_device(mi)} (paper: 400k-1M updates on GPUs)."
            )
            items.append(f"{modality}: {_input_text(modality, enc)}")
        for method in ordered(mi.runs, method_order):
            m = _first_config(mi, method, "method")
            if m.get("ema_decay") is not None and m.get("ema_end_decay") is not None:
                items.append(
                    f"{modality}/{method}: EMA τ {m['ema_decay']} → {m['ema_end_decay']} over "
                    f"the first {m.get('ema_anneal_end_step', '?')} of {b.steps.get(method, '?')} "
                    "steps (paper: 0.999-0.9998 → 0.9999-0.99999 over 30k-100k updates; "
                    "spec §2)."
                )
            if method == "data2vec2" and m.get("clones") is not None:
                dec = m.get("decoder") or {}
                items.append(
                    f"{modality}/data2vec2: {m['clones']} clones per sample (paper 8-16), a "
                    f"{dec.get('layers', '?')}-layer convolutional decoder, kernel "
                    f"{dec.get('kernel', '?')} (paper 4-6 layers; spec §5)."
                )
    notes: dict[str, list[str]] = {}
    for modality, mi in inputs.modalities.items():
        for method, run in mi.runs.items():
            for text in (run.meta or {}).get("deviations") or []:
                if not text.startswith(SIZED_NOTES):
                    notes.setdefault(text, []).append(f"{modality}/{method}")
    items += [f"{text} ({', '.join(sorted(runs))})" for text, runs in notes.items()]
    return items


def _device(mi: ModalityInputs) -> str:
    """Where pretraining ran: the resolved device each node records (older runs: the
    ``train.device`` setting, before it moved to the runtime block)."""
    devices = set()
    for m, run in mi.runs.items():
        value = (run.meta or {}).get("device") or _first_config(mi, m, "train").get("device")
        if value:
            devices.add(str(value))
    return "/".join(sorted(devices)) or "an unrecorded device"


def _input_text(modality: str, enc: Mapping[str, Any]) -> str:
    if modality == "image" and enc.get("image_size") and enc.get("patch_size"):
        side, patch = int(enc["image_size"]), int(enc["patch_size"])
        tokens = (side // patch) ** 2
        return (
            f"{side}x{side} inputs in {patch}x{patch} patches ({tokens} tokens), learned "
            "absolute positions (paper: ImageNet 224x224 in 16x16 patches = 196 tokens, "
            "relative positions)."
        )
    if modality == "speech" and enc.get("sample_len") and enc.get("sample_rate"):
        seconds = enc["sample_len"] / enc["sample_rate"]
        channels = enc.get("conv_channels", "?")
        return (
            f"{seconds:g} s clips at {enc['sample_rate']:,} Hz, conv feature encoder with "
            f"{channels} channels (paper: LibriSpeech, 512 channels); keyword classification "
            "instead of CTC/WER."
        )
    if modality == "text" and enc.get("vocab_size") and enc.get("seq_len"):
        return (
            f"byte-level BPE with {enc['vocab_size']:,} tokens and {enc['seq_len']}-token "
            "sequences (paper: 50k BPE, 512 tokens); sentiment classification instead of GLUE."
        )
    return "inputs as recorded in the pretraining config."


def wall_time_text(seconds: float) -> str:
    """'58 s', '31 min 14 s', '2 h 05 min'."""
    if not math.isfinite(seconds):
        return "n/a"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
