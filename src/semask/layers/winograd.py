"""3x3 convolution (stride 1, padding 1) by Winograd's minimal filtering F(4x4, 3x3), forward and backward.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), eq. 7-8: each 6x6 input tile d and
3x3 filter g give the 4x4 output tile ``A^T [U * V] A`` with ``U = G g G^T`` and ``V = B^T d B``; summed over the
input channels, that is 36 matrix products (tiles x C_in) @ (C_in x C_out): 2.25 multiplies per output where the
direct convolution takes 9. The backward is the same algebra transposed: with ``E = A dY A^T`` per output tile,
the input gradient is ``B [E U^T] B^T`` per tile, summed where tiles overlap, and the filter gradient
``G^T [V^T E] G`` (products over the tiles). The transforms are small matrix products over channel-last tiles
(memory-bound), so it pays off for wide maps and channels (the stride-4 3x3 convolutions of the pixel decoders,
256 channels). Rounding: ~1e-5 of the output range in float32, the direct convolution ~2e-6; used in ``fast``
float32 CPU training and inference (:func:`use_winograd`).
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from semask.layers.impl import get_impl

_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
M, ALPHA = 4, 6  # output tile, input tile


@functools.cache
def _matrices(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B^T (6, 6), G (6, 3) and A^T (4, 6) in ``dtype``, built once (read-only; outside inference mode, so a
    first call under ``torch.inference_mode`` still serves training)."""
    with torch.inference_mode(False):
        return tuple(torch.tensor(m, dtype=dtype) for m in (_BT, _G, _AT))


