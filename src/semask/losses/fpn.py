"""Training losses of SeMask-FPN: L = L1 + 0.4 * L2 (paper Sec. 3.3; SPEC A1 'Losses').

Official source: ``SeMask-FPN/mmseg/models/decode_heads/branch_fpn_head.py`` (``losses``) with mmseg 0.11's
``CrossEntropyLoss`` and ``OHEMPixelSampler``.
"""

import torch
from torch import nn

from semask.data.meta import IGNORE_INDEX
from semask.decoders.base import SegOutput
from semask.errors import ConfigError
from semask.losses.base import LossSettings
from semask.losses.pixel_ce import upsampled_pixel_ce


def ohem_weight(
    pixel_loss: torch.Tensor, label: torch.Tensor, min_kept: int, ignore_index: int
) -> torch.Tensor:
    """mmseg ``OHEMPixelSampler`` with thresh=None: keep the ``min_kept * B`` valid pixels of highest loss.

    Args:
        pixel_loss: (B, H, W) per-pixel CE; label: (B, H, W).

    Returns:
        (B, H, W) float weights in {0, 1}.
    """
    valid = label != ignore_index
    weight = torch.zeros_like(pixel_loss)
    kept = torch.zeros(int(valid.sum()), dtype=pixel_loss.dtype, device=pixel_loss.device)
    order = pixel_loss.detach()[valid].argsort(descending=True)
    kept[order[: min_kept * label.shape[0]]] = 1.0
    weight[valid] = kept
    return weight


def semask_fpn_loss(
    seg_logits: torch.Tensor,
    prior_logits: torch.Tensor | None,
    label: torch.Tensor,
    cate_weight: float = 0.4,
    ohem_min_kept: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    class_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The SeMask-FPN loss dictionary, computed as mmseg does.

    Both logits are bilinearly upsampled (align_corners=False) to the label size; per-pixel CE with
    ``ignore_index`` is averaged over ALL pixels (ignored pixels count as 0, SPEC 0 decision). OHEM, when
    ``ohem_min_kept`` is set, applies to the main term only.

    Args:
        seg_logits: (B, K, h, w) main decoder logits.
        prior_logits: (B, K', h, w) prior-decoder logits, or ``None`` (plain Swin baseline: no ``loss_cate``).
        label: (B, H, W) int64 class indices, ``ignore_index`` for void.
        cate_weight: alpha of L2 (paper: 0.4).
        class_weight: optional (K,) per-class weights for both terms (not used by the paper's recipes; see
            :func:`semask.data.class_weights`). The mean stays over all pixels, as in mmseg.

    Returns:
        ``loss_ce``, ``loss_cate`` (already times ``cate_weight``; absent without priors), ``acc_seg`` (percent of
        all pixels predicted right; ignored pixels count as wrong, as mmseg 0.11's ``accuracy``).
    """
    # (B, H, W) per-pixel CE and the (B, K, H, W) upsampled logits
    seg_ce, seg_up = upsampled_pixel_ce(seg_logits, label, ignore_index, class_weight)
    if ohem_min_kept is not None:
        seg_ce = seg_ce * ohem_weight(seg_ce, label, ohem_min_kept, ignore_index)
    out = {"loss_ce": seg_ce.mean()}
    if prior_logits is not None:
        prior_ce = upsampled_pixel_ce(prior_logits, label, ignore_index, class_weight)[0]
        out["loss_cate"] = cate_weight * prior_ce.mean()
    with torch.no_grad():  # max().indices: argmax's first-maximum rule, faster on CPU
        out["acc_seg"] = (seg_up.max(1).indices == label).float().mean() * 100
    return out


class SemanticCELoss(nn.Module):
    """:func:`semask_fpn_loss` on a :class:`~semask.models.base.SegOutput` (no parameters): the criterion of the
    Semantic-FPN and SegFormer heads; SegFormer's official ``loss_seg`` is its ``loss_ce``."""

    def check(self, settings: LossSettings, num_classes: int) -> None:
        """Raise ConfigError for a ``class_weight`` with a length other than ``num_classes``."""
        weight = settings.class_weight
        if weight is not None and len(weight) != num_classes:
            raise ConfigError(
                f"train.class_weight has {len(weight)} values but model.num_classes is {num_classes}"
            )

    def losses(
        self, outputs: SegOutput, labels: torch.Tensor, settings: LossSettings
    ) -> dict[str, torch.Tensor]:
        """outputs at stride 4, labels (B, H, W) int64 (255 = void) -> ``loss_ce``, ``loss_cate``, ``acc_seg``."""
        self.check(settings, outputs.logits.shape[1])
        weight, prior = settings.class_weight, outputs.prior_logits
        return semask_fpn_loss(
            outputs.logits.float(),
            None if prior is None else prior.float(),
            labels,
            cate_weight=settings.cate_weight,
            ohem_min_kept=settings.ohem_min_kept,
            class_weight=None if weight is None else weight.to(outputs.logits.device, torch.float32),
        )
