"""MMSegmentation 1.x ``MaskFormerHead`` (registered decoder ``mmseg_maskformer``), its config and mmseg's
``predict``.

Official sources: mmseg 1.2.2 ``mmseg/models/decode_heads/maskformer_head.py`` (``MaskFormerHead``: K+1-way
``cls_embed``, ``predict``) over mmdet 3.3.0 ``mmdet/models/dense_heads/maskformer_head.py`` (``forward``,
``init_weights``) and ``mmdet/models/layers/positional_encoding.py`` (``SinePositionalEncoding(normalize=True)``;
mmseg's padding mask is always all-False). Module names equal the keys under ``decode_head``.

Forward: pixel decoder -> (mask features at stride 4, memory = raw stride-32 feature) -> ``decoder_input_proj``
(1x1 conv with bias when C_3 != feat_channels, else identity) -> DETR decoder from zero queries with
``query_embed`` positions and sine key positions ([y, x] halves) -> per layer ``cls_embed`` (K+1) and
``mask_embed`` (Linear-ReLU-Linear-ReLU-Linear) dotted with the mask features.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.base import Decoder
from semask.decoders.maskformer.common import MaskPrediction, MaskSegOutput, c2_xavier_fill, xavier_matrices
from semask.decoders.mmseg_maskformer.pixel_decoder import PixelDecoder
from semask.decoders.mmseg_maskformer.transformer import DetrTransformerDecoder
from semask.decoders.priors import D2PriorDecoder
from semask.layers.mask_product import mask_product
from semask.layers.position import sine_position_embedding
from semask.losses.mmdet_criterion import MMDetSetCriterion
from semask.registry import DECODERS, register_part


@dataclass
class HeadTrace:
    """Every intermediate of one head forward.

    Attributes:
        levels: pixel-decoder maps: ``last_feat_conv`` (stride 32), ``output_convs`` 2, 1, 0 (strides 16, 8, 4),
            mask features (B, out_channels, H/4, W/4).
        memory_proj: (B, C, H/32, W/32) ``decoder_input_proj`` of the raw stride-32 feature.
        pos_embed: (1, C, H/32, W/32) sine key positions.
        layer_outputs: per decoder layer (B, Q, C) before ``post_norm``.
        out_dec: (L, B, Q, C) ``post_norm`` of every layer output.
        cls_scores: (L, B, Q, K+1) class logits (index K = no object).
        mask_preds: (L, B, Q, H/4, W/4) mask logits.
    """

    levels: list[torch.Tensor]
    memory_proj: torch.Tensor
    pos_embed: torch.Tensor
    layer_outputs: list[torch.Tensor]
    out_dec: torch.Tensor
    cls_scores: torch.Tensor
    mask_preds: torch.Tensor


def mmseg_semantic_inference(
    cls_scores: torch.Tensor, mask_preds: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """mmseg ``MaskFormerHead.predict``: masks upsampled bilinearly (align_corners=False) to the input size FIRST,
    then softmax over K+1 without the last column times sigmoid masks, summed over queries.

    Args:
        cls_scores: (B, Q, K+1) last-layer logits; mask_preds: (B, Q, h, w); image_size: (H, W) of the input.

    Returns:
        (B, K, H, W) non-negative scores (mmseg calls them ``seg_logits``).
    """
    masks = F.interpolate(mask_preds, size=image_size, mode="bilinear", align_corners=False).sigmoid()
    return torch.einsum("bqc,bqhw->bchw", cls_scores.softmax(-1)[..., :-1], masks)


class MMSegMaskFormerHead(Decoder):
    """``decode_head`` of the MMSegmentation MaskFormer models; outputs scores at the input size, mmseg pipeline.

    Args:
        in_channels: backbone channels (strides 4 to 32); num_classes: K; feat_channels: FPN, query and
            position width C; out_channels: mask-feature width; num_queries: Q; nheads, dim_feedforward,
            dec_layers, dropout: the DETR decoder.
    """

    output_kind = "scores"
    output_stride = 1

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        feat_channels: int = 256,
        out_channels: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = list(in_channels), num_classes
        self.pixel_decoder = PixelDecoder(in_channels, feat_channels, out_channels)
        self.transformer_decoder = DetrTransformerDecoder(
            dec_layers, feat_channels, nheads, dim_feedforward, dropout
        )
        xavier_matrices(self.transformer_decoder)
        if in_channels[-1] != feat_channels:
            self.decoder_input_proj = nn.Conv2d(in_channels[-1], feat_channels, 1)
            c2_xavier_fill(self.decoder_input_proj)
        else:
            self.decoder_input_proj = nn.Identity()
        self.query_embed = nn.Embedding(num_queries, feat_channels)
        self.cls_embed = nn.Linear(feat_channels, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(feat_channels, feat_channels),
            nn.ReLU(inplace=True),
            nn.Linear(feat_channels, feat_channels),
            nn.ReLU(inplace=True),
            nn.Linear(feat_channels, out_channels),
        )

    def run(self, features: Sequence[torch.Tensor], aux: bool = True) -> HeadTrace:
        """features: 4 x (B, C_i, H/s_i, W/s_i) -> :class:`HeadTrace` (every intermediate; ``aux=False``: class
        and mask predictions of the last layer only, L = 1)."""
        levels, memory = self.pixel_decoder(features)
        memory = self.decoder_input_proj(memory)  # (B, C, h, w)
        b, c, h, w = memory.shape
        pos = sine_position_embedding(h, w, c // 2, memory.device).to(memory.dtype)  # (1, C, h, w)
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)  # (Q, B, C)
        raw, out_dec = self.transformer_decoder(
            torch.zeros_like(query_pos),
            memory.flatten(2).permute(2, 0, 1).contiguous(),  # as in the MaskFormer decoder
            query_pos,
            pos.flatten(2).permute(2, 0, 1).expand(-1, b, -1),
        )
        predicted = out_dec if aux else out_dec[-1:]
        # the official einsum "lbqc,bchw->lbqhw" as one product per image over the L*Q embeddings
        embed = self.mask_embed(predicted)  # (L, B, Q, C)
        layers, queries = embed.shape[0], embed.shape[2]
        masks = mask_product(embed.transpose(0, 1).flatten(1, 2), levels[-1]).unflatten(1, (layers, queries))
        masks = masks.transpose(0, 1)  # (L, B, Q, h, w)
        return HeadTrace(
            levels, memory, pos, [r.transpose(0, 1) for r in raw], out_dec, self.cls_embed(predicted), masks
        )

    def forward(self, features: Sequence[torch.Tensor], aux: bool = True) -> MaskSegOutput:
        """features: 4 x (B, C_i, H/s_i, W/s_i) -> last layer's (B, Q, K+1) logits and (B, Q, H/4, W/4) masks,
        the earlier layers as ``aux_outputs`` (first to last; none with ``aux=False``)."""
        t = self.run(features, aux)
        earlier = [MaskPrediction(c, m) for c, m in zip(t.cls_scores[:-1], t.mask_preds[:-1], strict=True)]
        return MaskSegOutput(t.cls_scores[-1], t.mask_preds[-1], earlier, [])

    def dense(self, outputs: MaskSegOutput, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, K, H, W) scores of the last layer (:func:`mmseg_semantic_inference`)."""
        return mmseg_semantic_inference(outputs.pred_logits, outputs.pred_masks, image_size)


