"""``<m>.pretrain`` (conf/base/parameters_pretrain.yml): encoder, training budget, methods.

Each block mirrors a dataclass of the data2vec library (``d2v_pipeline.data2vec.config``), key
for key, with that dataclass's defaults. Ranges live here only; the library keeps just the checks
its code needs (shapes that must divide, values from the data).
Spec references are to shared/docs/data2vec.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import Field

from d2v_pipeline.data2vec import config as lib
from d2v_pipeline.schema.base import (
    Block,
    Count,
    Interval,
    Items,
    LibraryBlock,
    NonNegative,
    OddInt,
    Positive,
    PositiveInt,
    Probability,
    Rate,
    Span,
    Text,
    sub_block,
)

Tap = Literal["ffn", "block"]
TargetNorm = Literal["instance", "layer", "none"]
Betas = Annotated[list[float], Span(Interval(0, 1, high_open=True))]
METHODS = ("data2vec", "data2vec2", "masked_recon")


# ----------------------------------------------------------------------------- encoders
class Encoder(LibraryBlock):
    """Transformer shared by every method of a modality (pre-LN blocks, spec §4)."""

    dim: PositiveInt = Field(description="model width D")
    depth: PositiveInt = Field(description="transformer blocks")
    heads: PositiveInt = Field(description="attention heads; must divide dim")
    ffn_dim: PositiveInt = Field(description="hidden width of each block's MLP")
    dropout: Rate = Field(description="dropout after attention and MLP")
    attention_dropout: Rate = Field(description="dropout on the attention weights")
    layerdrop: Rate = Field(description="chance of skipping a whole block in training (spec §4)")
    layer_scale_init: Positive | None = Field(description="LayerScale init; null = off")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.dim % self.heads:
            yield "heads", f"{self.heads} does not divide dim {self.dim}"


class ImageEncoder(Encoder):
    """ViT: linear patch embedding, CLS token, learned absolute positions."""

    library = lib.ImageEncoderConfig
    image_size: PositiveInt = Field(description="side in pixels; from the data (leave out)")
    in_channels: PositiveInt = Field(description="colour channels; from the data (leave out)")
    patch_size: PositiveInt = Field(description="patch side in pixels (28x28 / 7 = 16 tokens)")

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if self.given("image_size") and self.image_size % self.patch_size:
            yield "patch_size", f"{self.patch_size} does not divide image_size {self.image_size}"


class SpeechEncoder(Encoder):
    """wav2vec 2.0 conv feature encoder + convolutional positions."""

    library = lib.SpeechEncoderConfig
    sample_rate: PositiveInt = Field(description="Hz; from the data (leave out)")
    sample_len: PositiveInt = Field(description="samples per clip; from the data (leave out)")
    conv_channels: PositiveInt = Field(description="channels of the conv feature encoder")
    conv_kernels: Annotated[list[PositiveInt], Items(unique=False)] = Field(
        description="kernel of each conv layer (spec: 10, 3, 3, 3, 3, 2, 2)"
    )
    conv_strides: Annotated[list[PositiveInt], Items(unique=False)] = Field(
        description="stride of each conv layer (spec: 5, 2, 2, 2, 2, 2, 2)"
    )
    pos_conv_depth: Count = Field(description="conv layers of the relative position embedding")
    pos_conv_kernel: OddInt = Field(description="kernel of the position convs (odd)")
    pos_conv_groups: PositiveInt = Field(description="groups of the position convs; divides dim")

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if len(self.conv_kernels) != len(self.conv_strides):
            yield (
                "conv_strides",
                (f"{len(self.conv_strides)} strides for {len(self.conv_kernels)} conv_kernels"),
            )
        if self.dim % self.pos_conv_groups:
            yield "pos_conv_groups", f"{self.pos_conv_groups} does not divide dim {self.dim}"


class TextEncoder(Encoder):
    """Token + learned position embeddings; vocabulary and ids come from the tokenizer."""

    library = lib.TextEncoderConfig
    # None = from the data; an explicit null is refused (the data's value must be used)
    vocab_size: PositiveInt = Field(None, description="from the tokenizer (leave out)")
    pad_id: Count = Field(None, description="from the tokenizer (leave out)")
    mask_id: Count = Field(None, description="from the tokenizer (leave out)")
    cls_id: Count | None = Field(description="from the tokenizer (leave out)")
    special_ids: Annotated[list[Count], Items(min=0)] = Field(
        description="ids never masked; from the tokenizer (leave out)"
    )
    seq_len: PositiveInt = Field(description="tokens per row; from the data (leave out)")


# ----------------------------------------------------------------------------- masks (spec §3)
class Mask(LibraryBlock):
    mask_prob: Probability = Field(description="share (or start probability) of masked tokens")


class ImageMask(Mask):
    """BEiT block masking: mask_prob = share of patches masked (spec §3: 60%)."""

    library = lib.ImageMaskConfig
    min_num_patches: PositiveInt = Field(description="smallest masked block, in patches")
    max_num_patches: PositiveInt | None = Field(description="largest block; null = the target")
    min_aspect: Positive = Field(description="smallest block aspect ratio")


class SpeechMask(Mask):
    """wav2vec 2.0 spans: mask_prob = p·M start mass (spec §3: 0.65 with spans of 10)."""

    library = lib.SpeechMaskConfig
    mask_length: PositiveInt = Field(description="frames per masked span (M)")
    min_masks: Count = Field(description="spans per row at least")
    require_same_masks: bool = Field(description="trim every row to the batch's smallest count")


class TextMask(Mask):
    """BERT masking: mask_prob of real tokens; of those, some random or left unchanged."""

    library = lib.TextMaskConfig
    random_token_prob: Probability = Field(description="share of masked tokens made random")
    leave_unmasked_prob: Probability = Field(description="share of masked tokens left as is")

    def problems(self) -> Iterator[tuple[str, str]]:
        total = self.random_token_prob + self.leave_unmasked_prob
        if total > 1:
            yield "leave_unmasked_prob", f"random_token_prob + leave_unmasked_prob = {total} > 1"


class ImageMask2(Mask):
    """data2vec 2.0 inverse block masking: exactly int(L·(1-R)) patches stay visible."""

    library = lib.ImageMask2Config
    mask_prob: Annotated[float, Interval(0, 1, high_open=True)] = Field(
        description="R, share of patches masked (some must stay visible)"
    )
    block_size: PositiveInt = Field(description="B, side of the kept blocks in patches")
    adjust: NonNegative = Field(description="A, fairseq's mask_prob_adjust")


class SpeechMask2(SpeechMask):
    """data2vec 2.0 spans; every row then gets the batch's mean masked count."""

    library = lib.SpeechMask2Config


