"""Criterion of the MMSegmentation 1.x MaskFormer (mmdet 3.x ``MaskFormerHead.loss_by_feat``): per-layer Hungarian
matching with mmdet's costs, CE (no-object weight 0.1), sigmoid focal (x20) and dice (x1) on every decoder layer.

Official sources: mmdet 3.3.0 ``mmdet/models/task_modules/assigners/{hungarian_assigner,match_cost}.py``
(``HungarianAssigner``: ``ClassificationCost``, ``FocalLossCost(binary_input=True)``, ``DiceCost(pred_act=True,
eps=1, naive)``, scipy ``linear_sum_assignment``), ``mmdet/models/dense_heads/maskformer_head.py`` and
``mmdet/models/losses/{cross_entropy,focal,dice}_loss.py``.

What differs from the detectron2 MaskFormer criterion (:class:`~semask.losses.criterion.SetCriterion`, reused
for everything else): the focal matching cost is mmdet's ``-log(sigmoid(x) + 1e-12)`` form instead of
BCE-with-logits. Everything else is the same computation: targets are one mask per class present with 255 /
padding pixels negative in every mask, matching on GT masks nearest-downsampled to the mask-prediction size, losses
on predictions bilinearly upsampled to the (padded) label size, CE normalised by the summed class weights, focal
by num_masks * H * W, dice by num_masks (mmdet adds float32 eps to these divisors: a relative 1e-7 difference).
Labels are padded bottom/right to 4x the mask size (as mmseg's preprocessor pads to the crop: an identity for
inputs whose sides are multiples of 4, e.g. every 512 crop of the recipes).
"""

import torch
import torch.nn.functional as F

from semask.losses.criterion import SetCriterion
from semask.losses.mask_losses import FOCAL_ALPHA, FOCAL_GAMMA
from semask.losses.matcher import HungarianMatcher, Target, batch_dice_cost
from semask.losses.points import PointSampler


def mmdet_focal_cost(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
    eps: float = 1e-12,
) -> torch.Tensor:
    """mmdet ``FocalLossCost._mask_focal_loss_cost``: (N, P) logits, (M, P) binary targets -> (N, M) unweighted
    mean over the P pixels of -alpha (1-p)^g log(p+eps) on positives and -(1-alpha) p^g log(1-p+eps) on
    negatives."""
    prob = inputs.sigmoid()
    neg = -(1 - prob + eps).log() * (1 - alpha) * prob.pow(gamma)
    pos = -(prob + eps).log() * alpha * (1 - prob).pow(gamma)
    cost = torch.einsum("nc,mc->nm", pos, targets) + torch.einsum("nc,mc->nm", neg, 1 - targets)
    return cost / inputs.shape[1]


class MMDetHungarianMatcher(HungarianMatcher):
    """mmdet ``HungarianAssigner`` with the MaskFormer costs: class_weight * (-softmax prob of the GT class) +
    mask_weight * :func:`mmdet_focal_cost` + dice_weight * dice cost, on all stride-4 pixels with GT masks
    nearest-downsampled to the prediction size; the assignment is scipy's (the inherited ``__call__``)."""

    def __init__(self, class_weight: float, mask_weight: float, dice_weight: float) -> None:
        super().__init__(class_weight, mask_weight, dice_weight, num_points=None)

    def cost_terms(
        self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, target: Target
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three weighted costs of one image, each (Q, n): classification, focal, dice.

        Args:
            pred_logits: (Q, K+1); pred_masks: (Q, h, w) logits; target: the image's ground truth.
        """
        pred_logits, pred_masks = pred_logits.float(), pred_masks.float()
        tgt = F.interpolate(target.masks.to(pred_masks)[:, None], size=pred_masks.shape[-2:], mode="nearest")
        tgt, out = tgt[:, 0].flatten(1), pred_masks.flatten(1)  # (n, h*w), (Q, h*w)
        return (
            -pred_logits.softmax(-1)[:, target.labels] * self.class_weight,
            mmdet_focal_cost(out, tgt) * self.mask_weight,
            batch_dice_cost(out, tgt) * self.dice_weight,
        )

    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        target: Target,
        layer: int,
        image: int,
        sampler: PointSampler,
    ) -> torch.Tensor:
        """(Q, n) summed cost, in mmdet's order (classification, focal, dice); ``layer``, ``image`` and
        ``sampler`` are unused (dense costs)."""
        return torch.stack(self.cost_terms(pred_logits, pred_masks, target)).sum(0)


class MMDetSetCriterion(SetCriterion):
    """:class:`~semask.losses.criterion.SetCriterion` in its dense MaskFormer form with mmdet's matcher.

    Loss keys: ``loss_ce``, ``loss_mask``, ``loss_dice`` of the last decoder layer (mmseg ``decode.loss_cls``,
    ``loss_mask``, ``loss_dice``) and ``_j`` for layer j (mmseg ``decode.d{j}.loss_*``), plus ``loss_cate`` for a
    backbone with semantic layers.

    The ``empty_weight`` buffer is not persistent (mmseg checkpoints have no ``criterion.*`` key).

    Args:
        num_classes: K; class_weight, mask_weight, dice_weight: loss weights and matching-cost weights (mmseg:
            1, 20, 1); no_object_weight: CE weight of class K (0.1).
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__(
            num_classes, class_weight, mask_weight, dice_weight, no_object_weight, num_points=None
        )
        self.matcher = MMDetHungarianMatcher(class_weight, mask_weight, dice_weight)
        # mmdet keeps the CE class weights in the loss config, not in the state dict
        self.register_buffer("empty_weight", self.empty_weight, persistent=False)
