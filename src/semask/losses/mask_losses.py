"""The mask terms of the set criterion, per matched mask: sigmoid BCE (Mask2Former) or sigmoid focal (MaskFormer
v1) plus dice (SPEC A7 'Loss internals'; official ``modeling/criterion.py`` of Mask2Former and MaskFormer).

``reference`` runs the official sequence of ops; ``fast`` computes the same two values and their gradient in one
autograd node (:class:`_FusedMaskLoss`): a handful of in-place passes instead of the ~60 full-size passes and
temporaries that autograd records for the official ops, which on CPU cost more than the matrix products of the
mask head (MaskFormer's dense loss runs on 6 x N masks at the full label resolution).
"""

import torch
import torch.nn.functional as F

from semask.layers.impl import get_impl

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Mean BCE-with-logits per mask, summed, / num_masks: (N, P), (N, P) -> ()."""
    return F.binary_cross_entropy_with_logits(inputs, targets, reduction="none").mean(1).sum() / num_masks


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Mean sigmoid focal loss per mask, summed, / num_masks (MaskFormer v1): (N, P), (N, P) -> ()."""
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (ce * (1 - p_t) ** gamma)).mean(1).sum() / num_masks


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """1 - (2|X.Y| + 1) / (|X| + |Y| + 1) per mask, summed, / num_masks: (N, P) logits, (N, P) -> ()."""
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class _FusedMaskLoss(torch.autograd.Function):
    """(N, P) logits x, (N, P) targets t -> (BCE or focal term, dice term), each summed over masks / num_masks.

    With p = sigmoid(x), ce = softplus(x) - x t (= BCE with logits), s = 1 - 2t, q = 1 - p_t = t + p s and
    alpha_t = alpha t + (1 - alpha)(1 - t):
    d focal / dx = alpha_t [(p - t) q^g + g ce q^(g-1) s p (1 - p)], d BCE / dx = p - t, and
    d dice_i / dx_j = [(num_i + 1) - 2 t_j (den_i + 1)] / (den_i + 1)^2 p_j (1 - p_j).
    """

    @staticmethod
    def forward(ctx, inputs, targets, num_masks, focal):  # type: ignore[override]
        prob = inputs.sigmoid()
        ce = F.softplus(inputs).addcmul_(inputs, targets, value=-1)
        numerator = 2 * (prob * targets).sum(-1)
        denominator = prob.sum(-1) + targets.sum(-1)
        saved = [prob, targets, numerator, denominator]
        if focal:
            sign = torch.rsub(targets, 1, alpha=2)
            one_minus_pt = torch.addcmul(targets, prob, sign)
            alpha_t = targets.mul(2 * FOCAL_ALPHA - 1).add_(1 - FOCAL_ALPHA)
            term = one_minus_pt.pow(FOCAL_GAMMA).mul_(ce).mul_(alpha_t).sum()
            saved += [ce, sign, one_minus_pt, alpha_t]
        else:
            term = ce.sum()
        ctx.save_for_backward(*saved)
        ctx.num_masks, ctx.focal = num_masks, focal
        dice = (1 - (numerator + 1) / (denominator + 1)).sum()
        return term / (inputs.shape[1] * num_masks), dice / num_masks

    @staticmethod
    def backward(ctx, grad_term, grad_dice):  # type: ignore[override]
        prob, targets, numerator, denominator = ctx.saved_tensors[:4]
        slope = torch.addcmul(prob, prob, prob, value=-1)  # p (1 - p)
        grad = prob - targets
        if ctx.focal:
            ce, sign, one_minus_pt, alpha_t = ctx.saved_tensors[4:]
            inner = one_minus_pt.pow(FOCAL_GAMMA - 1).mul_(ce).mul_(sign).mul_(slope)
            grad.mul_(one_minus_pt.pow(FOCAL_GAMMA)).add_(inner, alpha=FOCAL_GAMMA).mul_(alpha_t)
        grad.mul_(grad_term / (prob.shape[1] * ctx.num_masks))
        scale = grad_dice / ctx.num_masks / (denominator + 1).square()[:, None]  # (N, 1)
        dice = torch.addcmul(
            (numerator + 1)[:, None] * scale, targets, -2 * (denominator + 1)[:, None] * scale
        )
        return grad.add_(dice.mul_(slope)), None, None, None


def mask_losses(
    inputs: torch.Tensor, targets: torch.Tensor, num_masks: float, focal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigmoid_focal_loss or sigmoid_ce_loss, dice_loss)`` of matched masks, fused in ``fast``.

    Args:
        inputs: (N, P) float mask logits (P pixels or sampled points).
        targets: (N, P) float targets in [0, 1].
        num_masks: normaliser (targets in the batch, averaged over processes).
        focal: MaskFormer v1's focal term (alpha 0.25, gamma 2) instead of Mask2Former's BCE.

    Returns:
        Two scalar tensors.
    """
    if get_impl() == "reference":
        first = sigmoid_focal_loss if focal else sigmoid_ce_loss
        return first(inputs, targets, num_masks), dice_loss(inputs, targets, num_masks)
    return _FusedMaskLoss.apply(inputs, targets, num_masks, focal)