class TextMask2(Mask):
    """data2vec 2.0 text: an exact count of single tokens per row."""

    library = lib.TextMask2Config


# ---------------------------------------------------------------------------- data2vec (spec §1-§2)
class Teacher(LibraryBlock):
    """What data2vec v1 and v2 share: the EMA teacher and its targets."""

    top_k: PositiveInt = Field(description="targets average the teacher's top-K blocks")
    tap: Tap = Field(description="block output tapped: ffn (before the last residual) | block")
    target_layer_norm: TargetNorm = Field(description="norm of each tapped layer (spec §1.2)")
    target_final_norm: TargetNorm = Field(description="norm after averaging the K layers")
    loss_scale: Positive | None = Field(description="loss scale; null = 1/sqrt(D)")
    ema_decay: Probability = Field(description="teacher EMA decay tau at step 0 (spec §2)")
    ema_end_decay: Probability = Field(description="tau at ema_anneal_end_step; >= ema_decay")
    ema_anneal_end_step: Count = Field(description="step where tau reaches ema_end_decay")
    ema_ref_steps: PositiveInt = Field(description="reference run length of the short-run rule")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.ema_end_decay < self.ema_decay:
            yield "ema_end_decay", f"{self.ema_end_decay} < ema_decay {self.ema_decay}"


