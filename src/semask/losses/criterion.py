"""Set criterion of SeMask Mask2Former / MaskFormer: matching, class CE, mask BCE|focal + dice, prior CE
(SPEC A1 'Losses', A7 'Mask2Former criterion', 'MaskFormer criterion', 'loss_cate', 'Loss internals').

Official sources: Mask2Former ``modeling/criterion.py``, MaskFormer v1 ``modeling/criterion.py`` and SeMask's
``SeMaskSetCriterion`` (adds ``loss_cate`` on the final output; its aux entries are constant 0).
"""

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.maskformer.common import MaskPrediction, MaskSegOutput, PredictorOutput
from semask.layers.resize import resize_masks
from semask.losses.base import LossSettings, refuse_pixel_options
from semask.losses.mask_losses import mask_losses
from semask.losses.matcher import HungarianMatcher, Target
from semask.losses.points import PointSampler, point_sample

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def build_targets(labels: torch.Tensor, ignore_index: int = 255) -> list[Target]:
    """One binary mask per class present, as D2 ``MaskFormerSemanticDatasetMapper`` (``ignore_index`` dropped).

    Args:
        labels: (B, Hp, Wp) int class map at the padded size (padding = ``ignore_index``).

    Returns:
        B :class:`Target` s (classes ascending).
    """
    targets = []
    for seg in labels:
        classes = torch.unique(seg)
        classes = classes[classes != ignore_index]
        targets.append(Target(classes.long(), (seg[None] == classes[:, None, None]).float()))
    return targets


