"""data2vec (v1) and a masked-reconstruction baseline in plain PyTorch; no Kedro, no files
(except :mod:`.checkpoint`, which reads and writes the paths it is given).

Spec: docs/data2vec.md. Typical use::

    enc_cfg = encoder_config_from_dict("image", params["encoder"])
    model = build_pretrain_model("data2vec", enc_cfg, data2vec_config_from_dict("image", {}))
    result = pretrain(model, {"x": train_x}, train_config_from_dict(params["train"]), ckpt_dir)
    encoder = load_encoder(enc_cfg, result.encoder_state)
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    ConfigError,
    Data2VecConfig,
    EncoderConfig,
    ImageData2VecConfig,
    ImageEncoderConfig,
    ImageMaskConfig,
    ImageReconConfig,
    MaskConfig,
    ReconConfig,
    SpeechData2VecConfig,
    SpeechEncoderConfig,
    SpeechMaskConfig,
    SpeechReconConfig,
    TextData2VecConfig,
    TextEncoderConfig,
    TextMaskConfig,
    TextReconConfig,
    TrainConfig,
    config_to_dict,
    data2vec_config_from_dict,
    default_method_config,
    encoder_config_from_dict,
    mask_config_from_dict,
    method_config_from_dict,
    recon_config_from_dict,
    train_config_from_dict,
)
from .ema import EMATeacher, ema_decay_at
from .encoders import (
    Encoder,
    EncoderOutput,
    ImageEncoder,
    SpeechEncoder,
    TextEncoder,
    build_encoder,
    load_encoder,
)
from .masking import TextMask, bert_mask, block_mask, span_mask
from .models import (
    Data2Vec,
    MaskedReconstruction,
    PretrainModel,
    build_pretrain_model,
    model_flops_per_step,
)
from .targets import masked_std, normalize_layer, top_k_targets
from .train import PretrainResult, derive_seed, lr_at, pretrain

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Data2Vec",
    "Data2VecConfig",
    "EMATeacher",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "ImageData2VecConfig",
    "ImageEncoder",
    "ImageEncoderConfig",
    "ImageMaskConfig",
    "ImageReconConfig",
    "MaskConfig",
    "MaskedReconstruction",
    "PretrainModel",
    "PretrainResult",
    "ReconConfig",
    "SpeechData2VecConfig",
    "SpeechEncoder",
    "SpeechEncoderConfig",
    "SpeechMaskConfig",
    "SpeechReconConfig",
    "TextData2VecConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "TextMask",
    "TextMaskConfig",
    "TextReconConfig",
    "TrainConfig",
    "bert_mask",
    "block_mask",
    "build_encoder",
    "build_pretrain_model",
    "config_to_dict",
    "data2vec_config_from_dict",
    "default_method_config",
    "derive_seed",
    "ema_decay_at",
    "encoder_config_from_dict",
    "load_checkpoint",
    "load_encoder",
    "lr_at",
    "mask_config_from_dict",
    "masked_std",
    "method_config_from_dict",
    "model_flops_per_step",
    "normalize_layer",
    "pretrain",
    "recon_config_from_dict",
    "save_checkpoint",
    "span_mask",
    "top_k_targets",
    "train_config_from_dict",
]