class Data2Vec(Teacher):
    """data2vec v1: masked student regresses the teacher's top-K average (spec §1)."""

    mask: Mask = sub_block()
    head_layers: PositiveInt = Field(description="layers of the regression head (spec §1.3)")
    loss_beta: NonNegative = Field(description="0 = L2, else smooth L1 with this beta")
    loss_reduce: Literal["sum", "mean"] = Field(description="over the D channels of a token")


class ImageData2Vec(Data2Vec):
    library = lib.ImageData2VecConfig
    mask: ImageMask = sub_block()


class SpeechData2Vec(Data2Vec):
    library = lib.SpeechData2VecConfig
    mask: SpeechMask = sub_block()


class TextData2Vec(Data2Vec):
    library = lib.TextData2VecConfig
    mask: TextMask = sub_block()


class Decoder(LibraryBlock):
    """data2vec 2.0's convolutional decoder (spec §5 item 4)."""

    dim: PositiveInt | None = Field(description="width; null = the encoder width")
    layers: PositiveInt = Field(description="conv layers")
    kernel: OddInt = Field(description="kernel size (odd)")
    groups: PositiveInt = Field(description="conv groups; divide the encoder and decoder width")
    residual: bool = Field(description="residual connection between layers")
    input_dropout: Rate = Field(description="dropout on the decoder input")
    projection_layers: Literal[1, 2] = Field(description="2 = Linear-GELU-Linear (text)")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.dim is not None and self.dim % self.groups:
            yield "groups", f"{self.groups} does not divide the decoder dim {self.dim}"


class ImageDecoder(Decoder):
    library = lib.ImageDecoderConfig


class SpeechDecoder(Decoder):
    library = lib.SpeechDecoderConfig


class TextDecoder(Decoder):
    library = lib.TextDecoderConfig


# ----------------------------------------------------------------------------- training loop
class Train(LibraryBlock):
    """One pretraining run: AdamW, warmup then cosine decay (TrainConfig). Device, precision
    and threads are `<m>.runtime` (parameters_runtime.yml)."""

    library = lib.TrainConfig
    steps: PositiveInt = Field(description="optimiser steps (the budget)")
    batch_size: PositiveInt = Field(description="examples per step")
    lr: Positive = Field(description="peak learning rate (shared by every method)")
    min_lr: NonNegative = Field(description="learning rate at the end of the cosine decay")
    warmup_frac: Rate = Field(description="share of steps with a linear warmup")
    weight_decay: NonNegative = Field(description="AdamW weight decay")
    betas: Betas = Field(description="Adam betas [beta1, beta2]")
    eps: Positive = Field(description="Adam epsilon")
    grad_clip: NonNegative = Field(description="max gradient norm; 0 = off")
    seed: Count = Field(description="seeds initialisation, data order, masks and dropout")
    augment_shift: Count = Field(description="images only: random shift of up to N pixels")
    pack_sequences: bool = Field(description="text only: full rows without padding")
    log_every: PositiveInt = Field(description="steps between history rows")
    checkpoint_every: Count = Field(description="steps between checkpoints; 0 = at the end only")
    collapse_target_std: NonNegative = Field(description="collapse below this target std (§9)")
    collapse_pred_std: NonNegative = Field(description="collapse below this prediction std (§9)")
    collapse_grace_steps: Count = Field(description="no collapse verdict before this step")
    stop_on_collapse: bool = Field(description="stop the run when it collapses")


