"""Paper-size presets: the published sizes they are checked against, and the cost figures
the README lists for each (parameters, FLOPs per sample, GPU memory and time per step).

The presets themselves are parameters (``conf/gpu``); this module only measures built
models, so it stays plain PyTorch (no Kedro, no files). Memory and time are ESTIMATES for a
GPU this machine does not have, computed from stated assumptions:

- time per step = the model's own FLOP count (``flops_per_step``, nanoGPT-style: 3x the
  student forward for forward + backward, plus 1x the teacher forward) / (peak x MFU);
  default an A100's dense bf16 peak, 312 TFLOP/s, at an assumed 40% MFU;
- memory per step = optimiser state (fp32 weights, gradients and Adam's two moments: 16
  bytes per trainable parameter; the fp32 EMA teacher: 4 bytes per parameter) + the
  activations autograd keeps for the backward pass (:func:`activation_bytes`: measured on
  CPU under bf16 autocast outside the transformer blocks, 34 bytes per token and channel
  inside them, as with flash attention on a GPU) + the teacher's fp32 top-K taps and their
  normalised copies while the targets are built. Not included: the CUDA context, the
  allocator's fragmentation, the input batch, temporaries of the optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .transformer import Block, Transformer

# The sizes the presets must match (within a few %): the encoder the paper's Base models
# share with their predecessor, without any task head.
PUBLISHED_PARAMS = {
    "image": 86_000_000,  # ViT-B/16: Dosovitskiy et al. 2021, Table 1 ("86M")
    "speech": 95_000_000,  # wav2vec 2.0 Base: Baevski et al. 2020 ("95M parameters")
    "text": 125_000_000,  # RoBERTa-base: fairseq's roberta.base ("125M params")
}
PUBLISHED_MODEL = {
    "image": "ViT-B/16",
    "speech": "wav2vec 2.0 Base",
    "text": "RoBERTa-base",
}

A100_BF16_FLOPS = 312e12  # dense bf16 tensor-core peak of an NVIDIA A100
ASSUMED_MFU = 0.4  # model-FLOPs utilisation assumed for the time estimate

OPTIMISER_BYTES_PER_PARAM = 16  # fp32 weight + gradient + Adam's exp_avg and exp_avg_sq
TEACHER_BYTES_PER_PARAM = 4  # the EMA teacher stays fp32 (spec §2)
# Activation bytes a transformer block keeps per token and channel in 16-bit training with
# flash attention: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
# Transformer Models", sec. 4.1), s·b·h·(34 + 5·a·s/h) without the attention-score term.
BLOCK_BYTES_PER_TOKEN = 34


def count_parameters(module: nn.Module, trainable: bool | None = None) -> int:
    """Parameters of ``module``; ``trainable`` True / False counts only those that do / do not
    require a gradient, None counts all (each tensor once, shared ones too)."""
    params = {id(p): p for p in module.parameters()}.values()
    return sum(p.numel() for p in params if trainable is None or p.requires_grad == trainable)


def saved_activation_bytes(
    fn: Callable[[], object],
    exclude: Iterable[Tensor] = (),
    skip: Callable[[], bool] = lambda: False,
) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn()`` runs.

    Each storage is counted once, whole (a saved view keeps its full storage alive), and the
    storages of ``exclude`` (the model's parameters: optimiser state counts them) are skipped,
    and so is every tensor saved while ``skip()`` is true.
    Every saved tensor stays alive until ``fn``'s result is dropped, so no storage address
    is reused during the count.
    """
    seen = {t.untyped_storage().data_ptr() for t in exclude}
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        storage = t.untyped_storage()
        if not skip() and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    del result
    return total


def activation_bytes(
    model: nn.Module,
    make_batch: Callable[[int], dict[str, Tensor]],
    dtype: torch.dtype | None = torch.bfloat16,
    seed: int = 0,
) -> tuple[int, int]:
    """(bytes per sample, bytes per step) autograd keeps for one ``training_loss`` of
    ``model`` on one GPU under autocast to ``dtype`` (None = fp32), from a CPU run at batch 1
    and 2 (``make_batch(n)`` gives n samples; the masks and dropout draw from ``seed``).

    Outside the transformer blocks (front-end, positions, heads, decoder, loss) the saved
    tensors are measured. Inside a block they are not: CPU attention saves its (T, T)
    probabilities in fp32 where CUDA's flash attention keeps none, so a block costs
    :data:`BLOCK_BYTES_PER_TOKEN` x D bytes per token it processes with gradients (the tokens
    are counted). Layerdrop is off while measuring (the worst step runs every block). The
    per-step part is what does not grow with the batch: the autocast weight copies.
    """
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    layerdrops = {m: m.layerdrop for m in model.modules() if isinstance(m, Transformer)}
    state = {"depth": 0, "token_bytes": 0}

    def enter(block: Block, args: tuple[Tensor, ...]) -> None:
        state["depth"] += 1
        if torch.is_grad_enabled():
            b, t, d = args[0].shape
            state["token_bytes"] += BLOCK_BYTES_PER_TOKEN * b * t * d

    def leave(block: Block, args: tuple[Tensor, ...], output: object) -> None:
        state["depth"] -= 1

    hooks = [b.register_forward_pre_hook(enter) for b in blocks]
    hooks += [b.register_forward_hook(leave) for b in blocks]
    params = list(model.parameters())
    was_training = model.training
    outside, inside = [], []
    try:
        model.train()
        for transformer in layerdrops:
            transformer.layerdrop = 0.0
        for n in (1, 2):
            batch = make_batch(n)
            state["token_bytes"] = 0

            def step(batch: dict[str, Tensor] = batch) -> Tensor:
                generator = torch.Generator().manual_seed(seed)
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    return model.training_loss(batch, generator)[0]

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                outside.append(
                    saved_activation_bytes(step, params, skip=lambda: state["depth"] > 0)
                )
            inside.append(state["token_bytes"])
    finally:
        for hook in hooks:
            hook.remove()
        for transformer, value in layerdrops.items():
            transformer.layerdrop = value
        model.train(was_training)
    per_sample_outside = max(outside[1] - outside[0], 0)
    per_sample = per_sample_outside + inside[1] - inside[0]
    weight_copies = 0
    if dtype is not None and dtype.itemsize < 4:
        # the student's blocks only: the teacher runs without autocast (spec §9: fp32)
        weight_copies = dtype.itemsize * sum(count_parameters(b, trainable=True) for b in blocks)
    return per_sample, max(outside[0] - per_sample_outside, 0) + weight_copies


