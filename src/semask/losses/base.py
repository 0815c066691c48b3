"""The loss settings of the training recipe, passed to every model's ``losses`` (one owner: the experiment's
``train`` section; the loss and matching-cost weights of the mask-classification heads are model fields)."""

from dataclasses import dataclass

import torch

from semask.errors import ConfigError


@dataclass(frozen=True)
class LossSettings:
    """Attributes:
    cate_weight: alpha of the prior loss L2 (paper Sec. 3.3: L = L1 + 0.4 L2); every model with semantic layers.
    ohem_min_kept: mmseg ``OHEMPixelSampler(min_kept)`` on the main CE term (FPN/SegFormer losses only).
    class_weight: (K,) per-class CE weights (FPN/SegFormer losses only).
    """

    cate_weight: float = 0.4
    ohem_min_kept: int | None = None
    class_weight: torch.Tensor | None = None


def refuse_pixel_options(settings: LossSettings) -> None:
    """Raise ConfigError when ``settings`` asks a per-pixel-CE option of the mask-classification criterion."""
    if settings.ohem_min_kept is not None or settings.class_weight is not None:
        raise ConfigError(
            "the mask-classification criterion has no per-pixel CE: train.ohem_min_kept and train.class_weight "
            "are for the FPN and SegFormer losses"
        )
