"""Attention kernels and token layouts of the ViTPose backbone.

`sdpa_or_eager_attention` is the arithmetic (softmax(q k^T * s + mask) v), picked through
transformers' attention-interface registry ("sdpa", "flash_attention_2", ...) with an eager
fallback. `build_attention_mask_fn` returns, for one layer, the function that arranges the tokens
for that layer's attention kind: global over the whole grid here, windowed layouts (window,
shifted window, pooled window) in `window_attention.py`, all around the same q/k/v projections.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from .window_attention import make_windowed_attention

AttentionKind = Literal["global", "window", "shifted_window", "pooled_window"]


def eager_attention(
    module: nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention.

    Args:
        query: `(B, heads, Nq, d)`; key, value: `(B, heads, Nk, d)`.
        attention_mask: additive mask broadcastable to `(B, heads, Nq, Nk)`, or None.

    Returns:
        context `(B, Nq, heads, d)` and probabilities `(B, heads, Nq, Nk)`.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0.0:
        probs = nn.functional.dropout(probs, p=dropout, training=True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def sdpa_or_eager_attention(
    module: nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    impl: str = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dispatch to transformers' registered attention `impl` (e.g. "sdpa"), or eager.

    Shapes as in `eager_attention`; the registry kernels return no probabilities (None).
    """
    if impl in (None, "eager"):
        return eager_attention(module, query, key, value, attention_mask, scaling, dropout)
    if impl == "sdpa":
        # SDPA directly: one call, no per-call registry lookup, same result as the registry kernel.
        out = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
        )
        return out.transpose(1, 2).contiguous(), None
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if impl not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"unknown attention implementation {impl!r}")
    return ALL_ATTENTION_FUNCTIONS[impl](
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=False
    )


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def global_attention(q, k, v, *, num_heads, scaling, impl, module, dropout, kernel, mask=None, output_attentions=True):
    """Every token attends to every token. q, k, v: `(B, N, C)` -> context `(B, N, C)`, probs."""
    b, n, c = q.shape
    out, probs = kernel(
        module, _split_heads(q, num_heads), _split_heads(k, num_heads), _split_heads(v, num_heads),
        mask, scaling, dropout, impl,
    )
    return out.reshape(b, n, c), probs


def build_attention_mask_fn(
    kind: str, grid: tuple[int, int], window_size: tuple[int, int], shift: bool, num_prefix: int
) -> Callable:
    """The attention function of one layer for a token grid `(h, w)` after `num_prefix` extra tokens.

    Returns a callable `(q, k, v, *, num_heads, scaling, impl, module, dropout, kernel,
    output_attentions=True)` mapping `(B, num_prefix + h*w, C)` projections to the context
    `(B, num_prefix + h*w, C)` and the attention probabilities `(B, heads, P + h*w, P + h*w)` (or
    None: registry kernels return none, and windowed layouts skip building them when
    `output_attentions` is False).

    Kinds: `"global"` (this module, the exact transformers-parity path), `"window"`,
    `"shifted_window"` and `"pooled_window"` (`window_attention.make_windowed_attention`; `shift`
    only matters for `"shifted_window"`). Unknown kinds raise ValueError.
    """
    if kind == "global":
        return global_attention
    return make_windowed_attention(kind, grid, window_size, shift, num_prefix)
