"""Windowed self-attention over the ViTPose token grid: window, shifted window, pooled window.

The ViTPose paper (section 4.2, "attention type") runs its high-resolution backbones with local
attention in most layers; none of the variants are in the official code. They are defined here as
token *layouts* around the same q/k/v projections as global attention, so a checkpoint trained with
global attention loads unchanged and runs (or is fine-tuned) windowed.

Definitions (grid of `h x w` patch tokens after `P` prefix / knowledge tokens, window `wh x ww`):

* The window is clamped to the grid per axis (`wh = min(wh, h)`); the grid is padded at the
  bottom/right to a multiple of the window with zero tokens that are never attended to (masked
  keys) and whose outputs are dropped.
* ``"window"``: each patch token attends to the patch tokens of its own `wh x ww` window.
* ``"shifted_window"``: Swin-style. On layers built with ``shift=True`` (odd layers) the windows are
  offset by half a window (`wh // 2, ww // 2`; no shift along an axis the window already covers).
  This is computed with a cyclic roll of the padded grid; the windows that wrap around the grid
  border are split by the mask so that a token only attends to tokens of the same *unwrapped*
  window, i.e. windows `[k * wh - sh, (k + 1) * wh - sh)` in original coordinates. Even layers are
  plain windows.
* ``"pooled_window"``: each patch token attends to its own window's tokens plus one pooled token
  per window of the grid (its own included): the average of that window's (valid) keys and the
  average of its values. This follows the paper's pooling window attention ("a pooling operation
  over the tokens in each window extracts global context tokens, which are fed into each window as
  key and value tokens"). Since the key/value projections are affine, averaging the projections
  equals projecting the averaged tokens, so no extra weights are needed. Cost per query:
  `P + wh*ww + num_windows` keys instead of `P + h*w`.
* Prefix tokens (knowledge tokens): every patch token also attends to all prefix tokens, and the
  prefix tokens attend globally (to every prefix and patch token).

With ``output_attentions`` (eager kernel) the returned probabilities are the *effective* dense
attention `(B, heads, P + h*w, P + h*w)`: `context == probs @ values` exactly, with a pooled key's
weight spread evenly over the tokens of its window. Rows sum to one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

logger = logging.getLogger(__name__)

WINDOWED_KINDS = ("window", "shifted_window", "pooled_window")

__all__ = ["WindowLayout", "window_layout", "make_windowed_attention", "WINDOWED_KINDS"]


@dataclass(frozen=True)
class WindowLayout:
    """How the `h x w` patch tokens map to window slots (all tensors on one device, read-only).

    Attributes:
        grid: `(h, w)` token grid.
        window: `(wh, ww)` effective window (clamped to the grid).
        shift: `(sh, sw)` cyclic shift applied before partitioning (0 for unshifted layers).
        num_windows: number of windows `nW` of the padded grid.
        window_tokens: tokens per window `n = wh * ww`.
        gather: `(nW * n,)` long: for each slot, the patch-token index filling it, or `h*w` (a zero
            padding row) for padded slots.
        scatter: `(h*w,)` long: the slot holding each patch token.
        valid: `(nW, n)` bool: slot holds a real token.
        local_allowed: `(nW, n, n)` bool: query slot may attend to key slot of the same window
            (rows of padded query slots are all True so that no softmax row is empty).
        counts: `(nW,)` float: number of valid tokens per window (>= 1).
        needs_mask: whether `local_allowed` forbids anything.
        padded: whether some slots are padding.
    """

    grid: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]
    num_windows: int
    window_tokens: int
    gather: torch.Tensor
    scatter: torch.Tensor
    valid: torch.Tensor
    local_allowed: torch.Tensor
    counts: torch.Tensor
    needs_mask: bool
    padded: bool


def _check_pair(value, name: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair of ints, got {value!r}") from err
    if a <= 0 or b <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return a, b


def _normal_tensors(fn):
    """Build cached tensors as plain tensors: outside inference mode (a cache entry first made under
    `torch.inference_mode()` would hold inference tensors that a later autograd pass cannot save for
    backward) and outside a fake-tensor mode (torch.export traces with fake tensors: a layout is a
    function of Python ints only, so it is computed for real and enters the graph as a constant, and
    the cache never holds fake tensors)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), _unset_fake_mode():
            return fn(*args, **kwargs)

    return wrapper


