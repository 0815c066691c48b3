"""Window partition/reverse and zero padding for NHWC token maps (Swin and the windowed semantic layer)."""

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NHWC map at the bottom/right so H and W are multiples of ``multiple``.

    Args:
        x: (B, H, W, C).

    Returns:
        (B, Hp, Wp, C) with Hp = ceil(H / multiple) * multiple, likewise Wp.
    """
    h, w = x.shape[1:3]
    pad_b, pad_r = (-h) % multiple, (-w) % multiple
    if pad_b or pad_r:
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
