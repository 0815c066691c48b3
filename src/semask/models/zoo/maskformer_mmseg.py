"""The MMSegmentation 1.x MaskFormer models (ResNet-50/101-D32, Swin-T/S; mmseg MaskFormer model zoo), the
ResNet Semantic-FPN models and the original detectron2 Mask2Former / MaskFormer ResNet models, as explicit
registry entrypoints.

They are built from the same parts as the SeMask models: the ``resnet`` and ``swin`` backbones and the
``mmseg_maskformer`` / ``semantic_fpn`` decoders. The Swin rows use plain Swin (no semantic layers) with the
mmseg init (``SwinConfig.weight_init="mmseg"``); mmseg's Swin key layout is mapped by the converter
(:mod:`semask.convert.mmseg_maskformer`).
"""

from typing import Any

from semask.backbones import resnet  # noqa: F401  (registers the resnet backbone)
from semask.backbones.resnet import RESNET_DEPTHS
from semask.decoders import semantic_fpn  # noqa: F401  (registers its decoder)
from semask.decoders.maskformer.head import MASKFORMER_HEAD
from semask.decoders.mmseg_maskformer import head  # noqa: F401  (registers its decoder)
from semask.models.segmenter import Segmenter, compose
from semask.models.zoo.swin import SWIN
from semask.registry import register_model


def make_resnet(arch: str, depth: int, decoder: str, fields: dict[str, Any]) -> Segmenter:
    """ResNet-``depth`` (mmseg ``ResNet``, torchvision layout) + a registered decoder."""
    return compose(arch, "resnet", decoder, {"depths": RESNET_DEPTHS[depth]}, fields)


def make_swin_maskformer(arch: str, size: dict[str, Any], fields: dict[str, Any]) -> Segmenter:
    """Plain Swin (mmseg init, drop path 0.3) + the mmseg MaskFormer head."""
    defaults = size | {"semantic_attention": None, "weight_init": "mmseg"}
    return compose(arch, "swin", "mmseg_maskformer", defaults, fields)


@register_model
def maskformer_r50_d32(**fields) -> Segmenter:
    """MaskFormer R-50-D32 (mmseg ``maskformer_r50-d32_8xb2-160k_ade20k-512x512``, 41.3 M parameters)."""
    return make_resnet("maskformer_r50_d32", 50, "mmseg_maskformer", fields)


@register_model
def maskformer_r101_d32(**fields) -> Segmenter:
    """MaskFormer R-101-D32 (mmseg ``maskformer_r101-d32_8xb2-160k_ade20k-512x512``, 60.3 M parameters)."""
    return make_resnet("maskformer_r101_d32", 101, "mmseg_maskformer", fields)


@register_model
def maskformer_resnet(**fields) -> Segmenter:
    """MaskFormer on a ResNet of any depth/width (ResNet-50 defaults; converted mmseg weights)."""
    return make_resnet("maskformer_resnet", 50, "mmseg_maskformer", fields)


@register_model
def maskformer_swin_t(**fields) -> Segmenter:
    """MaskFormer Swin-T (mmseg ``maskformer_swin-t_upernet_8xb2-160k_ade20k-512x512``, 41.8 M parameters)."""
    return make_swin_maskformer("maskformer_swin_t", SWIN["tiny"], fields)


@register_model
def maskformer_swin_s(**fields) -> Segmenter:
    """MaskFormer Swin-S (mmseg ``maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512``, 63.1 M parameters)."""
    return make_swin_maskformer("maskformer_swin_s", SWIN["small"], fields)


@register_model
def maskformer_swin(**fields) -> Segmenter:
    """MaskFormer on a plain Swin of any width (Swin-T defaults; converted mmseg weights)."""
    return make_swin_maskformer("maskformer_swin", SWIN["tiny"], fields)


@register_model
def resnet50_fpn(**fields) -> Segmenter:
    """ResNet-50 Semantic-FPN (mmseg ``fpn_r50``-style: the ResNet backbone with the SeMask-FPN decoder)."""
    return make_resnet("resnet50_fpn", 50, "semantic_fpn", fields)


@register_model
def resnet101_fpn(**fields) -> Segmenter:
    """ResNet-101 Semantic-FPN."""
    return make_resnet("resnet101_fpn", 101, "semantic_fpn", fields)


@register_model
def resnet50_m2f(**fields) -> Segmenter:
    """ResNet-50 Mask2Former (the original detectron2 model zoo, ``maskformer2_R50_bs16_160k``; converted with
    ``--from mask2former-d2``)."""
    return make_resnet("resnet50_m2f", 50, "mask2former", fields)


@register_model
def resnet101_m2f(**fields) -> Segmenter:
    """ResNet-101 Mask2Former (detectron2 model zoo, ``maskformer2_R101_bs16_160k``)."""
    return make_resnet("resnet101_m2f", 101, "mask2former", fields)


@register_model
def resnet50_maskformer(**fields) -> Segmenter:
    """ResNet-50 MaskFormer (the original detectron2 model zoo, ``maskformer_R50_bs16_160k``; converted with
    ``--from maskformer-d2``)."""
    return make_resnet("resnet50_maskformer", 50, "maskformer", MASKFORMER_HEAD | fields)


@register_model
def resnet101_maskformer(**fields) -> Segmenter:
    """ResNet-101 MaskFormer (detectron2 model zoo, ``maskformer_R101_bs16_160k``)."""
    return make_resnet("resnet101_maskformer", 101, "maskformer", MASKFORMER_HEAD | fields)
