"""The mask-classification head of the SeMask detectron2 projects (``sem_seg_head``: pixel decoder + predictor),
its semantic inference, its config and the four registered decoders (SPEC A1, A7).

Official sources: SeMask ``BranchMaskFormerHead`` and ``SeMaskMaskFormer.semantic_inference`` + detectron2
``sem_seg_postprocess``. Registered decoders: ``mask2former`` (MSDeformAttn pixel decoder + masked-attention
predictor), ``maskformer`` (FPN pixel decoder + DETR predictor on res5), ``fapn_m2f`` / ``msfapn_m2f`` (SeMask-FAPN's
FaPN / MSFaPN pixel decoders + the Mask2Former predictor).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.base import Decoder
from semask.decoders.maskformer.common import MaskSegOutput, PixelDecoderOutput, PredictorOutput
from semask.decoders.maskformer.fapn import MSDeformAttnPixelFANDecoder, PixelFANDecoder
from semask.decoders.maskformer.maskformer import BasePixelDecoder, TransformerPredictor
from semask.decoders.maskformer.pixel_decoder import MSDeformAttnPixelDecoder
from semask.decoders.maskformer.transformer_decoder import MultiScaleMaskedTransformerDecoder
from semask.decoders.priors import D2PriorDecoder
from semask.losses.criterion import SetCriterion
from semask.registry import DECODERS, register_part


def semantic_inference(
    pred_logits: torch.Tensor, pred_masks: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """Per-class scores: softmax over K+1 classes without "no object", times sigmoid masks, summed over queries.

    Masks are upsampled to the padded input size (4x the mask size) BEFORE the einsum, then cropped to
    ``image_size`` (the official resize to the original size is an identity here).

    Args:
        pred_logits: (B, Q, K+1); pred_masks: (B, Q, Hp/4, Wp/4); image_size: (H, W) unpadded.

    Returns:
        (B, K, H, W) scores in [0, Q].
    """
    padded = (4 * pred_masks.shape[-2], 4 * pred_masks.shape[-1])
    masks = F.interpolate(pred_masks, size=padded, mode="bilinear", align_corners=False).sigmoid()
    probs = pred_logits.softmax(-1)[..., :-1]  # (B, Q, K)
    scores = torch.einsum("bqc,bqhw->bchw", probs, masks)  # (B, K, Hp, Wp)
    return scores[..., : image_size[0], : image_size[1]]


class MaskClassificationHead(Decoder):
    """``sem_seg_head``: the pixel decoder, then the predictor on its multi-scale features (Mask2Former) or on the
    raw res5 (MaskFormer, TRANSFORMER_IN_FEATURE res5). Outputs class scores at the input size."""

    state_prefix = "sem_seg_head"
    output_kind = "scores"
    output_stride = 1
    test_pipeline = "detectron2"

    def __init__(self, pixel_decoder: nn.Module, predictor: nn.Module, size_divisibility: int = 32) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.size_divisibility = size_divisibility
        self.num_classes = predictor.class_embed.out_features - 1

    def forward(self, features: Sequence[torch.Tensor], aux: bool = True) -> MaskSegOutput:
        """features: res2..res5 (B, C_i, Hp/s, Wp/s) -> predictions on the padded input (``aux``: with the
        intermediate layers' predictions)."""
        pred = self.run(features, aux)[1]
        return MaskSegOutput(pred.pred_logits, pred.pred_masks, pred.aux_outputs, pred.attn_masks)

    def run(
        self, features: Sequence[torch.Tensor], aux: bool = True
    ) -> tuple[PixelDecoderOutput, PredictorOutput]:
        """The pixel decoder's and the predictor's outputs (every intermediate the official head has; ``aux=False``:
        no intermediate predictions)."""
        pix = self.pixel_decoder(features)
        levels = pix.multi_scale_features if pix.multi_scale_features is not None else features[3:]
        return pix, self.predictor(levels, pix.mask_features, aux)

    def dense(self, outputs: MaskSegOutput, image_size: tuple[int, int]) -> torch.Tensor:
        """Official semantic inference: (B, K, H, W) scores sum_q p_q(c) * sigmoid(m_q)."""
        return semantic_inference(outputs.pred_logits, outputs.pred_masks, image_size)


@dataclass
class MaskHeadConfig:
    """The fields of the mask-classification decoders. Defaults are the official Mask2Former head (SPEC A1);
    ``enc_*`` only apply to the MSDeformAttn encoder (Mask2Former, MSFaPN). ``class_weight``, ``mask_weight``,
    ``dice_weight`` are both the loss weights and the matching costs (MaskFormer v1 uses 1 for the class cost and
    ``loss_ce``); ``train_num_points`` etc. the Mask2Former point sampling (MaskFormer v1: dense focal loss)."""

    conv_dim: int = 256
    mask_dim: int = 256
    hidden_dim: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 10
    enc_layers: int = 6
    enc_dim_feedforward: int = 1024
    enc_n_points: int = 4
    dropout: float = 0.0
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    size_divisibility: int = 32


MASKFORMER_HEAD = dict(dec_layers=6, dropout=0.1, class_weight=1.0, mask_weight=20.0, dice_weight=1.0)
"""MaskFormer v1 head (SPEC A1 'MF', A7 'MaskFormer criterion'): fields that differ from the Mask2Former defaults."""


def _head(
    cfg: MaskHeadConfig, channels: Sequence[int], num_classes: int, pixel_decoder: nn.Module, m2f: bool
) -> tuple[Decoder, nn.Module, nn.Module]:
    fields = ("hidden_dim", "num_queries", "nheads", "dim_feedforward", "dec_layers", "mask_dim", "dropout")
    head = {f: getattr(cfg, f) for f in fields} | {"num_classes": num_classes}
    if m2f:
        predictor = MultiScaleMaskedTransformerDecoder(cfg.conv_dim, **head)
    else:
        predictor = TransformerPredictor(channels[3], **head)
    criterion = SetCriterion(
        num_classes,
        cfg.class_weight,
        cfg.mask_weight,
        cfg.dice_weight,
        cfg.no_object_weight,
        cfg.train_num_points if m2f else None,
        cfg.oversample_ratio,
        cfg.importance_sample_ratio,
    )
    decoder = MaskClassificationHead(pixel_decoder, predictor, cfg.size_divisibility)
    return decoder, criterion, D2PriorDecoder()


def _register(
    name: str, pixel_decoder: Callable[[MaskHeadConfig, Sequence[int]], nn.Module], m2f: bool
) -> None:
    def build(cfg: MaskHeadConfig, channels: Sequence[int], strides: Sequence[int], num_classes: int):
        return _head(cfg, channels, num_classes, pixel_decoder(cfg, channels), m2f)

    register_part(DECODERS, name, MaskHeadConfig)(build)


def _encoder(cfg: MaskHeadConfig) -> tuple:
    return cfg.nheads, cfg.enc_layers, cfg.enc_dim_feedforward, cfg.enc_n_points, cfg.dropout


_register(
    "mask2former",
    lambda cfg, ch: MSDeformAttnPixelDecoder(ch, cfg.conv_dim, cfg.mask_dim, *_encoder(cfg)),
    True,
)
_register("maskformer", lambda cfg, ch: BasePixelDecoder(ch, cfg.conv_dim, cfg.mask_dim), False)
_register("fapn_m2f", lambda cfg, ch: PixelFANDecoder(ch, cfg.conv_dim, cfg.mask_dim), True)
_register(
    "msfapn_m2f",
    lambda cfg, ch: MSDeformAttnPixelFANDecoder(ch, cfg.conv_dim, cfg.mask_dim, *_encoder(cfg)),
    True,
)
