"""Causal language models for the sequence family, in a registry of their own (the timm pattern, as
:mod:`pipeline.models.images` is for images): students of about 0.1M to 2M parameters that train on two CPU
cores, and larger teachers to train once.

Every model is one GPT-style stack: token and position embeddings, pre-norm blocks of causal
self-attention (``F.scaled_dot_product_attention`` with ``is_causal``) and an MLP, a final norm and an
output layer tied to the token embedding. It maps int64 (B, L) token ids to float (B, L, V) logits;
position j sees tokens 0..j only, so a window's targets can be cached position by position. Variants are
data: each registered function only picks width, depth and heads.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UsageError

__all__ = ["CausalLM", "build_builtin_lm", "builtin_lms", "register_lm", "check_lm_sizes"]

_LMS: dict[str, Callable[..., nn.Module]] = {}


def register_lm(fn):
    """Register a language model under its function name, with '_' spelled '-'."""
    _LMS[fn.__name__.replace("_", "-")] = fn
    return fn


def builtin_lms() -> list[str]:
    return sorted(_LMS)


def check_lm_sizes(vocab_size, context) -> None:
    """Sizes come from files (checkpoints, caches): checked before a weight is allocated, so an absurd one is a
    line, not a 256 GB allocation. 2^24 tokens and 2^20 positions are far past any tokenizer or window here."""
    for what, value, high in (("vocab_size", vocab_size, 1 << 24), ("context", context, 1 << 20)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise UsageError(f"a language model's {what} must be a whole number from 1 to {high:,}, got {value!r}")


def build_builtin_lm(name: str, *, vocab_size: int, context: int) -> nn.Module:
    """A registered language model for ``vocab_size`` tokens and windows of up to ``context`` tokens."""
    return _LMS[name](vocab_size=vocab_size, context=context)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, width // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, length, width))
        return x + self.mlp(self.norm2(x))


class CausalLM(nn.Module):
    """int64 (B, L) ids, L <= context -> float (B, L, V) logits of each position's next token."""

    def __init__(self, vocab_size: int, context: int, width: int, depth: int, heads: int):
        super().__init__()
        if width % heads:
            raise UsageError(f"width {width} is not a multiple of {heads} heads")
        self.vocab_size, self.context = vocab_size, context
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab_size, bias=False)
        self.out.weight = self.tokens.weight                   # tied: fewer parameters, as GPT-2
        self.apply(_init)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise UsageError(f"a window of {ids.shape[1]} tokens is longer than the model's context of "
                             f"{self.context}; use CONTEXT={self.context} or less")
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def _lm(width: int, depth: int, heads: int):
    return lambda vocab_size, context: CausalLM(vocab_size, context, width, depth, heads)


@register_lm
def lm_tiny(vocab_size: int = 256, context: int = 128) -> nn.Module:
    """About 0.1M parameters at V = 256."""
    return _lm(64, 2, 2)(vocab_size, context)


@register_lm
def lm_small(vocab_size: int = 256, context: int = 128) -> nn.Module:
    """About 0.4M parameters at V = 256 (the reference student of docs/RESULTS.md)."""
    return _lm(128, 2, 4)(vocab_size, context)


@register_lm
def lm_medium(vocab_size: int = 256, context: int = 128) -> nn.Module:
    """About 1.6M parameters at V = 256."""
    return _lm(192, 4, 6)(vocab_size, context)


@register_lm
def lm_teacher(vocab_size: int = 256, context: int = 256) -> nn.Module:
    """About 6.4M parameters at V = 256: the teacher to train once (a GPU makes it minutes)."""
    return _lm(256, 8, 8)(vocab_size, context)