@dataclass(frozen=True)
class StepEstimate:
    """One preset x method at one batch size (see the module docstring for the assumptions)."""

    encoder_params: int  # the student encoder: what fine-tuning loads
    trainable_params: int  # encoder + head or decoder
    teacher_params: int  # the EMA teacher (0 without one)
    batch_size: int
    encoder_flops_per_sample: int  # one forward of the student encoder on one whole sample
    flops_per_step: int  # the model's own count (forward + backward + teacher forward)
    memory_bytes: int
    seconds_per_step: float

    @property
    def flops_per_sample(self) -> float:
        return self.flops_per_step / self.batch_size


def teacher_tap_bytes(model: nn.Module, input_len: int | None = None) -> int:
    """Bytes per sample of the teacher's fp32 top-K taps and their normalised copies, alive
    while the targets are built (spec §1 step 4); 0 for a model without a teacher."""
    if not hasattr(model, "teacher"):
        return 0
    encoder = model.encoder
    top_k = getattr(model, "top_k", None) or model.cfg.top_k
    return 2 * top_k * encoder.num_tokens(input_len) * encoder.dim * 4


def estimate_step(
    model: nn.Module,
    batch_size: int,
    per_sample_bytes: int,
    per_step_bytes: int,
    input_len: int | None = None,
    peak_flops: float = A100_BF16_FLOPS,
    mfu: float = ASSUMED_MFU,
) -> StepEstimate:
    """Memory and time of one training step of ``model`` at ``batch_size`` on one GPU, from
    :func:`activation_bytes`' measurement and the model's FLOP count."""
    teacher = getattr(model, "teacher", None)
    teacher_params = count_parameters(teacher) if teacher is not None else 0
    trainable = count_parameters(model, trainable=True)
    flops = model.flops_per_step(batch_size, input_len)
    memory = (
        OPTIMISER_BYTES_PER_PARAM * trainable
        + TEACHER_BYTES_PER_PARAM * teacher_params
        + per_step_bytes
        + batch_size * (per_sample_bytes + teacher_tap_bytes(model, input_len))
    )
    return StepEstimate(
        encoder_params=count_parameters(model.encoder),
        trainable_params=trainable,
        teacher_params=teacher_params,
        batch_size=batch_size,
        encoder_flops_per_sample=sum(model.encoder.flops_per_sample(input_len).values()),
        flops_per_step=flops,
        memory_bytes=memory,
        seconds_per_step=flops / (peak_flops * mfu),
    )


def markdown_table(rows: Iterable[tuple[str, str, int, StepEstimate]]) -> str:
    """The README table: one row per (modality, method, steps, estimate). "encoder GFLOP"
    is one forward pass of the encoder; "train GFLOP" is a whole training step per sample
    (student forward + backward, teacher forward, heads or decoder, every clone)."""
    lines = [
        "| preset | method | encoder params (published) | trainable params | batch "
        "| encoder GFLOP / sample | train GFLOP / sample | est. memory (GB) | est. s / step "
        "| est. minutes (steps) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for modality, method, steps, e in rows:
        published = PUBLISHED_PARAMS[modality]
        lines.append(
            f"| {PUBLISHED_MODEL[modality]} | {method} "
            f"| {e.encoder_params / 1e6:.1f}M ({published / 1e6:.0f}M, "
            f"{100 * (e.encoder_params / published - 1):+.1f}%) "
            f"| {e.trainable_params / 1e6:.1f}M | {e.batch_size} "
            f"| {e.encoder_flops_per_sample / 1e9:.1f} "
            f"| {e.flops_per_sample / 1e9:.0f} | {e.memory_bytes / 1e9:.1f} "
            f"| {e.seconds_per_step:.3f} | {steps * e.seconds_per_step / 60:.0f} ({steps:,}) |"
        )
    return "\n".join(lines)
