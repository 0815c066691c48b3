"""Swin window-attention kernels (SPEC A2, W-MSA / SW-MSA): relative-position index, shift masks, and the
attention itself, in the ``reference`` (official ops) and ``fast`` (SDPA where faster, cached masks) forms."""

import functools

import torch
import torch.nn.functional as F

from semask.hardware import native_bf16
from semask.layers.impl import get_impl
from semask.layers.windows import window_partition

OFFICIAL_MASK_VALUE = -100.0
# ``fast``: masked scores get -1e4, whose softmax weight is exactly 0; the official -100 leaves exp(-100) = 3.7e-44,
# a denormal float32, and x86 matrix products run ~80x slower on denormal inputs (measured: Swin-T's stage-4
# 768x768 projection 1.7 ms -> 135 ms). They reach the products wherever a window's unmasked tokens are padding
# with zero values (e.g. zero biases at initialisation). The outputs differ by those 3.7e-44 weights only.
FAST_MASK_VALUE = -1e4


def relative_position_index(window: int) -> torch.Tensor:
    """(M*M, M*M) int64 index into the ((2M-1)^2, heads) bias table: (dy+M-1)*(2M-1) + (dx+M-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (M*M, M*M, 2)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(
    hp: int,
    wp: int,
    window: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    fill: float = OFFICIAL_MASK_VALUE,
) -> torch.Tensor:
    """(nW, M*M, M*M) additive mask for shifted windows: ``fill`` (official: -100) between tokens of different
    regions, else 0.

    Regions as the official slices (0:-M, -M:-M//2, -M//2:) per axis, numbered row-major; built from ``arange``
    comparisons so an export traces it for any size.
    """

    def region(n: int) -> torch.Tensor:  # (n,) 0, 1 or 2 along one axis
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - window // 2).long()

    ids = region(hp)[:, None] * 3 + region(wp)[None, :]  # (hp, wp)
    ids = window_partition(ids.view(1, hp, wp, 1), window).squeeze(-1)  # (nW, M*M)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff, dtype=dtype).masked_fill(diff != 0, fill)


@functools.lru_cache(maxsize=32)
def cached_shift_attention_mask(
    hp: int, wp: int, window: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`shift_attention_mask` with ``FAST_MASK_VALUE``, cached per (size, window, device, dtype) for the
    ``fast`` path (read-only).

    Built outside inference mode, so a mask first made under ``torch.inference_mode`` still serves training.
    """
    with torch.inference_mode(False):
        return shift_attention_mask(hp, wp, window, device, dtype, FAST_MASK_VALUE)


def _sdpa_is_faster(q: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether ``scaled_dot_product_attention`` beats the explicit kernel for these inputs.

    Measured on CPU, Swin-T window shapes: in fp32 inference SDPA is 10-20% faster; in bf16 inference it is about
    1.4x slower with AVX-512 bf16 dot products alone (one thread) and 5-11% faster with AMX tiles (MaskFormer-Swin-T
    512x512 bf16 batch 1 / 8, 2 cores); with autograd recording (training: the bias is a parameter) CPU SDPA falls
    back to its math kernel and forward + backward is 5-25% slower (MaskFormer-Swin-T bf16 step with AMX: 10%).
    Other devices use SDPA (not measured here).
    """
    if q.device.type != "cpu":
        return True
    if torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad):
        return False
    if q.dtype == torch.bfloat16:
        return native_bf16() and torch.cpu._is_amx_tile_supported()
    return q.dtype == torch.float32


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias [+ mask]) v`` per window and head (SPEC A2, W-MSA).

    ``reference`` is the official sequence of explicit ops. ``fast`` hands the bias (+ shift mask) to
    ``scaled_dot_product_attention`` as one additive float ``attn_mask`` where that is faster (see
    :func:`_sdpa_is_faster`), and the explicit ops otherwise.

    Args:
        q, k, v: (B*nW, heads, N, d), N = M*M.
        bias: (heads, N, N) relative position bias.
        mask: (nW, N, N) additive shift mask, or None.
        scale: d^-0.5.

    Returns:
        (B*nW, heads, N, d).
    """
    bw, heads, n, _ = q.shape
    if get_impl() == "fast" and _sdpa_is_faster(q, bias):
        attn_mask = bias.unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            # (nW, heads, N, N) per image -> (B*nW, heads, N, N), a view when B = 1
            attn_mask = (bias + mask[:, None]).expand(bw // mask.shape[0], -1, -1, -1, -1)
            attn_mask = attn_mask.reshape(bw, heads, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), scale=scale)
    attn = (q * scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)  # (B*nW, heads, N, N)
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(bw // nw, nw, heads, n, n) + mask[None, :, None]).view(bw, heads, n, n)
    return attn.softmax(dim=-1) @ v


def shift_mask(hp: int, wp: int, window: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`shift_attention_mask`: the official -100 in ``reference``, built on every call; ``FAST_MASK_VALUE`` in
    ``fast``, cached per (size, device, dtype), or built inside a ``torch.compile`` graph (which folds it)."""
    if get_impl() == "reference":
        return shift_attention_mask(hp, wp, window, device, dtype)
    if torch.compiler.is_compiling():
        return shift_attention_mask(hp, wp, window, device, dtype, FAST_MASK_VALUE)
    return cached_shift_attention_mask(hp, wp, window, device, dtype)
