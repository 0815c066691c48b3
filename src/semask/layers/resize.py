"""Bilinear resizes (align_corners=False): mmseg's head resizes, with the ``fast`` skip of identity resizes, and
the mask-loss upsampling as two matrix products in ``fast``."""

import functools

import torch
import torch.nn.functional as F

from semask.layers.impl import get_impl


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling of (B, C, h, w), align_corners=False (mmseg ``Upsample``)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to ``size``. ``fast`` skips a resize to the same size
    (an exact identity: every output pixel samples its own source pixel); ``reference`` runs it as the official
    code does."""
    if tuple(x.shape[-2:]) == tuple(size) and get_impl() == "fast":
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=16)
def bilinear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 matrix of 1-D bilinear interpolation, align_corners=False: row i holds the two
    weights of ``F.interpolate``'s source index (i + 0.5) * n_in / n_out - 0.5, clamped at 0 and at n_in - 1."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=n_in - 1)
    frac = src - lo
    rows = torch.arange(n_out)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, (lo + 1).clamp(max=n_in - 1)), frac, accumulate=True)
    return weights


def resize_masks(masks: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (N, h, w) masks to (N, *size), differentiable.

    ``reference`` runs ``F.interpolate`` on (N, 1, h, w) as the official criteria do; ``fast`` computes the same
    weighted sums as A_h @ masks @ A_w^T with :func:`bilinear_weights` (equal to float rounding): on CPU the
    products and their gradient run ~3x faster than the single-channel upsampling kernel's backward.
    """
    if get_impl() == "reference":
        return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    rows = bilinear_weights(masks.shape[-2], size[0]).to(masks)
    cols = bilinear_weights(masks.shape[-1], size[1]).to(masks)
    return rows @ (masks @ cols.t())


def slow_in_place(x: torch.Tensor) -> bool:
    """Whether in-place elementwise kernels are the slow choice for ``x``: on CPU, bf16 in-place ops run ~2x
    slower than into a new tensor (an (8, 256, 128, 128) channels-last add: 19.5 ms vs 9.2 ms; ReLU 16.9 vs
    7.9 ms), while float32 in-place ops are the faster ones (add: 7.8 ms vs 13.1 ms)."""
    return x.device.type == "cpu" and x.dtype == torch.bfloat16


@functools.lru_cache(maxsize=16)
def _exact_in_bf16(n_in: int, n_out: int) -> bool:
    weights = bilinear_weights(n_in, n_out)
    return torch.equal(weights.to(torch.bfloat16).double(), weights)


def add_resized(total: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
    """``total + sum(resize_to(x, total.shape[-2:]) for x in maps)`` for a (B, C, H, W) ``total`` and
    (B, C, h_i, w_i) maps; ``total`` may be updated in place and returned.

    bf16 channels-last maps on CPU whose interpolation weights are exact in bf16 (power-of-two scales, as between
    the stages of a 512x512 input) take the resizes as matrix products: each map's columns resized into one
    (B, sum h_i, W, C) stack, then all the rows at once, accumulating into ``total`` (one pass over the full-size
    map; (8, 256, 128, 128) with three maps: 25 ms, one product per map 39 ms, upsample + add 50 ms); otherwise
    the upsampling kernel and an add per map (in place unless :func:`slow_in_place`).
    """
    height, width = total.shape[-2:]
    cl = torch.channels_last
    if not (
        slow_in_place(total)
        and total.is_contiguous(memory_format=cl)
        and all(x.is_contiguous(memory_format=cl) for x in maps)
        and all(_exact_in_bf16(x.shape[2], height) and _exact_in_bf16(x.shape[3], width) for x in maps)
    ):
        for x in maps:
            resized = resize_to(x, (height, width))
            total = total + resized if slow_in_place(total) else total.add_(resized)
        return total
    b, c = total.shape[:2]
    columns = [
        (x.permute(0, 2, 3, 1), bilinear_weights(x.shape[3], width).to(x)) for x in maps
    ]  # (B, h, w, C)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (total, *maps)):
        stack = torch.cat(
            [(cols @ x.reshape(-1, *x.shape[2:])).view(b, -1, width, c) for x, cols in columns], 1
        )
    else:  # written in place (4 ms less at the sizes above)
        stack = total.new_empty(b, sum(x.shape[1] for x, _ in columns), width, c)
        start = 0
        for x, cols in columns:
            h = x.shape[1]
            for image, out in zip(x, stack[:, start : start + h], strict=True):  # (h, w, C), (h, W, C)
                torch.bmm(cols.expand(h, -1, -1), image, out=out)
            start += h
    rows = torch.cat([bilinear_weights(x.shape[2], height) for x in maps], dim=1).to(total)  # (H, sum h_i)
    flat = total.permute(0, 2, 3, 1).view(b, height, width * c)
    flat.baddbmm_(rows.expand(b, height, -1), stack.view(b, -1, width * c))
    return total