def _num_masks(targets: list[Target], device: torch.device) -> float:
    """Targets in the batch, averaged over DDP processes, at least 1."""
    n = torch.as_tensor([float(sum(len(t.labels) for t in targets))], device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(n)
        n = n / torch.distributed.get_world_size()
    return torch.clamp(n, min=1).item()


class SetCriterion(nn.Module):
    """Deep-supervised set loss plus the SeMask prior loss.

    Args:
        num_classes: K.
        class_weight, mask_weight, dice_weight: loss and matching-cost weights (MaskFormer v1 uses 1 for the
            class cost and ``loss_ce`` whatever CLASS_WEIGHT says: pass 1).
        no_object_weight: CE weight of the "no object" class (buffer ``empty_weight``, as the official key).
        num_points: Mask2Former: points for matching and mask losses (12544); None: MaskFormer v1 dense focal.
        oversample_ratio, importance_sample_ratio: Mask2Former importance sampling (3.0, 0.75).
        ignore_index: void label.
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float,
        mask_weight: float,
        dice_weight: float,
        no_object_weight: float = 0.1,
        num_points: int | None = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        self.num_points = num_points
        self.oversample, self.importance = oversample_ratio, importance_sample_ratio
        self.weights = {
            "loss_ce": class_weight,
            "loss_mask": mask_weight,
            "loss_dice": dice_weight,
        }
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight)

    def _loss_ce(self, pred: MaskPrediction, targets: list[Target], indices: Indices) -> torch.Tensor:
        """CE over all B*Q queries: matched ones to their class, the rest to "no object" (sum w*l / sum w)."""
        logits = pred.pred_logits.float()
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, ((src, tgt), t) in enumerate(zip(indices, targets, strict=True)):
            classes[b, src.to(logits.device)] = t.labels[tgt.to(t.labels.device)].to(logits.device)
        return F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight)

    def _mask_losses(
        self,
        pred: MaskPrediction,
        targets: list[Target],
        indices: Indices,
        num_masks: float,
        layer: int,
        sampler: PointSampler,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss_mask, loss_dice) of the matched masks, pairs in batch-major order."""
        masks = pred.pred_masks
        batch = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(indices)]).to(masks.device)
        queries = torch.cat([i for i, _ in indices]).to(masks.device)
        # the official src_masks[src_idx]; AMP outputs cast after the gather: losses in fp32
        src = masks[batch, queries].float()  # (N, h, w)
        tgt = torch.cat([t.masks[j.to(t.masks.device)] for t, (_, j) in zip(targets, indices, strict=True)])
        tgt = tgt.to(src)  # (N, Hp, Wp)
        if self.num_points is None:  # MaskFormer v1: dense, predictions upsampled to the target size
            src, tgt = resize_masks(src, tgt.shape[-2:]).flatten(1), tgt.flatten(1)  # (N, Hp*Wp)
            return mask_losses(src, tgt, num_masks, focal=True)
        with torch.no_grad():
            coords = sampler.loss_coords(
                layer, src[:, None], self.num_points, self.oversample, self.importance
            )
        labels = point_sample(tgt[:, None], coords)[:, 0]  # (N, P)
        logits = point_sample(src[:, None], coords)[:, 0]
        return mask_losses(logits, labels, num_masks, focal=False)

    def forward(
        self,
        pred: PredictorOutput,
        prior_logits: torch.Tensor | None,
        labels: torch.Tensor,
        sampler: PointSampler | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[Indices]]:
        """Unweighted losses in the official key order, and the matching of every prediction set.

        Args:
            pred: predictor output (final + aux).
            prior_logits: (B, K, Hp, Wp) prior-decoder logits, or None (no semantic layers: no ``loss_cate``).
            labels: (B, Hp, Wp) int class map at the padded size, ``ignore_index`` for void and padding.
            sampler: point source; default :class:`PointSampler` (official random draws).

        Returns:
            ``(losses, indices)``: ``loss_ce``, ``loss_cate``, ``loss_mask``, ``loss_dice`` and the same with
            suffix ``_j`` for aux output j (``loss_cate_j`` = 0); indices per layer (0 = final, then aux).
        """
        sampler = sampler or PointSampler()
        targets = build_targets(labels, self.ignore_index)
        num_masks = _num_masks(targets, labels.device)
        losses, all_indices = {}, []
        for layer, p in enumerate([pred, *pred.aux_outputs]):
            suffix = "" if layer == 0 else f"_{layer - 1}"
            indices = self.matcher(p.pred_logits, p.pred_masks, targets, layer, sampler)
            all_indices.append(indices)
            losses[f"loss_ce{suffix}"] = self._loss_ce(p, targets, indices)
            if prior_logits is not None:  # once, on the final output; aux entries are constant 0
                losses[f"loss_cate{suffix}"] = (
                    F.cross_entropy(prior_logits.float(), labels.long(), ignore_index=self.ignore_index)
                    if layer == 0
                    else torch.zeros((), device=labels.device)
                )
            mask, dice = self._mask_losses(p, targets, indices, num_masks, layer, sampler)
            losses[f"loss_mask{suffix}"], losses[f"loss_dice{suffix}"] = mask, dice
        return losses, all_indices

    def weigh(self, losses: dict[str, torch.Tensor], cate_weight: float = 0.4) -> dict[str, torch.Tensor]:
        """Multiply every loss by its weight (suffix ``_j`` shares the base weight; ``loss_cate`` by
        ``cate_weight``), as the official model returns."""
        weights = self.weights | {"loss_cate": cate_weight}
        return {k: v * weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] for k, v in losses.items()}

    def check(self, settings: LossSettings, num_classes: int) -> None:
        """Raise ConfigError for settings this criterion does not take (OHEM, per-class CE weights)."""
        refuse_pixel_options(settings)

    def losses(
        self,
        outputs: MaskSegOutput,
        labels: torch.Tensor,
        settings: LossSettings,
        sampler: PointSampler | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted losses under the official keys (``loss_ce``, ``loss_cate``, ``loss_mask``, ``loss_dice`` and
        ``_j`` for aux output j); their sum is the training loss.

        Args:
            outputs: the segmenter's output on the padded input.
            labels: (B, H, W) int class map of the unpadded input (255 = void); padded with 255 here.
            settings: ``cate_weight`` is used; the per-pixel CE options are refused.
            sampler: point source of the Mask2Former losses (default: official random draws).

        Raises:
            ConfigError: ``settings.ohem_min_kept`` or ``settings.class_weight`` given.
            ValueError: labels larger than the padded input.
        """
        self.check(settings, self.num_classes)
        hp, wp = 4 * outputs.pred_masks.shape[-2], 4 * outputs.pred_masks.shape[-1]
        if labels.shape[-2] > hp or labels.shape[-1] > wp:
            raise ValueError(f"labels {tuple(labels.shape[-2:])} are larger than the padded input {(hp, wp)}")
        labels = F.pad(labels, (0, wp - labels.shape[-1], 0, hp - labels.shape[-2]), value=self.ignore_index)
        return self.weigh(self(outputs, outputs.prior_logits, labels, sampler)[0], settings.cate_weight)