@dataclass
class MMSegMaskFormerConfig:
    """The fields of the ``mmseg_maskformer`` decoder (defaults: the mmseg ADE20K configs). ``class_weight``,
    ``mask_weight``, ``dice_weight`` are both the loss weights and the matching-cost weights."""

    feat_channels: int = 256
    out_channels: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 6
    dropout: float = 0.1
    class_weight: float = 1.0
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    no_object_weight: float = 0.1


@register_part(DECODERS, "mmseg_maskformer", MMSegMaskFormerConfig)
def build_mmseg_maskformer(
    cfg: MMSegMaskFormerConfig, channels: Sequence[int], strides: Sequence[int], num_classes: int
) -> tuple[MMSegMaskFormerHead, MMDetSetCriterion, D2PriorDecoder]:
    """The head, its criterion and the prior decoder used with a semantic (SeMask) backbone (priors summed at
    stride 4, then x4: the size of the labels the criterion pads to)."""
    head = MMSegMaskFormerHead(
        channels,
        num_classes,
        cfg.feat_channels,
        cfg.out_channels,
        cfg.num_queries,
        cfg.nheads,
        cfg.dim_feedforward,
        cfg.dec_layers,
        cfg.dropout,
    )
    criterion = MMDetSetCriterion(
        num_classes, cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.no_object_weight
    )
    return head, criterion, D2PriorDecoder()
