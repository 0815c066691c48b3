"""Hungarian matching of queries to ground-truth masks (SPEC A7 'Mask2Former criterion', 'MaskFormer criterion').

Official sources: Mask2Former ``modeling/matcher.py`` (point-sampled BCE + dice costs) and MaskFormer v1
``modeling/matcher.py`` (dense focal + dice costs on stride-4 masks). ``scipy`` is imported when matching runs.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semask.layers.impl import get_impl
from semask.losses.mask_losses import FOCAL_ALPHA, FOCAL_GAMMA
from semask.losses.points import PointSampler, point_sample


@dataclass
class Target:
    """Ground truth of one image (D2 ``MaskFormerSemanticDatasetMapper``).

    Attributes:
        labels: (n,) int64 classes present, ascending.
        masks: (n, Hp, Wp) float {0, 1}, one binary mask per class, zero in the padding.
    """

    labels: torch.Tensor
    masks: torch.Tensor


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean BCE-with-logits: (N, P) logits, (M, P) targets -> (N, M)."""
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    cost = torch.einsum("nc,mc->nm", pos, targets) + torch.einsum("nc,mc->nm", neg, 1 - targets)
    return cost / inputs.shape[1]


def batch_sigmoid_focal_cost(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """Pairwise mean sigmoid focal loss (MaskFormer v1): (N, P) logits, (M, P) targets -> (N, M)."""
    prob = inputs.sigmoid()
    pos = (1 - prob) ** gamma * F.binary_cross_entropy_with_logits(
        inputs, torch.ones_like(inputs), reduction="none"
    )
    neg = prob**gamma * F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    cost = torch.einsum("nc,mc->nm", pos * alpha, targets) + torch.einsum(
        "nc,mc->nm", neg * (1 - alpha), 1 - targets
    )
    return cost / inputs.shape[1]


def batch_mask_dice_cost(
    inputs: torch.Tensor, targets: torch.Tensor, focal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch_sigmoid_focal_cost or batch_sigmoid_ce_cost, batch_dice_cost)``: (N, P), (M, P) -> 2 x (N, M).

    ``fast`` shares one sigmoid between the two costs and takes one product for the mask cost: with
    BCE(x, 0) = softplus(x) and BCE(x, 1) = softplus(x) - x, w_pos pos @ t^T + w_neg neg @ (1 - t)^T =
    (w_pos pos - w_neg neg) @ t^T + w_neg sum_c neg (for BCE, pos - neg = -x). Pixel-major inputs (stride 1
    along N, as MaskFormer's masks come out of the mask-feature product) are first made dense in that layout:
    elementwise kernels run several times slower on a transposed view with gaps.
    """
    if get_impl() == "reference":
        mask_cost = batch_sigmoid_focal_cost if focal else batch_sigmoid_ce_cost
        return mask_cost(inputs, targets), batch_dice_cost(inputs, targets)
    x = inputs if inputs.stride(-1) == 1 else inputs.t().contiguous().t()
    prob = x.sigmoid()
    neg = F.softplus(x)
    if focal:
        pos = (neg - x).mul_(torch.rsub(prob, 1).pow_(FOCAL_GAMMA))
        neg.mul_(prob.pow(FOCAL_GAMMA))
        w_pos, w_neg = FOCAL_ALPHA, 1 - FOCAL_ALPHA
        diff = pos.sub_(neg, alpha=w_neg / w_pos)
    else:
        w_pos, w_neg, diff = 1.0, 1.0, x.neg()
    n = x.shape[1]
    mask = torch.addmm(neg.sum(1, keepdim=True), diff, targets.t(), beta=w_neg / n, alpha=w_pos / n)
    denominator = prob.sum(1, keepdim=True) + targets.sum(1) + 1
    return mask, 1 - (2 * (prob @ targets.t()) + 1) / denominator


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise dice loss with +1 smoothing: (N, P) logits, (M, P) targets -> (N, M)."""
    inputs = inputs.sigmoid()
    numerator = 2 * torch.einsum("nc,mc->nm", inputs, targets)
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """Minimum-cost one-to-one assignment of queries to targets, per image.

    cost = class_weight * (-p(target class)) + mask_weight * mask cost + dice_weight * dice cost, where the mask
    costs are on ``num_points`` shared uniform points (Mask2Former, BCE) or, with ``num_points=None``, on all
    stride-4 pixels with nearest-downsampled targets (MaskFormer v1, focal).

    Args:
        class_weight, mask_weight, dice_weight: cost weights.
        num_points: points per image, or None for dense MaskFormer costs.
    """

    def __init__(
        self, class_weight: float, mask_weight: float, dice_weight: float, num_points: int | None
    ) -> None:
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points = num_points

    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        target: Target,
        layer: int,
        image: int,
        sampler: PointSampler,
    ) -> torch.Tensor:
        """Weighted matching cost of one image.

        Args:
            pred_logits: (Q, K+1); pred_masks: (Q, h, w); target: the image's ground truth.
            layer, image: prediction set (0 = final, j+1 = aux output j) and batch index, for the sampler.
            sampler: point source (Mask2Former only).

        Returns:
            (Q, n) float cost, mask + class + dice terms (the official summation order).
        """
        pred_logits, pred_masks = pred_logits.float(), pred_masks.float()  # AMP outputs: costs in fp32
        tgt_mask = target.masks.to(pred_masks)
        if self.num_points is None:
            tgt = F.interpolate(tgt_mask[:, None], size=pred_masks.shape[-2:], mode="nearest")[:, 0].flatten(
                1
            )
            out = pred_masks.flatten(1)  # (Q, h*w)
            cost_mask, cost_dice = batch_mask_dice_cost(out, tgt, focal=True)
        else:
            coords = sampler.matcher_coords(layer, image, self.num_points, pred_masks.device)  # (P, 2)
            tgt = point_sample(tgt_mask[:, None], coords.expand(tgt_mask.shape[0], -1, -1))[:, 0]  # (n, P)
            out = point_sample(pred_masks[:, None], coords.expand(pred_masks.shape[0], -1, -1))[
                :, 0
            ]  # (Q, P)
            cost_mask, cost_dice = batch_mask_dice_cost(out, tgt, focal=False)
        cost_class = -pred_logits.softmax(-1)[:, target.labels]  # (Q, n)
        return self.mask_weight * cost_mask + self.class_weight * cost_class + self.dice_weight * cost_dice

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        targets: list[Target],
        layer: int,
        sampler: PointSampler,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match one prediction set.

        Args:
            pred_logits: (B, Q, K+1); pred_masks: (B, Q, h, w).
            targets: B targets.
            layer: 0 = final, j+1 = aux output j (for the sampler).
            sampler: point source (official random draws or replayed coordinates).

        Returns:
            Per image ``(query indices, target indices)``, int64 (k,) each, sorted by query.
        """
        from scipy.optimize import linear_sum_assignment

        indices = []
        for b, tgt in enumerate(targets):
            cost = self.cost_matrix(pred_logits[b], pred_masks[b], tgt, layer, b, sampler)
            rows, cols = linear_sum_assignment(cost.cpu())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