def _unset_fake_mode():
    """Leave every active dispatch mode (fake tensors, export's proxy tracing) for the duration."""
    try:  # private torch helper; without it there is no such mode to leave
        from torch.utils._python_dispatch import _disable_current_modes
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return _disable_current_modes()


@functools.lru_cache(maxsize=128)
@_normal_tensors
def _cpu_layout(grid: tuple[int, int], window: tuple[int, int], shift: bool) -> WindowLayout:
    h, w = grid
    wh, ww = min(window[0], h), min(window[1], w)
    sh = wh // 2 if shift and wh < h else 0
    sw = ww // 2 if shift and ww < w else 0
    nh, nw = math.ceil(h / wh), math.ceil(w / ww)
    hp, wp = nh * wh, nw * ww
    # slot (i, j, a, b): window (i, j), offset (a, b); rolled position (i*wh + a, j*ww + b) holds the
    # padded-grid position ((i*wh + a + sh) % hp, (j*ww + b + sw) % wp).
    rolled_r = torch.arange(hp).view(nh, 1, wh, 1)
    rolled_c = torch.arange(wp).view(1, nw, 1, ww)
    r = (rolled_r + sh) % hp
    c = (rolled_c + sw) % wp
    r, c = torch.broadcast_tensors(r, c)  # (nh, nw, wh, ww)
    valid = (r < h) & (c < w)
    token = torch.where(valid, r * w + c, torch.full_like(r, h * w))
    # region of the unrolled shifted partition: windows start at -sh + k*wh (wrapped rows get -1)
    region_r = torch.div(r - sh, wh, rounding_mode="floor")
    region_c = torch.div(c - sw, ww, rounding_mode="floor")
    num_windows, n = nh * nw, wh * ww
    valid = valid.reshape(num_windows, n)
    region = (region_r * (nw + 2) + region_c).reshape(num_windows, n)
    allowed = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]
    allowed = allowed | ~valid[:, :, None]  # padded queries: anything (their output is dropped)
    gather = token.reshape(-1)
    scatter = torch.empty(h * w, dtype=torch.long)
    slots = torch.arange(num_windows * n)
    real = gather < h * w
    scatter[gather[real]] = slots[real]
    return WindowLayout(
        grid=(h, w), window=(wh, ww), shift=(sh, sw), num_windows=num_windows, window_tokens=n,
        gather=gather, scatter=scatter, valid=valid, local_allowed=allowed,
        counts=valid.sum(-1).float(), needs_mask=not bool(allowed.all()), padded=not bool(valid.all()),
    )


def window_layout(
    grid: tuple[int, int], window_size: tuple[int, int], shift: bool = False, device: torch.device | str | None = None
) -> WindowLayout:
    """The (cached) window layout of a `grid` for `window_size`, on `device`.

    Args:
        grid: `(h, w)` patch-token grid.
        window_size: `(wh, ww)` requested window (clamped to the grid).
        shift: Swin-style half-window cyclic shift.
        device: where the index tensors live (default CPU).
    """
    grid = _check_pair(grid, "grid")
    window = _check_pair(window_size, "window_size")
    return _device_layout(grid, window, bool(shift), torch.device(device or "cpu"))


@functools.lru_cache(maxsize=128)
@_normal_tensors
def _device_layout(grid, window, shift, device) -> WindowLayout:
    lay = _cpu_layout(grid, window, shift)
    if device.type == "cpu":
        return lay
    move = lambda t: t.to(device)  # noqa: E731
    return WindowLayout(
        grid=lay.grid, window=lay.window, shift=lay.shift, num_windows=lay.num_windows,
        window_tokens=lay.window_tokens, gather=move(lay.gather), scatter=move(lay.scatter),
        valid=move(lay.valid), local_allowed=move(lay.local_allowed), counts=move(lay.counts),
        needs_mask=lay.needs_mask, padded=lay.padded,
    )