class Data2Vec2(Teacher):
    """data2vec 2.0 (spec §5): M clones share one teacher pass; conv decoder; L2 loss."""

    mask: Mask = sub_block()
    decoder: Decoder = sub_block()
    train: Train = sub_block("overrides of the shared `train` block for this method only")
    top_k: PositiveInt | None = Field(description="teacher's top-K blocks; null = every block")
    clones: PositiveInt = Field(description="M masked views per sample")
    cls_loss: NonNegative = Field(description="images: weight of the CLS target loss (§5)")
    mask_noise_std: NonNegative = Field(description="std of the noise in masked slots (§5)")

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if self.cls_loss > 0 and self.library is not None and self.library.modality != "image":
            yield "cls_loss", f"{self.cls_loss}: only the image encoder has a CLS token"


class ImageData2Vec2(Data2Vec2):
    library = lib.ImageData2Vec2Config
    mask: ImageMask2 = sub_block()
    decoder: ImageDecoder = sub_block()


class SpeechData2Vec2(Data2Vec2):
    library = lib.SpeechData2Vec2Config
    mask: SpeechMask2 = sub_block()
    decoder: SpeechDecoder = sub_block()


class TextData2Vec2(Data2Vec2):
    library = lib.TextData2Vec2Config
    mask: TextMask2 = sub_block()
    decoder: TextDecoder = sub_block()


# ----------------------------------------------------------------------------- masked recon (§10)
class Recon(LibraryBlock):
    """Masked input reconstruction: same encoder and masks, targets are the inputs (§10.2)."""

    mask: Mask = sub_block()
    norm_target: bool = Field(description="normalise each target patch / frame (MAE)")


class ImageRecon(Recon):
    library = lib.ImageReconConfig
    mask: ImageMask = sub_block()


class SpeechRecon(Recon):
    library = lib.SpeechReconConfig
    mask: SpeechMask = sub_block()


class TextRecon(Recon):
    library = lib.TextReconConfig
    mask: TextMask = sub_block()


# ----------------------------------------------------------------------------- <m>.pretrain
EncoderT = TypeVar("EncoderT", bound=Encoder)
Data2VecT = TypeVar("Data2VecT", bound=Data2Vec)
Data2Vec2T = TypeVar("Data2Vec2T", bound=Data2Vec2)
ReconT = TypeVar("ReconT", bound=Recon)


class Pretrain(Block, Generic[EncoderT, Data2VecT, Data2Vec2T, ReconT]):
    """One modality's pretraining: every method shares `encoder` and `train`."""

    state_dir: Text | None = Field(
        None, description="resumable training state: <state_dir>/<method>/<run key>"
    )
    resume: bool = Field(True, description="continue from the last checkpoint when killed")
    progress: bool = Field(True, description="progress bar with loss, rate and ETA")
    encoder: EncoderT = sub_block("the encoder every method trains")
    train: Train = sub_block("budget and optimiser, shared by every method")
    data2vec: Data2VecT = sub_block("data2vec v1 (spec §1-§2)")
    data2vec2: Data2Vec2T = sub_block("data2vec 2.0 (spec §5)")
    masked_recon: ReconT = sub_block("masked input reconstruction baseline (spec §10.2)")

    def problems(self) -> Iterator[tuple[str, str]]:
        depth = self.encoder.depth
        for method in ("data2vec", "data2vec2"):
            top_k = getattr(self, method).top_k
            if top_k is not None and top_k > depth:
                yield f"{method}.top_k", f"{top_k} > encoder depth {depth}"
        groups, dim = self.data2vec2.decoder.groups, self.encoder.dim
        if dim % groups:
            yield "data2vec2.decoder.groups", f"{groups} does not divide encoder dim {dim}"


ImagePretrain = Pretrain[ImageEncoder, ImageData2Vec, ImageData2Vec2, ImageRecon]
SpeechPretrain = Pretrain[SpeechEncoder, SpeechData2Vec, SpeechData2Vec2, SpeechRecon]
TextPretrain = Pretrain[TextEncoder, TextData2Vec, TextData2Vec2, TextRecon]
