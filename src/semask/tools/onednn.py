"""The opt-in oneDNN module swap: the same parameters, fused CPU inference kernels (:mod:`semask.layers.onednn`).

``enable_onednn(model)`` changes the class of the modules it knows, in place, to a subclass whose ``forward`` calls
the fused kernel where it applies (``fast`` implementation, CPU, no autograd, fp32 or bf16 autocast, a CPU/build
where the kernel runs) and the plain ops elsewhere; state dicts, training and export are unchanged.
"""

import torch
from torch import nn

from semask.backbones.mit import MixFFN, nchw_to_tokens
from semask.backbones.swin import Mlp
from semask.decoders.maskformer.pixel_decoder import EncoderLayer
from semask.layers.conv import ConvBNReLU
from semask.layers.onednn import OneDNNLinear, fused_conv, fused_conv_bn_relu, fused_linear
from semask.layers.windows import tokens_to_nchw


class OneDNNConvBNReLU(ConvBNReLU):
    """:class:`ConvBNReLU` as one oneDNN call with the eval-mode BatchNorm folded in, where that applies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = fused_conv_bn_relu(x, self.conv, self.bn)
        return super().forward(x) if y is None else y


class OneDNNMlp(Mlp):
    """Swin's :class:`Mlp` with the exact GELU fused into ``fc1``'s oneDNN kernel, where that applies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = fused_linear(x, self.fc1, activation="gelu")
        return super().forward(x) if h is None else self.fc2(h)


class OneDNNEncoderLayer(EncoderLayer):
    """The deformable encoder layer with the FFN's ReLU fused into ``linear1``'s oneDNN kernel, where that applies."""

    def hidden(self, src: torch.Tensor) -> torch.Tensor:
        h = fused_linear(src, self.linear1, activation="relu")
        return super().hidden(src) if h is None else h


class OneDNNMixFFN(MixFFN):
    """MiT's :class:`MixFFN` with the exact GELU fused into the depthwise conv's oneDNN kernel, where that applies."""

    def hidden(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        t = self.fc1(x)
        y = fused_conv(tokens_to_nchw(t, h, w), self.dwconv.dwconv, "gelu")
        return self.act(self.dwconv(t, h, w)) if y is None else nchw_to_tokens(y)


SWAPS: dict[type, type] = {
    nn.Linear: OneDNNLinear,
    ConvBNReLU: OneDNNConvBNReLU,
    Mlp: OneDNNMlp,
    MixFFN: OneDNNMixFFN,
    EncoderLayer: OneDNNEncoderLayer,
}
"""Exact module class -> its oneDNN subclass (subclasses of these, e.g. MultiheadAttention's projection, stay)."""


def enable_onednn(model: nn.Module) -> int:
    """Swap every module of an exact class in :data:`SWAPS` for its oneDNN subclass, in place.

    Returns:
        The number of modules swapped.
    """
    swapped = 0
    for module in model.modules():
        new = SWAPS.get(type(module))
        if new is not None:
            module.__class__ = new
            swapped += 1
    return swapped
