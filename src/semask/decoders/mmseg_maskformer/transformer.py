"""mmdet ``DetrTransformerDecoder``: post-norm DETR decoder layers with mmcv's module names.

Official sources: mmdet 3.3.0 ``mmdet/models/layers/transformer/detr_layers.py`` (``DetrTransformerDecoder``,
``DetrTransformerDecoderLayer``) and mmcv 2.x ``mmcv/cnn/bricks/transformer.py`` (``MultiheadAttention``: packed
``attn.in_proj_*`` + ``attn.out_proj``, ``proj_drop``, residual on the query without positions; ``FFN``:
``layers.0.0`` Linear -> ReLU -> Dropout -> ``layers.1`` Linear -> Dropout, plus identity). Module names equal the
keys under ``decode_head.transformer_decoder``. The maths equals detectron2's
:class:`~semask.decoders.maskformer.maskformer.DETRDecoderLayer`; the key layout does not. Tokens are
sequence-first (N, B, C) inside, as ``nn.MultiheadAttention`` expects.
"""

import torch
from torch import nn


class MMCVAttention(nn.Module):
    """mmcv ``MultiheadAttention``: query + proj_drop(MHA(q=query+query_pos, k=key+key_pos, v=value)).

    Args:
        dim: C; num_heads: heads; dropout: ``attn_drop`` (on the attention weights) and ``proj_drop``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
    ) -> torch.Tensor:
        """query, query_pos: (Q, B, C); key, key_pos, value: (S, B, C) -> (Q, B, C)."""
        out = self.attn(query + query_pos, key + key_pos, value, need_weights=False)[0]
        return query + self.proj_drop(out)


class FFN(nn.Module):
    """mmcv ``FFN`` (num_fcs 2): x + Dropout(Linear(Dropout(ReLU(Linear(x)))))."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return x + self.layers(x)


class DetrDecoderLayer(nn.Module):
    """self_attn -> norms[0] -> cross_attn -> norms[1] -> ffn -> norms[2] (post-norm)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MMCVAttention(dim, num_heads, dropout)
        self.cross_attn = MMCVAttention(dim, num_heads, dropout)
        self.ffn = FFN(dim, ffn_dim, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor
    ) -> torch.Tensor:
        """query, query_pos: (Q, B, C); memory, key_pos: (S, B, C) -> (Q, B, C). Self-attention keys get
        ``query_pos`` (mmcv uses query_pos as key_pos when shapes agree); values never get positions."""
        query = self.norms[0](self.self_attn(query, query, query, query_pos, query_pos))
        query = self.norms[1](self.cross_attn(query, memory, memory, query_pos, key_pos))
        return self.norms[2](self.ffn(query))


class DetrTransformerDecoder(nn.Module):
    """``num_layers`` :class:`DetrDecoderLayer` and the shared ``post_norm`` applied to every layer's output
    (``return_intermediate=True``).

    Args:
        num_layers: L; dim: C; num_heads: heads; ffn_dim: FFN width; dropout: attention/FFN dropout.
    """

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DetrDecoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.post_norm = nn.LayerNorm(dim)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Args:
            query, query_pos: (Q, B, C) (the query starts at zeros); memory, key_pos: (S, B, C).

        Returns:
            ``(raw, out_dec)``: every layer's raw output (Q, B, C), and (L, B, Q, C) = post_norm of each.
        """
        raw = []
        for layer in self.layers:
            query = layer(query, memory, query_pos, key_pos)
            raw.append(query)
        return raw, self.post_norm(torch.stack(raw).transpose(1, 2))
