"""The (SeMask-)MiT models (SegFormer; SeMask paper Sec. 3, Table 6) as explicit registry entrypoints.

Unless ``semantic_attention`` is given, SeMask-MiT follows :func:`~semask.backbones.mit.semantic_layout`.
"""

from typing import Any

from semask.backbones.mit import MIT_VARIANTS, semantic_layout
from semask.decoders import segformer_head  # noqa: F401  (registers its decoder)
from semask.models.segmenter import Segmenter, compose
from semask.registry import register_model


def segformer_head_width(variant: str) -> int:
    """SegFormer's head width E (official ``decoder_params.embed_dim``): 256 for B0/B1, 768 for B2-B5."""
    return 256 if variant in ("mit_b0", "mit_b1") else 768


def make_mit_segformer(arch: str, variant: str, semantic: bool, fields: dict[str, Any]) -> Segmenter:
    """(SeMask-)MiT + the SegFormer head (official NVlabs SegFormer)."""
    layout = semantic_layout(fields.get("num_classes", 150)) if semantic else None
    defaults = MIT_VARIANTS[variant] | {
        "decoder_channels": segformer_head_width(variant),
        "semantic_attention": layout,
    }
    return compose(arch, "mit", "segformer_head", defaults, fields)


@register_model
def segformer_mit_b0(**fields) -> Segmenter:
    """SegFormer-B0: MiT-B0 + the all-MLP head (SegFormer paper; SeMask paper Table 6 baseline)."""
    return make_mit_segformer("segformer_mit_b0", "mit_b0", False, fields)


@register_model
def semask_mit_b0(**fields) -> Segmenter:
    """SeMask-MiT-B0 + the SegFormer head (SeMask paper Sec. 3, Table 6)."""
    return make_mit_segformer("semask_mit_b0", "mit_b0", True, fields)


@register_model
def segformer_mit_b1(**fields) -> Segmenter:
    """SegFormer-B1: MiT-B1 + the all-MLP head (SegFormer paper; SeMask paper Table 6 baseline)."""
    return make_mit_segformer("segformer_mit_b1", "mit_b1", False, fields)


@register_model
def semask_mit_b1(**fields) -> Segmenter:
    """SeMask-MiT-B1 + the SegFormer head (SeMask paper Sec. 3, Table 6)."""
    return make_mit_segformer("semask_mit_b1", "mit_b1", True, fields)


@register_model
def segformer_mit_b2(**fields) -> Segmenter:
    """SegFormer-B2: MiT-B2 + the all-MLP head (SegFormer paper; SeMask paper Table 6 baseline)."""
    return make_mit_segformer("segformer_mit_b2", "mit_b2", False, fields)


@register_model
def semask_mit_b2(**fields) -> Segmenter:
    """SeMask-MiT-B2 + the SegFormer head (SeMask paper Sec. 3, Table 6)."""
    return make_mit_segformer("semask_mit_b2", "mit_b2", True, fields)


@register_model
def segformer_mit_b3(**fields) -> Segmenter:
    """SegFormer-B3: MiT-B3 + the all-MLP head (SegFormer paper; SeMask paper Table 6 baseline)."""
    return make_mit_segformer("segformer_mit_b3", "mit_b3", False, fields)


@register_model
def semask_mit_b3(**fields) -> Segmenter:
    """SeMask-MiT-B3 + the SegFormer head (SeMask paper Sec. 3, Table 6)."""
    return make_mit_segformer("semask_mit_b3", "mit_b3", True, fields)


@register_model
def segformer_mit_b4(**fields) -> Segmenter:
    """SegFormer-B4: MiT-B4 + the all-MLP head (SegFormer paper; SeMask paper Table 6 baseline)."""
    return make_mit_segformer("segformer_mit_b4", "mit_b4", False, fields)


@register_model
def semask_mit_b4(**fields) -> Segmenter:
    """SeMask-MiT-B4 + the SegFormer head (SeMask paper Sec. 3, Table 6)."""
    return make_mit_segformer("semask_mit_b4", "mit_b4", True, fields)


@register_model
def segformer_mit_b5(**fields) -> Segmenter:
    """SegFormer-B5: MiT-B5 + the all-MLP head (SegFormer paper; SeMask paper Table 6 baseline)."""
    return make_mit_segformer("segformer_mit_b5", "mit_b5", False, fields)


@register_model
def semask_mit_b5(**fields) -> Segmenter:
    """SeMask-MiT-B5 + the SegFormer head (SeMask paper Sec. 3, Table 6)."""
    return make_mit_segformer("semask_mit_b5", "mit_b5", True, fields)
