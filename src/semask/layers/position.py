"""Sine position encoding of the Mask2Former/MaskFormer heads (SPEC A7 'Sine position encoding').

Official source: ``mask2former/modeling/transformer_decoder/position_encoding.py`` (``PositionEmbeddingSine`` with
``normalize=True``, no padding mask): no -0.5 offset, channels [y, x], each interleaved sin/cos.
"""

import math

import torch


def sine_position_embedding(
    height: int,
    width: int,
    num_pos_feats: int,
    device: torch.device | None = None,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """Normalised 2D sine/cosine position encoding of an h x w map.

    y = (1..h) / (h + 1e-6) * 2pi (likewise x); dim_t_i = temperature^(2 floor(i/2) / F); channels
    [sin(y/dim_t_0), cos(y/dim_t_1), sin(y/dim_t_2), ..., then the same for x].

    Args:
        height, width: map size h, w.
        num_pos_feats: F, channels per axis (the output has 2F channels).
        device: output device.
        temperature: base of the frequencies.

    Returns:
        (1, 2F, h, w) float32.
    """
    scale, eps = 2 * math.pi, 1e-6
    ones = torch.ones(1, height, width, device=device)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale  # (1, h, w)
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)  # (F,)
    pos_x = x_embed[..., None] / dim_t  # (1, h, w, F)
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)  # (1, h, w, F)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (1, 2F, h, w)
