"""The (SeMask-)Swin models as explicit registry entrypoints (timm style): ``def semask_swin_tiny_fpn(**fields)``.

Every entrypoint fixes a backbone, a decoder and their defaults; ``fields`` override any config field
(``semask.create_model(name, num_classes=19, drop_path_rate=0.1)``). Unless ``semantic_attention`` is given, the
per-stage layout follows the official rule of the project (:func:`official_semantic_layout` for SeMask-FPN,
:func:`project_semantic_layout` for the detectron2 projects, :func:`~semask.backbones.mit.semantic_layout` for
SeMask-MiT). The generic names (``semask_swin_fpn`` ...) take any width; converters name weights with them. Test
and demo sizes are in :mod:`semask.models.small`.
"""

from typing import Any

from semask.backbones import swin  # noqa: F401  (registers the swin backbone)
from semask.decoders import semantic_fpn  # noqa: F401  (registers its decoder)
from semask.decoders.maskformer.head import MASKFORMER_HEAD
from semask.models.base import model_config_class
from semask.models.segmenter import Segmenter, compose
from semask.registry import register_model

SWIN: dict[str, dict[str, Any]] = {
    "tiny": dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, sem_window_size=7
    ),
    "small": dict(
        embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, sem_window_size=7
    ),
    "base": dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, sem_window_size=12
    ),
    "large": dict(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12, sem_window_size=12
    ),
}
"""Swin-T/S/B/L (SPEC A1; window 12 for the ImageNet-22k B and L)."""

SeMaskFPNConfig = model_config_class("swin", "semantic_fpn")
"""Config of the (SeMask-)Swin Semantic-FPN models (``semask_swin_*_fpn``, ``swin_*_fpn``)."""


def official_semantic_layout(embed_dim: int, num_classes: int) -> tuple[str, ...]:
    """The official SeMask-FPN rule (SPEC A1): stages 2,3 global iff embed_dim in {96,192} and K > 19."""
    if embed_dim in (96, 192) and num_classes > 19:
        return ("window", "window", "global", "global")
    return ("window",) * 4


def project_semantic_layout(decoder: str, num_classes: int) -> tuple[str, ...]:
    """Per-project rule (SPEC A7 'Semantic layout per project'): Mask2Former: stage 3 global iff K == 150, else
    all windowed; MaskFormer: stages 0-2 windowed, stage 3 global always; SeMask-FAPN (FaPN, MSFaPN): stages 0-1
    windowed, stages 2-3 global always."""
    if decoder in ("fapn_m2f", "msfapn_m2f"):
        return ("window", "window", "global", "global")
    if decoder == "maskformer" or num_classes == 150:
        return ("window", "window", "window", "global")
    return ("window",) * 4


def make_swin_fpn(arch: str, size: dict[str, Any], semantic: bool, fields: dict[str, Any]) -> Segmenter:
    """(SeMask-)Swin + Semantic-FPN (official ``EncoderDecoder`` + ``BranchFPNHead``)."""
    embed_dim, num_classes = fields.get("embed_dim", size["embed_dim"]), fields.get("num_classes", 150)
    layout = official_semantic_layout(embed_dim, num_classes) if semantic else None
    return compose(arch, "swin", "semantic_fpn", size | {"semantic_attention": layout}, fields)


def make_swin_mask(
    arch: str, size: dict[str, Any], decoder: str, fields: dict[str, Any], semantic: bool = True
) -> Segmenter:
    """(SeMask-)Swin + a mask-classification head (the SeMask detectron2 projects: detectron2 init, SPEC A2);
    ``semantic=False``: plain Swin, the original Mask2Former / MaskFormer models."""
    head = MASKFORMER_HEAD if decoder == "maskformer" else {}
    layout = project_semantic_layout(decoder, fields.get("num_classes", 150)) if semantic else None
    defaults = size | head | {"weight_init": "d2", "semantic_attention": layout}
    return compose(arch, "swin", decoder, defaults, fields)


@register_model
def semask_swin_tiny_fpn(**fields) -> Segmenter:
    """SeMask-Swin-T Semantic-FPN (paper Table 2)."""
    return make_swin_fpn("semask_swin_tiny_fpn", SWIN["tiny"], True, fields)


@register_model
def swin_tiny_fpn(**fields) -> Segmenter:
    """Swin-T Semantic-FPN, no semantic layers (the paper's baseline, Table 2)."""
    return make_swin_fpn("swin_tiny_fpn", SWIN["tiny"], False, fields)


