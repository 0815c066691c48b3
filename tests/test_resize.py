"""The ``fast`` bilinear resizes by matrix products: mask upsampling in the MaskFormer loss (values and gradients of
``F.interpolate``) and the SegFormer head's accumulation of resized bf16 maps."""

import pytest
import torch

from semask.layers.impl import use_impl
from semask.layers.resize import add_resized, resize_masks, resize_to


@pytest.mark.parametrize(
    ("size", "out"), [((24, 24), (96, 96)), ((7, 13), (50, 21)), ((10, 10), (5, 7)), ((1, 3), (4, 4))]
)
def test_mask_resize_by_products_matches_interpolate(size, out):
    torch.manual_seed(3)
    x, weight = torch.randn(4, *size, dtype=torch.float64), torch.randn(4, *out, dtype=torch.float64)
    results = {}
    for impl in ("reference", "fast"):
        leaf = x.clone().requires_grad_()
        with use_impl(impl):
            y = resize_masks(leaf, out)
        (y * weight).sum().backward()
        results[impl] = (y.detach(), leaf.grad)
    (ref, ref_grad), (fast, fast_grad) = results["reference"], results["fast"]
    assert fast.shape == ref.shape == (4, *out)
    assert torch.allclose(fast, ref, rtol=0, atol=1e-14)
    assert torch.allclose(fast_grad, ref_grad, rtol=0, atol=1e-13)


@pytest.mark.cpu_paths
@pytest.mark.parametrize(
    ("sizes", "out", "by_products"),
    [
        ([32], 128, True),
        ([64, 32, 16], 128, True),
        ([16, 8], 64, True),
        ([33], 130, False),
        ([65, 33], 130, False),
    ],
)
def test_add_resized_bf16_matches_float32_and_accumulates_in_place(sizes, out, by_products):
    torch.manual_seed(4)
    cl = torch.channels_last
    maps = [torch.randn(2, 8, s, s + 2 * (s == 16)).bfloat16().contiguous(memory_format=cl) for s in sizes]
    total = torch.randn(2, 8, out, out).bfloat16().contiguous(memory_format=cl)
    ref = total.float() + sum(resize_to(x.float(), (out, out)) for x in maps)
    got = add_resized(total.clone(memory_format=cl), maps)
    assert got.dtype == torch.bfloat16 and got.shape == total.shape
    assert torch.allclose(got.float(), ref, rtol=2**-6, atol=2**-6 * len(maps))
    target = total.clone(memory_format=cl)
    assert (add_resized(target, maps) is target) == by_products  # products accumulate into the map itself


@pytest.mark.cpu_paths
def test_add_resized_bf16_gradients_match_float32():
    """Under autograd (bf16 training) the products give the upsample + add's gradients, to bf16 rounding."""
    torch.manual_seed(6)
    cl = torch.channels_last
    maps = [torch.randn(2, 8, s, s).bfloat16().contiguous(memory_format=cl) for s in (32, 16)]
    total = torch.randn(2, 8, 64, 64).bfloat16().contiguous(memory_format=cl)
    weight = torch.randn(2, 8, 64, 64)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        leaves = [x.to(dtype).contiguous(memory_format=cl).requires_grad_() for x in (total, *maps)]
        out = add_resized(leaves[0] * 1, leaves[1:])
        (out.float() * weight).sum().backward()
        grads[dtype] = [x.grad.float() for x in leaves]
    for got, ref in zip(grads[torch.bfloat16], grads[torch.float32], strict=True):
        assert torch.allclose(got, ref, rtol=2**-6, atol=2**-6 * ref.abs().max().item())


def test_add_resized_float32_is_the_in_place_upsample_add():
    torch.manual_seed(5)
    maps, total = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 32, 32)], torch.randn(2, 8, 64, 64)
    ref = total + resize_to(maps[0], (64, 64)) + resize_to(maps[1], (64, 64))
    out = add_resized(total, maps)
    assert out is total and torch.equal(out, ref)
