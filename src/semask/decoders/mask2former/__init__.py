"""Mask-classification heads of the SeMask detectron2 projects: Mask2Former (MSDeformAttn pixel decoder +
masked-attention decoder), MaskFormer (FPN pixel decoder + DETR decoder), the FaPN / MSFaPN pixel decoders of
SeMask-FAPN, their set criterion and the parameter-free prior decoder (SPEC A7). Pure PyTorch; ``scipy`` is
needed only to compute losses."""

from semask.decoders.mask2former.common import MaskPrediction, PixelDecoderOutput, PredictorOutput
from semask.decoders.mask2former.criterion import SetCriterion, build_targets
from semask.decoders.mask2former.fapn import FeatureAlign, MSDeformAttnPixelFANDecoder, PixelFANDecoder
from semask.decoders.mask2former.maskformer import BasePixelDecoder, TransformerPredictor
from semask.decoders.mask2former.ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from semask.decoders.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from semask.decoders.mask2former.points import PointSampler, ReplayPoints
from semask.decoders.mask2former.semantic_head import decode_priors, semantic_inference
from semask.decoders.mask2former.transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = [
    "BasePixelDecoder",
    "FeatureAlign",
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnPixelFANDecoder",
    "MaskPrediction",
    "MultiScaleMaskedTransformerDecoder",
    "PixelDecoderOutput",
    "PixelFANDecoder",
    "PointSampler",
    "PredictorOutput",
    "ReplayPoints",
    "SetCriterion",
    "TransformerPredictor",
    "build_targets",
    "decode_priors",
    "ms_deform_attn_core",
    "semantic_inference",
]