@register_model
def semask_swin_small_fpn(**fields) -> Segmenter:
    """SeMask-Swin-S Semantic-FPN (paper Table 2)."""
    return make_swin_fpn("semask_swin_small_fpn", SWIN["small"], True, fields)


@register_model
def swin_small_fpn(**fields) -> Segmenter:
    """Swin-S Semantic-FPN, no semantic layers (the paper's baseline, Table 2)."""
    return make_swin_fpn("swin_small_fpn", SWIN["small"], False, fields)


@register_model
def semask_swin_base_fpn(**fields) -> Segmenter:
    """SeMask-Swin-B Semantic-FPN (paper Table 2)."""
    return make_swin_fpn("semask_swin_base_fpn", SWIN["base"], True, fields)


@register_model
def swin_base_fpn(**fields) -> Segmenter:
    """Swin-B Semantic-FPN, no semantic layers (the paper's baseline, Table 2)."""
    return make_swin_fpn("swin_base_fpn", SWIN["base"], False, fields)


@register_model
def semask_swin_large_fpn(**fields) -> Segmenter:
    """SeMask-Swin-L Semantic-FPN (paper Table 2)."""
    return make_swin_fpn("semask_swin_large_fpn", SWIN["large"], True, fields)


@register_model
def swin_large_fpn(**fields) -> Segmenter:
    """Swin-L Semantic-FPN, no semantic layers (the paper's baseline, Table 2)."""
    return make_swin_fpn("swin_large_fpn", SWIN["large"], False, fields)


@register_model
def semask_swin_fpn(**fields) -> Segmenter:
    """SeMask-Swin Semantic-FPN of any width (Swin-T defaults; converted SeMask-FPN weights)."""
    return make_swin_fpn("semask_swin_fpn", SWIN["tiny"], True, fields)


@register_model
def swin_fpn(**fields) -> Segmenter:
    """Swin Semantic-FPN of any width, no semantic layers (Swin-T defaults)."""
    return make_swin_fpn("swin_fpn", SWIN["tiny"], False, fields)


@register_model
def semask_swin_tiny_m2f(**fields) -> Segmenter:
    """SeMask-Swin-T Mask2Former (paper Table 3)."""
    return make_swin_mask("semask_swin_tiny_m2f", SWIN["tiny"], "mask2former", fields)


@register_model
def semask_swin_small_m2f(**fields) -> Segmenter:
    """SeMask-Swin-S Mask2Former (paper Table 3)."""
    return make_swin_mask("semask_swin_small_m2f", SWIN["small"], "mask2former", fields)


@register_model
def semask_swin_base_m2f(**fields) -> Segmenter:
    """SeMask-Swin-B Mask2Former (paper Table 3)."""
    return make_swin_mask("semask_swin_base_m2f", SWIN["base"], "mask2former", fields)


@register_model
def semask_swin_large_m2f(**fields) -> Segmenter:
    """SeMask-Swin-L Mask2Former (paper Table 3)."""
    return make_swin_mask("semask_swin_large_m2f", SWIN["large"], "mask2former", fields)


@register_model
def semask_swin_m2f(**fields) -> Segmenter:
    """SeMask-Swin Mask2Former of any width (Swin-T defaults; converted detectron2 weights)."""
    return make_swin_mask("semask_swin_m2f", SWIN["tiny"], "mask2former", fields)


@register_model
def semask_swin_tiny_maskformer(**fields) -> Segmenter:
    """SeMask-Swin-T MaskFormer (paper Table 4)."""
    return make_swin_mask("semask_swin_tiny_maskformer", SWIN["tiny"], "maskformer", fields)


@register_model
def semask_swin_small_maskformer(**fields) -> Segmenter:
    """SeMask-Swin-S MaskFormer (paper Table 4)."""
    return make_swin_mask("semask_swin_small_maskformer", SWIN["small"], "maskformer", fields)


@register_model
def semask_swin_base_maskformer(**fields) -> Segmenter:
    """SeMask-Swin-B MaskFormer (paper Table 4)."""
    return make_swin_mask("semask_swin_base_maskformer", SWIN["base"], "maskformer", fields)


