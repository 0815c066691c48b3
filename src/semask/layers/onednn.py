"""Fused oneDNN kernels for ``fast`` CPU inference: linear (+ GELU), conv + folded BatchNorm + ReLU, and conv + GELU
(MiT's depthwise conv and the GELU after it: one pass less over the 4x-wide hidden map, SegFormer-B0 batch-8
inference 3-4% faster).

These are the kernels inductor's CPU freezing pass emits (``torch.ops.mkldnn._linear_pointwise``,
``_convolution_pointwise``, weights reordered once by ``_reorder_linear_weight``), called directly:

- linear: PyTorch's fp32 ``addmm`` goes to MKL, which copies the bias into the output and then runs the GEMM at
  100-170 GFLOP/s on Swin-T shapes on this project's CPU (AMD EPYC, AVX-512); oneDNN with the weight reordered
  once adds the bias, and optionally the exact GELU, in the GEMM kernel: 30% less time over the Swin-T layer
  shapes in fp32. Under bf16 autocast the cached bf16 weights also save autocast's per-forward weight casts.
- conv: with the eval-mode BatchNorm folded into the weights and the ReLU fused, the 3x3 conv of the stride-4
  decoder head runs 1.4x faster in fp32 (no separate passes over the 256-channel stride-4 map).

They serve fp32 and bf16-autocast inference; everything else (autograd, fp16, tracing, compiling, other devices,
training-mode BatchNorm, the ``reference`` implementation) runs the plain PyTorch ops. Models are built from plain
modules; :func:`semask.tools.onednn.enable_onednn` swaps in the modules of this file (opt-in: the ``semask eval``,
``predict`` and ``bench`` commands do). ``benchmarks/bench_fpn.py`` shows the whole-model effect.
"""

import weakref

import torch
from torch import nn

from semask.hardware import onednn_runs
from semask.layers.impl import get_impl


def _onednn_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The compute dtype of a oneDNN call for these inputs (fp32, or bf16 under CPU bf16 autocast), or None where
    the plain PyTorch op must run: not ``fast``, not CPU, autograd recording, tracing, compiling, other dtypes, or
    a CPU/build where the kernels do not run for that dtype (:func:`semask.hardware.onednn_runs`)."""
    if not (get_impl() == "fast" and x.device.type == "cpu" and weight.dtype == torch.float32):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    elif x.dtype == torch.float32:
        dtype = torch.float32
    else:
        return None  # F.linear's dtype checks
    return dtype if dtype in (torch.float32, torch.bfloat16) and onednn_runs(dtype) else None


# module -> (key, prepared weights); kept outside the modules so that deepcopy, pickling and torch.save of a model
# never meet oneDNN's opaque reordered tensors (they have no storage), and dropped with the module
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(module: nn.Module, params: list[torch.Tensor], dtype: torch.dtype, build):
    """``build()`` cached for ``module`` until one of ``params`` changes (in-place updates, including BatchNorm's
    running statistics, bump ``_version``; ``.to()`` changes ``data_ptr``) or another dtype is asked for."""
    key = (dtype, *((p.data_ptr(), p._version) for p in params))
    cached = _CACHE.get(module)
    if cached is None or cached[0] != key:
        cached = _CACHE[module] = (key, build())
    return cached[1]


def _reordered(layer: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``layer``'s weight, reordered for oneDNN, and bias in ``dtype`` (cached)."""

    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        w = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().to(dtype), None)
        return w, None if layer.bias is None else layer.bias.detach().to(dtype)

    return _cached(layer, [p for p in (layer.weight, layer.bias) if p is not None], dtype, build)


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s weight and bias with the eval-mode ``bn`` folded in (in fp32, then cast to ``dtype``; cached):
    w * gamma / sqrt(var + eps) and beta - mean * gamma / sqrt(var + eps)."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # (C_out,)
            weight = conv.weight * scale[:, None, None, None]
            return weight.to(dtype), (bn.bias - bn.running_mean * scale).to(dtype)

    params = [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]
    return _cached(conv, params, dtype, build)


def fused_linear(x: torch.Tensor, layer: nn.Linear, activation: str = "none") -> torch.Tensor | None:
    """``layer(x)`` (then ``activation``) as one oneDNN call with the weight reordered once, or
    None where that does not apply: not ``fast``, not CPU, autograd recording, tracing, compiling, or a dtype
    other than fp32 and bf16 autocast. The caller then runs the modules.

    Args:
        x: (..., in_features).
        layer: the weights (any ``nn.Linear``).
        activation: "none", "gelu" (the exact erf ``F.gelu``) or "relu", fused into the kernel.

    Returns:
        (..., out_features), in bf16 under CPU bf16 autocast (as ``F.linear``); or None.
    """
    dtype = _onednn_dtype(x, layer.weight)
    if dtype is None:
        return None
    w, b = _reordered(layer, dtype)
    algorithm = "none" if activation == "gelu" else ""  # oneDNN's exact GELU
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), w, b, activation, [], algorithm)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state_dict keys) that runs :func:`fused_linear` where it applies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = fused_linear(x, self)
        return super().forward(x) if y is None else y


def fused_conv_bn_relu(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor | None:
    """``relu(bn(conv(x)))`` as one oneDNN call with the eval-mode BatchNorm folded into the conv weights
    (see :func:`_folded`), or None where that does not apply (training-mode BatchNorm, or see
    :func:`fused_linear`); the caller then runs the modules.

    Args:
        x: (B, C_in, H, W), any memory format (channels-last stays channels-last).
        conv: bias-free ``nn.Conv2d`` with int padding/stride/dilation; bn: its ``nn.BatchNorm2d``.

    Returns:
        (B, C_out, H', W'), or None.
    """
    dtype = None if bn.training else _onednn_dtype(x, conv.weight)
    if dtype is None:
        return None
    return _conv_pointwise(x.to(dtype), conv, *_folded(conv, bn, dtype), "relu")


def fused_conv(x: torch.Tensor, conv: nn.Conv2d, activation: str) -> torch.Tensor | None:
    """``activation(conv(x))`` as one oneDNN call, or None where that does not apply (see :func:`fused_linear`);
    the caller then runs the modules.

    Args:
        x: (B, C_in, H, W), any memory format (channels-last stays channels-last).
        conv: ``nn.Conv2d`` with int padding/stride/dilation (any groups, with or without bias).
        activation: "gelu" (the exact erf ``F.gelu``) or "relu".

    Returns:
        (B, C_out, H', W'), or None.
    """
    dtype = _onednn_dtype(x, conv.weight)
    if dtype is None:
        return None

    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        return conv.weight.detach().to(dtype), None if conv.bias is None else conv.bias.detach().to(dtype)

    weight, bias = _cached(conv, [p for p in (conv.weight, conv.bias) if p is not None], dtype, build)
    return _conv_pointwise(x.to(dtype), conv, weight, bias, activation)


def _conv_pointwise(
    x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> torch.Tensor:
    """oneDNN's conv + ``activation`` ("relu", or "gelu": the exact erf GELU) with ``conv``'s geometry."""
    algorithm = "none" if activation == "gelu" else ""  # oneDNN's exact GELU
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups, activation, [], algorithm
    )
