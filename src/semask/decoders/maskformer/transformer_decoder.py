"""Mask2Former's masked-attention transformer decoder (SPEC A7 'Masked-attention decoder').

Official source: ``mask2former/modeling/transformer_decoder/mask2former_transformer_decoder.py``
(``MultiScaleMaskedTransformerDecoder``, ``SelfAttentionLayer``, ``CrossAttentionLayer``, ``FFNLayer``; post-norm,
as in every official config). Tokens are sequence-first (L, B, C) as ``nn.MultiheadAttention`` expects; module
names equal the official keys under ``sem_seg_head.predictor``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.maskformer.common import (
    MLP,
    MaskPrediction,
    PredictorOutput,
    c2_xavier_fill,
    predict_masks,
    xavier_matrices,
)
from semask.layers.impl import get_impl
from semask.layers.position import sine_position_embedding
from semask.layers.resize import resize_to


class CrossAttentionLayer(nn.Module):
    """tgt = LN(tgt + MHA(q=tgt+query_pos, k=memory+pos, v=memory, mask))."""

    def __init__(self, d_model: int, nhead: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        xavier_matrices(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor | None,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """tgt, query_pos: (Q, B, C); memory, pos: (S, B, C); mask: (B*heads, Q, S) bool, True = blocked."""
        out = self.multihead_attn(tgt + query_pos, memory + pos, memory, attn_mask=mask, need_weights=False)[
            0
        ]
        return self.norm(tgt + self.dropout(out))


class SelfAttentionLayer(nn.Module):
    """tgt = LN(tgt + MHA(q=k=tgt+query_pos, v=tgt))."""

    def __init__(self, d_model: int, nhead: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        xavier_matrices(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """tgt, query_pos: (Q, B, C) -> (Q, B, C)."""
        q = tgt + query_pos
        return self.norm(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))


class FFNLayer(nn.Module):
    """tgt = LN(tgt + linear2(ReLU(linear1(tgt))))."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        xavier_matrices(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """(Q, B, C) -> (Q, B, C)."""
        return self.norm(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


def attention_mask(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Memory mask of the next layer: resize mask logits to the level, block where sigmoid < 0.5; a row blocked
    everywhere is fully unblocked (official threshold and 'fully masked row' rule).

    Args:
        masks: (B, Q, h, w) mask logits; size: level size (h_l, w_l).

    Returns:
        (B, Q, h_l*w_l) bool, True = not attended.
    """
    blocked = resize_to(masks, size).sigmoid().flatten(2) < 0.5  # (B, Q, h_l*w_l)
    return blocked & ~blocked.all(-1, keepdim=True)


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learnable queries refined by masked cross-attention to the levels in round robin (32, 16, 8, 32, ...).

    Args:
        in_channels: channels of the multi-scale features (CONVS_DIM).
        num_classes: K (the class head has K+1 outputs).
        hidden_dim: query width C.
        num_queries: Q.
        nheads: attention heads.
        dim_feedforward: FFN width.
        dec_layers: DEC_LAYERS; ``dec_layers - 1`` layers run, plus the prediction from the learnable queries.
        mask_dim: mask-feature channels.
        dropout: attention/FFN dropout (0 officially).
    """

    num_levels = 3

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 10,
        mask_dim: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.nheads = nheads
        layers = range(dec_layers - 1)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout) for _ in layers
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout) for _ in layers
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout) for _ in layers
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.input_proj = nn.ModuleList(  # identity when the widths agree (all official configs)
            nn.Conv2d(in_channels, hidden_dim, 1) if in_channels != hidden_dim else nn.Identity()
            for _ in range(self.num_levels)
        )
        for proj in self.input_proj:
            if isinstance(proj, nn.Conv2d):
                c2_xavier_fill(proj)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def _predict(self, output: torch.Tensor, mask_features: torch.Tensor) -> MaskPrediction:
        """(Q, B, C) queries -> predictions."""
        return predict_masks(
            output.transpose(0, 1), mask_features, self.decoder_norm, self.class_embed, self.mask_embed
        )

    def forward(
        self, features: list[torch.Tensor], mask_features: torch.Tensor, aux: bool = True
    ) -> PredictorOutput:
        """Args:
            features: 3 x (B, C_in, h_l, w_l), strides 32, 16, 8.
            mask_features: (B, mask_dim, H/4, W/4).
            aux: return the intermediate predictions (always computed: each layer's masks give the next layer's
                attention mask). Without them, ``fast`` inference predicts those masks at the next level's size from
                resized mask features (bilinear resizing is linear per channel: resize(e . F) = e . resize(F),
                equal to float rounding), not at stride 4.

        Returns:
            :class:`PredictorOutput`: final prediction, ``dec_layers - 1`` aux predictions (the first from the
            learnable queries), and the effective attention mask of every layer.
        """
        b = mask_features.shape[0]
        sizes = [tuple(x.shape[-2:]) for x in features]
        src, pos = [], []
        half = self.query_embed.weight.shape[1] // 2
        for lvl, x in enumerate(features):
            pe = sine_position_embedding(*sizes[lvl], half, x.device)  # (1, C, h_l, w_l)
            pos.append(pe.flatten(2).permute(2, 0, 1))  # (S, 1, C)
            s = self.input_proj[lvl](x).flatten(2) + self.level_embed.weight[lvl][None, :, None]  # (B, C, S)
            src.append(s.permute(2, 0, 1).contiguous())  # (S, B, C), contiguous as in the MaskFormer decoder
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)  # (Q, B, C)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, b, 1)
        layers = len(self.transformer_cross_attention_layers)
        low_res = not aux and not torch.is_grad_enabled() and get_impl() == "fast"
        level_features = [resize_to(mask_features, size) for size in sizes] if low_res else []

        def predict(output: torch.Tensor, layer: int) -> MaskPrediction:  # gives layer's attention mask
            if level_features and layer < layers:
                return self._predict(output, level_features[layer % self.num_levels])
            return self._predict(output, mask_features)

        preds = [predict(output, 0)]
        attn_masks = []
        for i, (cross, self_attn, ffn) in enumerate(
            zip(
                self.transformer_cross_attention_layers,
                self.transformer_self_attention_layers,
                self.transformer_ffn_layers,
                strict=True,
            )
        ):
            lvl = i % self.num_levels
            mask = attention_mask(preds[-1].pred_masks, sizes[lvl]).detach()  # (B, Q, S)
            attn_masks.append(mask)
            # (B*heads, Q, S): the same mask for every head, batch-major as nn.MultiheadAttention wants
            heads_mask = mask.repeat_interleave(self.nheads, dim=0)
            output = cross(output, src[lvl], heads_mask, pos[lvl].expand(-1, b, -1), query_pos)
            output = ffn(self_attn(output, query_pos))
            preds.append(predict(output, i + 1))
        return PredictorOutput(
            preds[-1].pred_logits, preds[-1].pred_masks, preds[:-1] if aux else [], attn_masks
        )