@register_model
def semask_swin_large_maskformer(**fields) -> Segmenter:
    """SeMask-Swin-L MaskFormer (paper Table 4)."""
    return make_swin_mask("semask_swin_large_maskformer", SWIN["large"], "maskformer", fields)


@register_model
def semask_swin_maskformer(**fields) -> Segmenter:
    """SeMask-Swin MaskFormer of any width (Swin-T defaults; converted detectron2 weights)."""
    return make_swin_mask("semask_swin_maskformer", SWIN["tiny"], "maskformer", fields)


@register_model
def semask_swin_tiny_fapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-T FaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_tiny_fapn_m2f", SWIN["tiny"], "fapn_m2f", fields)


@register_model
def semask_swin_small_fapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-S FaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_small_fapn_m2f", SWIN["small"], "fapn_m2f", fields)


@register_model
def semask_swin_base_fapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-B FaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_base_fapn_m2f", SWIN["base"], "fapn_m2f", fields)


@register_model
def semask_swin_large_fapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-L FaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_large_fapn_m2f", SWIN["large"], "fapn_m2f", fields)


@register_model
def semask_swin_fapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin FaPN Mask2Former of any width (Swin-T defaults; converted detectron2 weights)."""
    return make_swin_mask("semask_swin_fapn_m2f", SWIN["tiny"], "fapn_m2f", fields)


@register_model
def semask_swin_tiny_msfapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-T MSFaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_tiny_msfapn_m2f", SWIN["tiny"], "msfapn_m2f", fields)


@register_model
def semask_swin_small_msfapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-S MSFaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_small_msfapn_m2f", SWIN["small"], "msfapn_m2f", fields)


@register_model
def semask_swin_base_msfapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-B MSFaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_base_msfapn_m2f", SWIN["base"], "msfapn_m2f", fields)


@register_model
def semask_swin_large_msfapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-L MSFaPN Mask2Former (SeMask-FAPN)."""
    return make_swin_mask("semask_swin_large_msfapn_m2f", SWIN["large"], "msfapn_m2f", fields)


@register_model
def semask_swin_msfapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin MSFaPN Mask2Former of any width (Swin-T defaults; converted detectron2 weights)."""
    return make_swin_mask("semask_swin_msfapn_m2f", SWIN["tiny"], "msfapn_m2f", fields)


@register_model
def swin_tiny_m2f(**fields) -> Segmenter:
    """Swin-T Mask2Former without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_tiny_m2f", SWIN["tiny"], "mask2former", fields, semantic=False)


@register_model
def swin_tiny_maskformer(**fields) -> Segmenter:
    """Swin-T MaskFormer without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_tiny_maskformer", SWIN["tiny"], "maskformer", fields, semantic=False)


@register_model
def swin_small_m2f(**fields) -> Segmenter:
    """Swin-S Mask2Former without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_small_m2f", SWIN["small"], "mask2former", fields, semantic=False)


@register_model
def swin_small_maskformer(**fields) -> Segmenter:
    """Swin-S MaskFormer without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_small_maskformer", SWIN["small"], "maskformer", fields, semantic=False)


@register_model
def swin_base_m2f(**fields) -> Segmenter:
    """Swin-B Mask2Former without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_base_m2f", SWIN["base"], "mask2former", fields, semantic=False)


@register_model
def swin_base_maskformer(**fields) -> Segmenter:
    """Swin-B MaskFormer without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_base_maskformer", SWIN["base"], "maskformer", fields, semantic=False)


@register_model
def swin_large_m2f(**fields) -> Segmenter:
    """Swin-L Mask2Former without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_large_m2f", SWIN["large"], "mask2former", fields, semantic=False)


@register_model
def swin_large_maskformer(**fields) -> Segmenter:
    """Swin-L MaskFormer without semantic layers (the original model, as in transformers)."""
    return make_swin_mask("swin_large_maskformer", SWIN["large"], "maskformer", fields, semantic=False)


@register_model
def swin_m2f(**fields) -> Segmenter:
    """Swin Mask2Former of any width without semantic layers (Swin-T defaults; converted weights)."""
    return make_swin_mask("swin_m2f", SWIN["tiny"], "mask2former", fields, semantic=False)


@register_model
def swin_maskformer(**fields) -> Segmenter:
    """Swin MaskFormer of any width without semantic layers (Swin-T defaults; converted weights)."""
    return make_swin_mask("swin_maskformer", SWIN["tiny"], "maskformer", fields, semantic=False)
