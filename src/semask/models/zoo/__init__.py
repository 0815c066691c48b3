"""The paper's models and the baselines as explicit registry entrypoints (timm style), one module per backbone
family: :mod:`~semask.models.zoo.swin` ((SeMask-)Swin + Semantic-FPN / mask classification),
:mod:`~semask.models.zoo.mit` ((SeMask-)MiT + SegFormer head). Test and demo sizes are in
:mod:`semask.models.small`. Importing this package registers every entrypoint.
"""

from semask.models.zoo import maskformer_mmseg, mit  # noqa: F401  (registers their entrypoints)
from semask.models.zoo.swin import (
    SWIN,
    SeMaskFPNConfig,
    make_swin_fpn,
    make_swin_mask,
    official_semantic_layout,
    project_semantic_layout,
)

__all__ = [
    "SWIN",
    "SeMaskFPNConfig",
    "make_swin_fpn",
    "make_swin_mask",
    "official_semantic_layout",
    "project_semantic_layout",
]
