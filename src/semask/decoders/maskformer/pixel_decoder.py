"""Mask2Former's MSDeformAttn pixel decoder (SPEC A7 'MSDeformAttn pixel decoder', 'Stride-4 level').

Official source: ``mask2former/modeling/pixel_decoder/msdeformattn.py`` (``MSDeformAttnPixelDecoder``,
``MSDeformAttnTransformerEncoderOnly``, ``MSDeformAttnTransformerEncoderLayer``). Module names equal the official
keys under ``sem_seg_head.pixel_decoder``.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semask.decoders.maskformer.common import Conv2dNorm, PixelDecoderOutput, xavier_matrices
from semask.layers.ms_deform_attn import MSDeformAttn
from semask.layers.position import sine_position_embedding


class EncoderLayer(nn.Module):
    """Post-norm layer: MSDeformAttn -> add & LN -> FFN (ReLU) -> add & LN."""

    def __init__(
        self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, n_heads: int, n_points: int
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """src, pos: (B, S, C); ref: (B, S, L, 2) -> (B, S, C)."""
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, ref, src, shapes)))
        ffn = self.linear2(self.dropout(self.hidden(src)))
        return self.norm2(src + self.dropout(ffn))

    def hidden(self, src: torch.Tensor) -> torch.Tensor:
        """The FFN's hidden layer, ``relu(linear1(src))``: (B, S, C) -> (B, S, dim_feedforward)."""
        return F.relu(self.linear1(src))


class DeformEncoder(nn.Module):
    """The encoder layers (key prefix ``transformer.encoder``); no final norm."""

    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def reference_points(shapes: list[tuple[int, int]], batch: int, device: torch.device) -> torch.Tensor:
        """Pixel centres ((j+0.5)/w_l, (i+0.5)/h_l) of every query's own level, repeated for all L levels
        (valid ratios 1: nothing is padded). Returns (B, S, L, 2)."""
        refs = []
        for h, w in shapes:
            # arange + 0.5 equals linspace(0.5, h - 0.5, h) exactly, and exports to ONNX also for h = 1 (the
            # exported linspace divides by h - 1)
            ref_y, ref_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            refs.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))  # (h*w, 2)
        ref = torch.cat(refs, 0)  # (S, 2)
        return ref[None, :, None].expand(batch, -1, len(shapes), -1)  # (B, S, L, 2)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        """src, pos: (B, S, C) -> (B, S, C)."""
        ref = self.reference_points(shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        return src


class DeformTransformer(nn.Module):
    """Encoder-only deformable transformer: flattens levels, adds level embeddings (key prefix ``transformer``)."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
    ) -> None:
        super().__init__()
        self.encoder = DeformEncoder(
            [
                EncoderLayer(d_model, dim_feedforward, dropout, n_levels, n_heads, n_points)
                for _ in range(num_layers)
            ]
        )
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        xavier_matrices(self)
        for layer in self.encoder.layers:
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos: list[torch.Tensor]) -> list[torch.Tensor]:
        """srcs, pos: L x (B, C, h_l, w_l) -> L x (B, C, h_l, w_l) encoded."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # (B, S, C)
        lvl_pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos)
            ],
            1,
        )  # (B, S, C)
        out = self.encoder(src, lvl_pos, shapes)
        chunks = out.split([h * w for h, w in shapes], dim=1)
        # channels-last copies: the views' batch stride is that of the whole token sequence, which PyTorch's
        # memory-format test reads (even for one image), so kernels took them as neither layout (an upsampling of
        # the stride-8 level and its sum with the stride-4 one: 22 ms -> 2 ms at 512x512)
        return [
            z.transpose(1, 2).reshape(out.shape[0], -1, h, w).clone(memory_format=torch.channels_last)
            for z, (h, w) in zip(chunks, shapes, strict=True)
        ]


class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable encoder on strides 32/16/8 plus a stride-4 FPN level and the mask features.

    Args:
        in_channels: backbone channels of res2..res5.
        conv_dim: width of every level (CONVS_DIM).
        mask_dim: mask-feature channels (MASK_DIM).
        nheads: MSDeformAttn heads (official: MASK_FORMER.NHEADS).
        enc_layers: encoder layers (6).
        enc_dim_feedforward: encoder FFN width (hard-coded 1024 officially).
        n_points: sampling points (hard-coded 4).
        dropout: encoder dropout (MASK_FORMER.DROPOUT).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        nheads: int = 8,
        enc_layers: int = 6,
        enc_dim_feedforward: int = 1024,
        n_points: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, 1), nn.GroupNorm(32, conv_dim)) for c in in_channels[:0:-1]
        )  # res5, res4, res3
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = DeformTransformer(
            conv_dim, enc_layers, enc_dim_feedforward, dropout, 3, nheads, n_points
        )
        self.adapter_1 = Conv2dNorm(in_channels[0], conv_dim, 1, relu=False)
        self.layer_1 = Conv2dNorm(conv_dim, conv_dim, 3, relu=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def encode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The MSDeformAttn encoder on res5, res4, res3 (projected, with sine positions and level embeddings).

        Args:
            features: res2..res5, (B, C_i, H/s, W/s) for s = 4, 8, 16, 32.

        Returns:
            3 x (B, conv_dim, H/s, W/s) for s = 32, 16, 8.
        """
        levels = features[:0:-1]  # res5, res4, res3
        srcs = [proj(x) for proj, x in zip(self.input_proj, levels, strict=True)]
        half = srcs[0].shape[1] // 2
        pos = [
            sine_position_embedding(*x.shape[-2:], half, x.device).expand(x.shape[0], -1, -1, -1)
            for x in levels
        ]
        return self.transformer(srcs, pos)

    def forward(self, features: list[torch.Tensor]) -> PixelDecoderOutput:
        """Args:
            features: res2..res5, (B, C_i, H/s, W/s) for s = 4, 8, 16, 32.

        Returns:
            :class:`PixelDecoderOutput` with ``multi_scale_features`` at strides 32, 16, 8.
        """
        out = self.encode(features)
        lateral = self.adapter_1(features[0])
        y = self.layer_1(
            lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        )
        return PixelDecoderOutput(self.mask_features(y), y, out)
