"""Pre-LN transformer shared by every modality (nanoGPT-style, fused QKV + SDPA).

Deviation from spec §4: P1's speech/text models are post-LN; we use pre-LN blocks for every
modality (stable at tiny scale without long warmup, as in the calibration prototype). The
FFN tap is therefore ``fc2(gelu(fc1(ln2(x))))`` before the residual, which is the quantity
spec §1.1 names, just computed from a normalised input.

The stack runs on any (B, T, D) sequence, so data2vec 2.0 (spec §5) can call it on a gathered
subset of visible tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config_base import EncoderConfig


class Block(nn.Module):
    """x + attn(ln1(x)); x + ffn(ln2(x)). Returns (output, tapped tensor)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.dropout = cfg.dropout
        self.attention_dropout = cfg.attention_dropout
        if cfg.layer_scale_init is not None:
            self.gamma1 = nn.Parameter(torch.full((cfg.dim,), cfg.layer_scale_init))
            self.gamma2 = nn.Parameter(torch.full((cfg.dim,), cfg.layer_scale_init))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: Tensor, attn_mask: Tensor | None, tap: str) -> tuple[Tensor, Tensor]:
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, hd) each
        p = self.attention_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        a = self.proj(a.transpose(1, 2).reshape(b, t, d))
        if self.gamma1 is not None:
            a = a * self.gamma1
        x = x + F.dropout(a, self.dropout, self.training)
        # spec §1.1: the FFN output is taken before its dropout and before the residual
        f = self.fc2(F.gelu(self.fc1(self.ln2(x))))
        r = f * self.gamma2 if self.gamma2 is not None else f
        x = x + F.dropout(r, self.dropout, self.training)
        return x, (f if tap == "ffn" else x)


class Transformer(nn.Module):
    """``depth`` pre-LN blocks and a final LayerNorm."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.layerdrop = cfg.layerdrop
        self.reset_parameters(cfg.depth)

    def reset_parameters(self, depth: int) -> None:
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "fc2.weight")):
                # nanoGPT/GPT-2: residual projections scaled by 1/sqrt(2·depth)
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth))
            elif name.endswith(("qkv.weight", "fc1.weight")):
                nn.init.normal_(p, std=0.02)
            elif name.endswith(("qkv.bias", "proj.bias", "fc1.bias", "fc2.bias")):
                nn.init.zeros_(p)

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        return_layers: bool = False,
        tap: str = "block",
    ) -> tuple[Tensor, list[Tensor] | None]:
        """x (B, T, D); padding_mask (B, T) True = padding. Returns (final-LN output, taps).

        ``tap`` selects the per-block tensor: "ffn" (spec §1.1 default) or "block" (end of
        block, vision v1 as released). Layerdrop is off when layers are requested.
        """
        attn_mask = None
        if padding_mask is not None and bool(padding_mask.any()):
            attn_mask = ~padding_mask[:, None, None, :]  # SDPA: True = may attend
        drop = None
        if self.training and self.layerdrop > 0 and not return_layers:
            drop = (torch.rand(len(self.blocks)) < self.layerdrop).tolist()
        layers: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            if drop is not None and drop[i]:
                continue
            x, tapped = block(x, attn_mask, tap)
            if return_layers:
                layers.append(tapped)
        return self.norm(x), (layers if return_layers else None)

    def flops_per_sample(self, tokens: int) -> int:
        """Forward matmul FLOPs for one sequence of ``tokens`` (nanoGPT-style count)."""
        blk = self.blocks[0]
        d, f = blk.qkv.in_features, blk.fc1.out_features
        per_token = 2 * (4 * d * d + 2 * d * f)  # qkv, proj, fc1, fc2
        attention = 2 * 2 * tokens * tokens * d  # QK^T and AV
        return len(self.blocks) * (tokens * per_token + attention)
