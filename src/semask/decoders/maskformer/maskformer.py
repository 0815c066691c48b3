"""MaskFormer (v1) head: FPN pixel decoder and DETR transformer predictor on res5 (SPEC A7 'MaskFormer ...').

Official sources: ``mask_former/modeling/heads/pixel_decoder.py`` (``BasePixelDecoder``) and
``mask_former/modeling/transformer/{transformer_predictor,transformer}.py`` (``TransformerPredictor``, DETR
``Transformer`` with ENC_LAYERS 0, post-norm decoder). Module names equal the official keys.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.maskformer.common import (
    MLP,
    Conv2dNorm,
    MaskPrediction,
    PixelDecoderOutput,
    PredictorOutput,
    c2_xavier_fill,
    predict_masks,
    xavier_matrices,
)
from semask.layers.position import sine_position_embedding
from semask.layers.winograd import WinogradConv2d


class BasePixelDecoder(nn.Module):
    """FPN: res5 -> ``layer_4``; for res4, res3, res2 (k = 3, 2, 1): y = layer_k(adapter_k(x) + nearest-up(y));
    ``mask_features`` = 3x3 conv on the stride-4 level.

    Args:
        in_channels: backbone channels of res2..res5.
        conv_dim: FPN width (CONVS_DIM); mask_dim: mask-feature channels (MASK_DIM).
    """

    def __init__(self, in_channels: Sequence[int], conv_dim: int = 256, mask_dim: int = 256) -> None:
        super().__init__()
        for k, c in enumerate(in_channels[:3], start=1):
            self.add_module(f"adapter_{k}", Conv2dNorm(c, conv_dim, 1, relu=False))
            self.add_module(f"layer_{k}", Conv2dNorm(conv_dim, conv_dim, 3, relu=True))
        self.layer_4 = Conv2dNorm(in_channels[3], conv_dim, 3, relu=True)
        self.mask_features = WinogradConv2d(conv_dim, mask_dim, 3, padding=1)
        c2_xavier_fill(self.mask_features)

    def forward(self, features: list[torch.Tensor]) -> PixelDecoderOutput:
        """features: res2..res5 -> :class:`PixelDecoderOutput` (no multi-scale features)."""
        y = self.layer_4(features[3])
        for k in (3, 2, 1):
            lateral = getattr(self, f"adapter_{k}")(features[k - 1])
            y = getattr(self, f"layer_{k}")(
                lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            )
        return PixelDecoderOutput(self.mask_features(y), y, None)


class DETRDecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attn -> add & norm1 -> cross-attn -> add & norm2 -> FFN -> add & norm3."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        """tgt, query_pos: (Q, B, C); memory, pos: (S, B, C) -> (Q, B, C)."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(attn))
        return self.norm3(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class DETRDecoder(nn.Module):
    """Stack of :class:`DETRDecoderLayer` plus the shared output ``norm`` (key prefix ``transformer.decoder``)."""

    def __init__(
        self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DETRDecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)


class DETRTransformer(nn.Module):
    """DETR transformer with ENC_LAYERS 0 (memory = src, no encoder parameters); tgt starts at zeros."""

    def __init__(
        self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float
    ) -> None:
        super().__init__()
        self.decoder = DETRDecoder(num_layers, d_model, nhead, dim_feedforward, dropout)
        xavier_matrices(self)

    def forward(self, src: torch.Tensor, query_embed: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            src: (B, C, h, w) projected res5; query_embed: (Q, C).

        Returns:
            Every layer's output (before the shared norm), each (Q, B, C).
        """
        b, c, h, w = src.shape
        pos = sine_position_embedding(h, w, c // 2, src.device)  # (1, C, h, w)
        pos = pos.flatten(2).permute(2, 0, 1).expand(-1, b, -1)  # (S, B, C)
        # contiguous: PyTorch's inference matmul does not fold a (S, B, C) view with gaps into one product, but
        # copies the in-projection weight S times for a batched product (MultiheadAttention's key/value)
        memory = src.flatten(2).permute(2, 0, 1).contiguous()  # (S, B, C)
        query_pos = query_embed.unsqueeze(1).repeat(1, b, 1)  # (Q, B, C)
        tgt, outs = torch.zeros_like(query_pos), []
        for layer in self.decoder.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outs.append(tgt)
        return outs


class TransformerPredictor(nn.Module):
    """MaskFormer predictor on res5: DETR decoder, class head (K+1) and mask head on every layer.

    Args:
        in_channels: res5 channels; num_classes: K; hidden_dim: C; num_queries: Q; nheads: heads;
        dim_feedforward: FFN width; dec_layers: decoder layers (6); mask_dim: mask-feature channels;
        dropout: decoder dropout (0.1 officially).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        mask_dim: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.transformer = DETRTransformer(dec_layers, hidden_dim, nheads, dim_feedforward, dropout)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = (
            nn.Conv2d(in_channels, hidden_dim, 1) if in_channels != hidden_dim else nn.Identity()
        )
        if in_channels != hidden_dim:
            c2_xavier_fill(self.input_proj)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(
        self, features: list[torch.Tensor], mask_features: torch.Tensor, aux: bool = True
    ) -> PredictorOutput:
        """Args:
            features: [res5] (B, C_5, H/32, W/32) (TRANSFORMER_IN_FEATURE res5).
            mask_features: (B, mask_dim, H/4, W/4).
            aux: predict the earlier layers too (False: only the last layer's masks are computed).

        Returns:
            :class:`PredictorOutput`: last layer's prediction and the earlier layers' as aux outputs.
        """
        outs = self.transformer(self.input_proj(features[0]), self.query_embed.weight)
        head = (self.transformer.decoder.norm, self.class_embed, self.mask_embed)
        final = predict_masks(outs[-1].transpose(0, 1), mask_features, *head)
        if not aux or len(outs) == 1:
            return PredictorOutput(final.pred_logits, final.pred_masks, [], [])
        # the earlier layers' queries in one prediction, as the official einsum "lbqc,bchw->lbqhw": one product and
        # one mask-feature gradient instead of one per layer (the last layer alone, so that its values do not
        # depend on ``aux``: products of other shapes may round differently)
        earlier = predict_masks(torch.cat([o.transpose(0, 1) for o in outs[:-1]], 1), mask_features, *head)
        q = outs[0].shape[0]
        preds = [
            MaskPrediction(*p)
            for p in zip(earlier.pred_logits.split(q, 1), earlier.pred_masks.split(q, 1), strict=True)
        ]
        return PredictorOutput(final.pred_logits, final.pred_masks, preds, [])
