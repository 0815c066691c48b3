"""Window partition/reverse and zero padding for NHWC token maps (Swin and the windowed semantic layer).

:func:`to_windows` / :func:`from_windows` move (B, h*w, C) tokens into (shifted, zero-padded) windows and back.
The ``reference`` implementation is the official sequence pad -> roll -> partition (and reverse -> roll -> crop);
``fast`` does each direction as one ``index_select`` with an index cached per (size, window, shift, device), which
is the same permutation with 1 copy instead of 3 (see :mod:`semask.layers.impl`).
"""

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from semask.layers.impl import get_impl


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (n >= 0), with non-negative integer ops only: the ONNX
    tracer turns sizes into tensors and exports floor division of negatives as truncation."""
    return (n + multiple - 1) // multiple * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NHWC map at the bottom/right so H and W are multiples of ``multiple``.

    Args:
        x: (B, H, W, C).

    Returns:
        (B, Hp, Wp, C) with Hp = ceil(H / multiple) * multiple, likewise Wp. While tracing for ONNX it pads
        unconditionally (possibly by 0), so the graph stays right for every input size.
    """
    h, w = x.shape[1:3]
    pad_b, pad_r = round_up(h, multiple) - h, round_up(w, multiple) - w
    if torch.jit.is_tracing() or pad_b or pad_r:  # tracing: no test of a traced size (it would fix the size)
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return x


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Split an NHWC map into non-overlapping windows.

    Args:
        x: (B, H, W, C) with H and W multiples of ``window``.

    Returns:
        (B * nW, window * window, C), windows in row-major order.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)  # (B*nW, M*M, C)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: (B * nW, window * window, C).
        h, w: padded map size (multiples of ``window``).

    Returns:
        (B, h, w, C).
    """
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)  # (B, h, w, C)


def tokens_to_nchw(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) contiguous tokens -> (B, C, h, w).

    ``reference`` makes the contiguous NCHW copy of the official code. ``fast`` inference returns the
    channels-last view (no copy), which convolutions, norms and ``interpolate`` then keep channels-last; with
    autograd recording it copies as ``reference`` does (a channels-last training step was 5% slower on CPU).
    """
    if get_impl() == "fast" and not (torch.is_grad_enabled() and x.requires_grad):
        return x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class WindowIndex(NamedTuple):
    """Gather indices equivalent to pad -> roll(-shift) -> partition for one map size.

    Attributes:
        src: (nW*M*M,) int64, the token (row-major in the unpadded h x w map) of each window slot; 0 for padding.
        pad: (P,) int64, the window slots that hold zero padding.
        back: (h*w,) int64, the window slot of each token (the inverse, padding cropped).
    """

    src: torch.Tensor
    pad: torch.Tensor
    back: torch.Tensor


@functools.lru_cache(maxsize=64)
def window_index(h: int, w: int, window: int, shift: int, device: torch.device) -> WindowIndex:
    """The cached :class:`WindowIndex` of an h x w map (zero-padded to multiples of ``window``, rolled by
    ``-shift`` as in the official shifted-window code). Built outside inference mode, so training can use it."""
    with torch.inference_mode(False):
        return _build_window_index(h, w, window, shift, device)


def _build_window_index(h: int, w: int, window: int, shift: int, device: torch.device) -> WindowIndex:
    hp, wp = round_up(h, window), round_up(w, window)
    ids = torch.full((hp, wp), -1, dtype=torch.long)
    ids[:h, :w] = torch.arange(h * w).view(h, w)
    if shift:
        ids = torch.roll(ids, shifts=(-shift, -shift), dims=(0, 1))
    slots = window_partition(ids.view(1, hp, wp, 1), window).flatten()  # (nW*M*M,)
    back = torch.empty(h * w, dtype=torch.long)
    back[slots[slots >= 0]] = (slots >= 0).nonzero().flatten()
    pad = (slots < 0).nonzero().flatten()
    return WindowIndex(slots.clamp(min=0).to(device), pad.to(device), back.to(device))


def to_windows(x: torch.Tensor, h: int, w: int, window: int, shift: int = 0) -> torch.Tensor:
    """Tokens to windows: zero-pad bottom/right to multiples of ``window``, roll by ``-shift``, partition.

    Args:
        x: (B, h*w, C) contiguous tokens (row-major h x w map).
        window: window side M; shift: cyclic shift (0 or M // 2).

    Returns:
        (B * nW, M*M, C), nW = ceil(h/M) * ceil(w/M) windows per image in row-major order.
    """
    b, _, c = x.shape
    if get_impl() == "reference" or torch.compiler.is_compiling():  # inductor fuses pad/roll/partition
        y = pad_to_multiple(x.view(b, h, w, c), window)  # (B, hp, wp, C)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        return window_partition(y, window)
    idx = window_index(h, w, window, shift, x.device)
    y = x.index_select(1, idx.src)  # (B, nW*M*M, C)
    if idx.pad.numel():
        y.index_fill_(1, idx.pad, 0.0)
    return y.view(-1, window * window, c)  # (B*nW, M*M, C)


def from_windows(windows: torch.Tensor, h: int, w: int, window: int, shift: int = 0) -> torch.Tensor:
    """Inverse of :func:`to_windows`: reverse the partition, roll back by ``+shift``, crop the padding.

    Args:
        windows: (B * nW, M*M, C).

    Returns:
        (B, h*w, C).
    """
    c = windows.shape[-1]
    if get_impl() == "reference" or torch.compiler.is_compiling():  # inductor fuses pad/roll/partition
        hp, wp = round_up(h, window), round_up(w, window)
        y = window_reverse(windows, window, hp, wp)  # (B, hp, wp, C)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y[:, :h, :w].reshape(-1, h * w, c)
    idx = window_index(h, w, window, shift, windows.device)
    return windows.view(-1, idx.src.numel(), c).index_select(1, idx.back)  # (B, h*w, C)