def _tile_counts(h: int, w: int) -> tuple[int, int]:
    """Output tiles (nh, nw) that cover an h x w map."""
    return -(-h // M), -(-w // M)


def _both(mat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mat`` applied along both tile axes: (a, b) matrix, (b, b, R) -> (a, a, R), as one product with the
    (a*a, b*b) Kronecker matrix (one pass over the tiles)."""
    return (torch.kron(mat, mat) @ x.flatten(0, 1)).view(mat.shape[0], mat.shape[0], -1)


def use_winograd(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3x3` takes the Winograd path: ``fast``, float32 on CPU, 3x3 filters, at least 96
    channels in and out, and a map of at least 24x24 pixels in training (grad enabled), 32x32 in inference: where
    it measured faster than oneDNN's direct convolution on 2 cores (``benchmarks/bench_winograd.py``; forward +
    backward: AVX-512 1.1x-2x, AVX2 1.5x-3.6x; forward alone at 256 channels: AVX-512 1.2x-1.6x at 32x32-128x128,
    0.9x at 24x24)."""
    return (
        get_impl() == "fast"
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and weight.shape[2:] == (3, 3)
        and min(weight.shape[:2]) >= 96
        and min(x.shape[2:]) >= (24 if torch.is_grad_enabled() else 32)
    )


BAND_TILES = 256  # output tiles per inference band: its transformed input (36, 256, C) stays cache-sized


def _padded(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4 nh + 2, 4 nw + 2, C): channel-last, one zero pixel before, zeros after up to whole
    4x4 output tiles."""
    h, w = x.shape[2:]
    nh, nw = _tile_counts(h, w)
    return F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, nw * M + 1 - w, 1, nh * M + 1 - h))


def _filters(weight: torch.Tensor) -> torch.Tensor:
    """U = G g G^T of (C_out, C, 3, 3) filters: (36, C, C_out)."""
    g = _matrices(weight.dtype)[1]
    co, c = weight.shape[:2]
    return _both(g, weight.permute(2, 3, 1, 0).reshape(3, 3, -1)).view(ALPHA * ALPHA, c, co)


def _tiles(padded: torch.Tensor) -> torch.Tensor:
    """V = B^T d B of every overlapping 6x6 tile of (N, 4 nh + 2, 4 nw + 2, C): (36, N nh nw, C)."""
    tiles = padded.unfold(1, ALPHA, M).unfold(2, ALPHA, M).permute(4, 5, 0, 1, 2, 3)  # (6, 6, N, nh, nw, C)
    bt = _matrices(padded.dtype)[0]
    return _both(bt, tiles.reshape(ALPHA, ALPHA, -1)).view(ALPHA * ALPHA, -1, padded.shape[-1])


def _outputs(v: torch.Tensor, u: torch.Tensor, n: int, nh: int, nw: int) -> torch.Tensor:
    """A^T [V U] A of (36, n nh nw, C) tiles and (36, C, C_out) filters: (n, 4 nh, 4 nw, C_out)."""
    at = _matrices(v.dtype)[2]
    co = u.shape[2]
    y = _both(at, torch.bmm(v, u).view(ALPHA, ALPHA, -1)).view(M, M, n, nh, nw, co)
    return y.permute(2, 3, 0, 4, 1, 5).reshape(n, nh * M, nw * M, co)


def _inference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The forward without autograd, in bands of about :data:`BAND_TILES` tiles per image (the temporaries of one
    band, not of the whole batch): (N, C, H, W) -> (N, C_out, H, W) channels-last."""
    n, _, h, w = x.shape
    padded, u = _padded(x), _filters(weight)
    nh, nw = _tile_counts(h, w)
    out = x.new_empty(n, nh * M, nw * M, weight.shape[0])
    rows = max(1, BAND_TILES // nw)
    for i in range(n):
        for r in range(0, nh, rows):
            band = min(rows, nh - r)
            v = _tiles(padded[i : i + 1, r * M : (r + band) * M + 2])
            out[i : i + 1, r * M : (r + band) * M] = _outputs(v, u, 1, band, nw)
    return out[:, :h, :w].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


class _Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = _padded(x)
        v, u = _tiles(padded), _filters(weight)
        y = _outputs(v, u, n, *_tile_counts(h, w))[:, :h, :w]
        ctx.save_for_backward(v, u)
        ctx.shape = x.shape
        return y.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, u = ctx.saved_tensors
        n, c, h, w = ctx.shape
        bt, g, at = _matrices(grad.dtype)
        co = u.shape[2]
        nh, nw = _tile_counts(h, w)
        gy = F.pad(grad.permute(0, 2, 3, 1), (0, 0, 0, nw * M - w, 0, nh * M - h)).view(n, nh, M, nw, M, co)
        gm = _both(at.t(), gy.permute(2, 4, 0, 1, 3, 5).reshape(M, M, -1)).view(ALPHA * ALPHA, -1, co)
        d_weight = _both(g.t(), torch.bmm(v.transpose(1, 2), gm).view(ALPHA, ALPHA, -1)).view(3, 3, c, co)
        d_tiles = _both(bt.t(), torch.bmm(gm, u.transpose(1, 2)).view(ALPHA, ALPHA, -1))
        d_tiles = d_tiles.view(ALPHA, ALPHA, n, nh, nw, c)
        # overlapping tiles summed back: the inner 4x4 of every tile by one copy, the 2-pixel overlaps added
        d_padded = torch.zeros(n, nh * M + 2, nw * M + 2, c, dtype=grad.dtype)
        d_padded[:, : nh * M, : nw * M] = (
            d_tiles[:M, :M].permute(2, 3, 0, 4, 1, 5).reshape(n, nh * M, nw * M, c)
        )
        for i in range(ALPHA):
            for j in range(ALPHA):
                if i >= M or j >= M:
                    d_padded[:, i : i + nh * M : M, j : j + nw * M : M] += d_tiles[i, j]
        x_grad = d_padded[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2)
        return x_grad.contiguous(memory_format=torch.channels_last), d_weight.permute(3, 2, 0, 1).contiguous()


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for 3x3 filters, by Winograd F(4x4, 3x3) where
    :func:`use_winograd` says so.

    Args:
        x: (N, C, H, W).
        weight: (C_out, C, 3, 3).
        bias: (C_out,) or None.

    Returns:
        (N, C_out, H, W), channels-last on the Winograd path.
    """
    if not use_winograd(x, weight):
        return F.conv2d(x, weight, bias, padding=1)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        y = _Winograd.apply(x, weight)
        return y if bias is None else y + bias.view(-1, 1, 1)
    y = _inference(x, weight)
    return y if bias is None else y.add_(bias.view(-1, 1, 1))


class WinogradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state_dict keys) whose 3x3 convolutions with stride 1, padding 1, no
    dilation or groups run :func:`conv3x3` (Winograd in ``fast`` float32 on CPU, see :func:`use_winograd`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (self.stride, self.padding, self.dilation, self.groups) != ((1, 1), (1, 1), (1, 1), 1)
        if self.kernel_size != (3, 3) or plain or self.padding_mode != "zeros":
            return super().forward(x)
        return conv3x3(x, self.weight, self.bias)