@functools.lru_cache(maxsize=128)
@_normal_tensors
def _window_mask(grid, window, shift, device, num_prefix: int, pooled: bool, dtype) -> torch.Tensor | None:
    """Additive mask `(nW, 1, n, P + n [+ nW])` (0 allowed, -inf forbidden), or None if nothing is."""
    lay = _device_layout(grid, window, shift, device)
    if not lay.needs_mask:
        return None
    nw, n = lay.num_windows, lay.window_tokens
    parts = []
    if num_prefix:
        parts.append(torch.ones(nw, n, num_prefix, dtype=torch.bool, device=device))
    parts.append(lay.local_allowed)
    if pooled:
        parts.append(torch.ones(nw, n, nw, dtype=torch.bool, device=device))
    allowed = torch.cat(parts, dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    return mask[:, None]


@torch._dynamo.assume_constant_result
def _constant_device_layout(*args):
    return _device_layout(*args)


@torch._dynamo.assume_constant_result
def _constant_window_mask(*args):
    return _window_mask(*args)


def _traceable(fn):
    """`fn` (a cached layout or mask builder, a function of Python values only) as a constant for
    dynamo (torch.compile, strict export): it runs for real and its result enters the graph, instead
    of dynamo tracing the cache and the boolean reductions inside it."""
    if torch.compiler.is_dynamo_compiling():
        return _constant_device_layout if fn is _device_layout else _constant_window_mask
    return fn


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def make_windowed_attention(
    kind: str, grid: tuple[int, int], window_size: tuple[int, int], shift: bool, num_prefix: int
) -> Callable:
    """The attention function of one windowed layer (see the module docstring for the definitions).

    Args:
        kind: `"window"`, `"shifted_window"` or `"pooled_window"`.
        grid: `(h, w)` patch-token grid of this forward pass.
        window_size: `(wh, ww)` window in tokens.
        shift: shift this layer's windows by half a window (only used by `"shifted_window"`).
        num_prefix: `P`, number of prefix (knowledge) tokens before the patch tokens.

    Returns:
        `attend(q, k, v, *, num_heads, scaling, impl, module, dropout, kernel, output_attentions=True)`
        mapping projections `(B, P + h*w, C)` to the context `(B, P + h*w, C)` and the effective
        attention probabilities `(B, heads, P + h*w, P + h*w)` (only when `kernel` returns
        probabilities, i.e. eager, and `output_attentions`) or None.
        `kernel` is `attention.sdpa_or_eager_attention`.
    """
    if kind not in WINDOWED_KINDS:
        raise ValueError(f"attention kind {kind!r} is not one of {WINDOWED_KINDS}")
    grid = _check_pair(grid, "grid")
    window = _check_pair(window_size, "window_size")
    num_prefix = int(num_prefix)
    if num_prefix < 0:
        raise ValueError(f"num_prefix must be >= 0, got {num_prefix}")
    pooled = kind == "pooled_window"
    do_shift = bool(shift) and kind == "shifted_window"

    def attend(q, k, v, *, num_heads, scaling, impl, module, dropout, kernel, output_attentions=True):
        batch, length, channels = q.shape
        num_patches = grid[0] * grid[1]
        if length != num_prefix + num_patches:
            raise ValueError(
                f"got {length} tokens, expected {num_prefix} prefix + {grid[0]}x{grid[1]} grid tokens"
            )
        lay = _traceable(_device_layout)(grid, window, do_shift, q.device)
        nw, n = lay.num_windows, lay.window_tokens
        head_dim = channels // num_heads

        def to_slots(x: torch.Tensor) -> torch.Tensor:
            # (B, N, C) patch tokens -> (B * nW, heads, n, d), padded slots filled with zeros
            if lay.padded:
                x = torch.cat([x, x.new_zeros(batch, 1, channels)], dim=1)
            x = x[:, lay.gather]
            return x.view(batch * nw, n, num_heads, head_dim).transpose(1, 2)

        def per_window(x: torch.Tensor) -> torch.Tensor:
            # (B, heads, m, d) shared by all windows -> (B * nW, heads, m, d)
            return x.unsqueeze(1).expand(batch, nw, *x.shape[1:]).reshape(batch * nw, *x.shape[1:])

        q_win = to_slots(q[:, num_prefix:])
        k_win = to_slots(k[:, num_prefix:])
        v_win = to_slots(v[:, num_prefix:])
        keys, values = [k_win], [v_win]
        if num_prefix:
            keys.insert(0, per_window(_split_heads(k[:, :num_prefix], num_heads)))
            values.insert(0, per_window(_split_heads(v[:, :num_prefix], num_heads)))
        if pooled:
            counts = lay.counts.to(q.dtype).view(1, nw, 1, 1)
            # padded slots are zeros, so the sum over a window is the sum over its valid tokens
            k_pool = (k_win.view(batch, nw, num_heads, n, head_dim).sum(3) / counts).transpose(1, 2)
            v_pool = (v_win.view(batch, nw, num_heads, n, head_dim).sum(3) / counts).transpose(1, 2)
            keys.append(per_window(k_pool))
            values.append(per_window(v_pool))
        mask = _traceable(_window_mask)(grid, window, do_shift, q.device, num_prefix, pooled, q.dtype)
        if mask is not None:
            mask = mask.unsqueeze(0).expand(batch, *mask.shape).reshape(batch * nw, *mask.shape[1:])
        key_all = torch.cat(keys, dim=2) if len(keys) > 1 else k_win
        value_all = torch.cat(values, dim=2) if len(values) > 1 else v_win
        context, probs = kernel(module, q_win, key_all, value_all, mask, scaling, dropout, impl)
        # (B * nW, n, heads, d) -> (B, nW * n, C) -> original token order (B, N, C)
        context = context.reshape(batch, nw * n, channels)[:, lay.scatter]
        prefix_probs = None
        if num_prefix:
            prefix_context, prefix_probs = kernel(
                module, _split_heads(q[:, :num_prefix], num_heads), _split_heads(k, num_heads),
                _split_heads(v, num_heads), None, scaling, dropout, impl,
            )
            context = torch.cat([prefix_context.reshape(batch, num_prefix, channels), context], dim=1)
        dense = None
        if probs is not None and output_attentions:
            dense = _dense_probs(probs, prefix_probs, lay, batch, num_heads, num_prefix, pooled)
        return context, dense

    return attend


def _dense_probs(probs, prefix_probs, lay: WindowLayout, batch, num_heads, num_prefix, pooled) -> torch.Tensor:
    """Effective `(B, heads, P + N, P + N)` attention from windowed probabilities
    `(B * nW, heads, n, P + n [+ nW])` and the prefix rows `(B, heads, P, P + N)`."""
    nw, n = lay.num_windows, lay.window_tokens
    probs = probs.view(batch, nw, num_heads, n, -1)
    local = probs[..., num_prefix : num_prefix + n]  # (B, nW, heads, n, n)
    slot = probs.new_zeros(batch, nw, num_heads, n, nw, n)
    idx = torch.arange(nw, device=probs.device)
    slot[:, idx, :, :, idx, :] = local.permute(1, 0, 2, 3, 4)
    if pooled:
        spread = lay.valid.to(probs.dtype) / lay.counts.to(probs.dtype)[:, None]  # (nW, n)
        slot = slot + probs[..., num_prefix + n :, None] * spread
    slot = slot.permute(0, 2, 1, 3, 4, 5).reshape(batch, num_heads, nw * n, nw * n)
    patch = slot[:, :, lay.scatter][:, :, :, lay.scatter]  # (B, heads, N, N)
    if not num_prefix:
        return patch
    to_prefix = probs[..., :num_prefix].permute(0, 2, 1, 3, 4).reshape(batch, num_heads, nw * n, num_prefix)
    rows = torch.cat([to_prefix[:, :, lay.scatter], patch], dim=-1)
    return torch.cat([prefix_probs, rows], dim=2)
