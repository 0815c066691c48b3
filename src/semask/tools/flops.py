"""Model complexity: the mmcv module-hook count behind the paper's GFLOPs, and PyTorch's operator-level count.

The paper's Table 2 numbers come from mmseg ``tools/get_flops.py``, i.e. mmcv 1.x
``cnn/utils/flops_counter.get_model_complexity_info``: forward hooks on modules whose exact type is in mmcv's
table, counting multiply-accumulates (mmseg prints them as "GFLOPs"). Functional ops (``F.interpolate``,
matmuls, softmax, ``torch.roll``) and unlisted modules (GELU, Dropout, Softmax, mmseg's ``Upsample`` wrapper) are
not counted, so window and semantic attention products are missing from that figure.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from semask.layers.impl import use_impl
from semask.layers.winograd import WinogradConv2d


def _conv(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    positions = out.shape[0] * math.prod(out.shape[2:])
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    return positions * per_position + (m.out_channels * positions if m.bias is not None else 0)


def _linear(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    return inp[0].numel() * out.shape[-1]


def _norm(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return inp[0].numel() * (2 if affine else 1)


def _input_numel(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    return inp[0].numel()


def _output_numel(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    return out.numel()


_POOLS = tuple(
    getattr(nn, f"{kind}{d}d")
    for kind in ("MaxPool", "AvgPool", "AdaptiveMaxPool", "AdaptiveAvgPool")
    for d in (1, 2, 3)
)
_NORMS = (
    nn.GroupNorm,
    nn.LayerNorm,
    *(getattr(nn, f"{kind}{d}d") for kind in ("BatchNorm", "InstanceNorm") for d in (1, 2, 3)),
)

# mmcv 1.x ``get_modules_mapping()`` (matched by exact type, as mmcv's ``is_supported_instance``); our
# ``WinogradConv2d`` is the official ``nn.Conv2d`` with another training kernel
_MMCV_HOOKS: dict[type, Callable[[nn.Module, tuple, torch.Tensor], int]] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, WinogradConv2d, nn.Conv3d), _conv),
    **dict.fromkeys((nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6), _output_numel),
    **dict.fromkeys(_POOLS, _input_numel),
    **dict.fromkeys(_NORMS, _norm),
    nn.Linear: _linear,
    nn.Upsample: _output_numel,
}


def _dummy_input(model: nn.Module, size: tuple[int, int]) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype)


def mmcv_flops(model: nn.Module, size: tuple[int, int]) -> float:
    """Multiply-accumulates of one (1, 3, H, W) eval forward, counted as mmcv's ``get_model_complexity_info``.

    The ``reference`` implementation runs (the official module calls). Per call of a module of exactly these
    types: Conv = output positions x (C_in/groups) x C_out x k^d (+ C_out per position with bias); Linear =
    input numel x out_features; Batch/Group/Instance/LayerNorm = input numel (x2 with affine);
    ReLU/PReLU/ELU/LeakyReLU/ReLU6 = output numel; pooling = input numel; ``nn.Upsample`` = output numel.
    Everything else counts 0. Works on meta-device models (shapes only).

    Args:
        model: the network; called on zeros (B=1) on its parameters' device and dtype.
        size: (H, W) input pixels.

    Returns:
        The count (e.g. ~39.84e9 for ``semask_swin_tiny_fpn`` at 512x512; mmseg reports "39.8 GFLOPs").
    """
    total = 0

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += _MMCV_HOOKS[type(m)](m, inp, out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) in _MMCV_HOOKS]
    was_training = model.training
    try:
        with torch.no_grad(), use_impl("reference"):
            model.eval()(_dummy_input(model, size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return float(total)


def torch_flops(model: nn.Module, size: tuple[int, int]) -> float:
    """FLOPs of one (1, 3, H, W) eval forward by ``torch.utils.flop_counter.FlopCounterMode``.

    Counts every matmul/conv-like operator (2 FLOPs per multiply-accumulate), attention products included;
    elementwise ops, norms and softmax are not counted. The ``reference`` implementation runs (plain PyTorch
    operators; the ``fast`` path's oneDNN kernels are invisible to the counter). Works on meta-device models.

    Args:
        model: the network; called on zeros (B=1) on its parameters' device and dtype.
        size: (H, W) input pixels.
    """
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), use_impl("reference"), counter:
            model.eval()(_dummy_input(model, size))
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())
