"""Mask logits: query embeddings dotted with per-pixel embeddings, with a training backward that multiplies only
the queries whose masks receive a gradient.

The official heads compute ``einsum("bqc,bchw->bqhw", mask_embed, mask_features)`` (detectron2 MaskFormer /
Mask2Former ``transformer_decoder/*.py``; mmseg ``maskformer_head.py`` with a leading layer dim). In training only
the matched queries' masks enter the losses (the set criteria gather ``src_masks[src_idx]``, Mask2Former then
samples points on them), so most rows of the masks' gradient are exactly zero; autograd's backward of the
einsum multiplies them all. The ``fast`` backward finds the queries with a nonzero gradient in any image and
multiplies those alone (about 10 of 100 queries per layer); zero rows add nothing, so the gradients are the
einsum's to float rounding. ``reference`` runs the official einsum.
"""

import torch

from semask.layers.impl import get_impl


def _product(embed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(B, Q, D) x (B, D, h, w) -> (B, Q, h, w); pixel-major (channels-last strides) when ``features`` is."""
    if features.is_contiguous(memory_format=torch.channels_last):
        # the official einsum as (B, h*w, D) @ (B, D, Q) on the NHWC pixels as they lie: the einsum would first copy
        # them to NCHW (in bf16 on CPU that copy costs 15x the product)
        pixels = features.flatten(2).transpose(1, 2)  # (B, h*w, D), a view
        return (pixels @ embed.transpose(1, 2)).transpose(1, 2).unflatten(2, features.shape[2:])
    return torch.einsum("bqc,bchw->bqhw", embed, features)


class _MaskProduct(torch.autograd.Function):
    """:func:`_product` whose backward skips the queries with an all-zero gradient in every image."""

    @staticmethod
    def forward(ctx, embed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(embed, features)
        return _product(embed, features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        embed, features = ctx.saved_tensors
        keep = grad.flatten(2).any(2).any(0).nonzero().squeeze(1)  # queries with a gradient, (k,)
        g = grad.index_select(1, keep).flatten(2)  # (B, k, h*w)
        d_embed = d_features = None
        if ctx.needs_input_grad[0]:
            d_kept = g @ features.flatten(2).transpose(1, 2)  # (B, k, D)
            d_embed = embed.new_zeros(embed.shape).index_copy_(1, keep, d_kept)
        if ctx.needs_input_grad[1]:
            kept = embed.index_select(1, keep)  # (B, k, D)
            if features.is_contiguous(memory_format=torch.channels_last):  # the gradient in the same layout
                d_features = (g.transpose(1, 2) @ kept).transpose(1, 2).unflatten(2, features.shape[2:])
            else:
                d_features = (kept.transpose(1, 2) @ g).unflatten(2, features.shape[2:])
        return d_embed, d_features


def mask_product(embed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mask logits ``einsum("bqc,bchw->bqhw", embed, features)``.

    Args:
        embed: (B, Q, D) query mask embeddings.
        features: (B, D, h, w) per-pixel embeddings (NCHW or channels-last).

    Returns:
        (B, Q, h, w) mask logits, with channels-last strides (pixel-major) when ``features`` has them. Under
        autocast the product runs in the autocast dtype, as the einsum does.
    """
    needs_grad = torch.is_grad_enabled() and (embed.requires_grad or features.requires_grad)
    if get_impl() == "reference" or not needs_grad:
        return _product(embed, features)
    device = embed.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        embed, features = embed.to(dtype), features.to(dtype)
    with torch.autocast(device, enabled=False):
        return _MaskProduct.apply(embed, features)
