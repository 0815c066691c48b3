"""The mask product's fast backward (only queries with a gradient) against autograd's einsum backward."""

import pytest
import torch

from semask.layers.impl import use_impl
from semask.layers.mask_product import mask_product


def _inputs(channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    features = torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64)
    if channels_last:
        features = features.to(memory_format=torch.channels_last)
    return embed, features.requires_grad_()


def _grads(impl: str, embed: torch.Tensor, features: torch.Tensor, rows: list[int]):
    with use_impl(impl):
        masks = mask_product(embed, features)
    # as the set criteria: only the matched queries' masks enter the loss (other rows of the gradient are zero)
    matched = masks[torch.tensor([0, 1]), torch.tensor(rows)]
    loss = (
        matched.sigmoid() * torch.linspace(-1, 1, matched.numel(), dtype=masks.dtype).view_as(matched)
    ).sum()
    return (masks, *torch.autograd.grad(loss, (embed, features)))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rows", [[3, 3], [0, 6], [2, 5]])
def test_fast_backward_equals_einsum(channels_last: bool, rows: list[int]) -> None:
    embed, features = _inputs(channels_last)
    masks, d_embed, d_features = _grads("fast", embed, features, rows)
    ref_masks, ref_embed, ref_features = _grads("reference", embed, features, rows)
    assert torch.equal(masks, ref_masks)
    assert masks.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(d_embed, ref_embed, rtol=0, atol=1e-12)
    torch.testing.assert_close(d_features, ref_features, rtol=0, atol=1e-12)
    assert d_features.is_contiguous(memory_format=torch.channels_last) == channels_last
    # the queries without a match get no gradient at all
    unmatched = [q for q in range(7) if q not in rows]
    assert d_embed[:, unmatched].abs().max() == 0


def test_dense_gradient_and_gradcheck() -> None:
    embed, features = _inputs(channels_last=True)
    with use_impl("fast"):
        assert torch.autograd.gradcheck(mask_product, (embed, features))


def test_autocast_runs_in_the_autocast_dtype() -> None:
    embed, features = (t.detach().float().requires_grad_() for t in _inputs(channels_last=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        masks = mask_product(embed, features)
        ref = torch.einsum("bqc,bchw->bqhw", embed, features)
    assert masks.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(masks.float(), ref.float())
    masks[:, :2].float().sum().backward()
    assert embed.grad.dtype == features.grad.dtype == torch.float32
    assert embed.grad[:, 2:].abs().max() == 0 and embed.grad[:, :2].abs().min() > 0
