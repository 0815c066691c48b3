"""The ``fast`` loss kernels (fused per-pixel CE, fused mask losses, one-product matching costs) compute the
official values and gradients (``reference`` = the official ops), including ignored pixels, class weights, soft
targets and the argmax tie rule of the reported accuracy."""

import pytest
import torch

from semask.layers.impl import use_impl
from semask.losses.fpn import semask_fpn_loss
from semask.losses.mask_losses import mask_losses
from semask.losses.matcher import batch_mask_dice_cost


def _both(fn, *tensors):
    """fn(*tensors) -> (values, grads of the tensors) under each implementation."""
    out = {}
    for impl in ("reference", "fast"):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        with use_impl(impl):
            values = fn(*leaves)
            total = sum(w * v for w, v in zip((1.3, 0.7, 0.0), values, strict=False) if v.requires_grad)
            grads = torch.autograd.grad(total, leaves)
        out[impl] = ([v.detach() for v in values], grads)
    return out["reference"], out["fast"]


@pytest.mark.parametrize("weighted", [False, True])
def test_pixel_ce_and_accuracy_match_the_official_ops(weighted):
    torch.manual_seed(0)
    logits, prior = (
        torch.randn(2, 6, 9, 11, dtype=torch.float64),
        torch.randn(2, 6, 9, 11, dtype=torch.float64),
    )
    label = torch.randint(0, 6, (2, 36, 44))
    label[:, :5] = 255
    weight = torch.rand(6) if weighted else None

    def loss(a, b):
        out = semask_fpn_loss(a, b, label, class_weight=weight)
        return out["loss_ce"], out["loss_cate"], out["acc_seg"]

    (ref, ref_grads), (fast, fast_grads) = _both(loss, logits, prior)
    for r, f in zip(ref, fast, strict=True):
        assert torch.allclose(r, f, rtol=1e-6, atol=0), (r, f)
    for r, f in zip(ref_grads, fast_grads, strict=True):
        assert torch.allclose(r, f, rtol=1e-5, atol=1e-9)
    assert 0 < ref[2] < 100


def test_accuracy_counts_the_first_maximum_on_ties():
    label = torch.tensor([[[0, 1]]])
    logits = torch.zeros(1, 2, 1, 2)  # every class ties: argmax = class 0
    for impl in ("reference", "fast"):
        with use_impl(impl):
            assert semask_fpn_loss(logits, None, label)["acc_seg"].item() == 50.0


@pytest.mark.parametrize("focal", [True, False])
@pytest.mark.parametrize("soft", [False, True])
def test_fused_mask_losses_match_the_official_ops(focal, soft):
    torch.manual_seed(1)
    x = torch.randn(5, 300, dtype=torch.float64) * 4
    t = torch.rand(5, 300, dtype=torch.float64)
    t = t if soft else (t > 0.6).double()
    (ref, ref_grads), (fast, fast_grads) = _both(lambda a: mask_losses(a, t, 3.0, focal), x)
    for r, f in zip(ref, fast, strict=True):
        assert torch.allclose(r, f, rtol=1e-12), (r, f)
    assert torch.allclose(ref_grads[0], fast_grads[0], rtol=1e-9, atol=1e-18)
    with use_impl("fast"):
        leaf = x[:2, :20].clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a: mask_losses(a, t[:2, :20], 2.0, focal), (leaf,))


@pytest.mark.parametrize("focal", [True, False])
@pytest.mark.parametrize("pixel_major", [False, True])
def test_one_product_matching_costs_match_the_official_ops(focal, pixel_major):
    torch.manual_seed(2)
    x, t = torch.randn(30, 400, dtype=torch.float64) * 3, (torch.rand(4, 400) > 0.5).double()
    if (
        pixel_major
    ):  # MaskFormer's masks: queries of 3 layers interleaved per pixel, one layer's (30, P) viewed
        x = torch.cat([x, x.neg(), x]).t().contiguous()[:, :30].t()
    with use_impl("reference"):
        ref = batch_mask_dice_cost(x, t, focal)
    for r, f in zip(ref, batch_mask_dice_cost(x, t, focal), strict=True):
        assert torch.allclose(f, r, rtol=1e-12, atol=1e-14)
        assert r.shape == (30, 4)
