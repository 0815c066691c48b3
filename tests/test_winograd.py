"""Winograd F(4x4, 3x3) convolution against ``F.conv2d``: values, gradients, and when it is taken."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semask.layers.impl import use_impl
from semask.layers.winograd import WinogradConv2d, _Winograd, conv3x3, use_winograd


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (5, 13), (1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_values_and_gradients_equal_conv2d_float64(size: tuple[int, int], channels_last: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, *size, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(3, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = _Winograd.apply(x, weight)
    grad = torch.randn(y.shape, generator=g, dtype=torch.float64)
    d_x, d_w = torch.autograd.grad(y, (x, weight), grad)
    ref = F.conv2d(x, weight, padding=1)
    ref_x, ref_w = torch.autograd.grad(ref, (x, weight), grad)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-11)
    torch.testing.assert_close(d_x, ref_x, rtol=0, atol=1e-11)
    torch.testing.assert_close(d_w, ref_w, rtol=0, atol=1e-11)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_Winograd.apply, (x, weight))


@pytest.mark.cpu_paths
def test_float32_rounding_and_module_path() -> None:
    """The float32 training path: ~1e-5 of the output range, bias added, the module keeps nn.Conv2d's keys."""
    torch.manual_seed(0)
    conv = WinogradConv2d(128, 128, 3, padding=1)
    assert list(conv.state_dict()) == list(nn.Conv2d(128, 128, 3, padding=1).state_dict())
    x = torch.randn(2, 128, 24, 28).to(memory_format=torch.channels_last).requires_grad_()
    assert use_winograd(x, conv.weight)
    y = conv(x)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert (y.double() - ref).abs().max() < 1e-4 * ref.abs().max()
    assert y.grad_fn.name() != "ConvolutionBackward0"
    y.sum().backward()
    ref_x = torch.autograd.grad(ref.sum(), x)[0]
    assert (x.grad.double() - ref_x).abs().max() < 1e-4 * ref_x.abs().max()


@pytest.mark.cpu_paths
def test_inference_path() -> None:
    """Without autograd: Winograd from 32x32 maps (forward only, also in inference mode), ``F.conv2d`` below."""
    torch.manual_seed(0)
    conv = WinogradConv2d(128, 96, 3, padding=1)
    x = torch.randn(2, 128, 33, 40)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            assert use_winograd(x, conv.weight) and not use_winograd(x[:, :, :31], conv.weight)
            y = conv(x)
            assert not torch.equal(y, F.conv2d(x, conv.weight, conv.bias, padding=1))  # another kernel
            assert (y.double() - ref).abs().max() < 1e-4 * ref.abs().max()
            assert torch.equal(conv(x[:, :, :31]), F.conv2d(x[:, :, :31], conv.weight, conv.bias, padding=1))


def test_plain_convolution_elsewhere() -> None:
    """``reference``, small maps or few channels, other dtypes: exactly ``F.conv2d``."""
    torch.manual_seed(0)
    weight = torch.randn(128, 128, 3, 3, requires_grad=True)
    x = torch.randn(1, 128, 32, 32)
    with use_impl("reference"), torch.no_grad():
        assert torch.equal(conv3x3(x, weight), F.conv2d(x, weight, padding=1))
    with use_impl("reference"):
        assert not use_winograd(x, weight)
    assert use_winograd(x, weight)
    assert not use_winograd(x[:, :, :16], weight)
    assert not use_winograd(x[:, :64], weight[:, :64])
    assert not use_winograd(x.double(), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_winograd(x, weight)
    strided = WinogradConv2d(128, 128, 3, stride=2, padding=1)
    assert strided(x).grad_fn.name() == "ConvolutionBackward0"
