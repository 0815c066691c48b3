"""Multi-scale deformable attention in plain PyTorch (Deformable DETR; SPEC A7 'MSDeformAttn layouts').

Official source: ``mask2former/modeling/pixel_decoder/ops/modules/ms_deform_attn.py`` and
``ms_deform_attn_core_pytorch`` (``functions/ms_deform_attn_func.py``), whose ``grid_sample`` (bilinear,
align_corners=False, zero padding) has the semantics of the CUDA op. No compiled kernel is needed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from semask.layers.impl import get_impl


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinear sampling of every level at the given locations, weighted and summed over levels and points.

    Args:
        value: (B, S, M, D) values of all levels, flattened row-major per level and concatenated
            (S = sum h_l*w_l), M heads of D channels.
        spatial_shapes: L x (h_l, w_l).
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y) in [0, 1] (0 = left/top image border).
        attention_weights: (B, Lq, M, L, P), softmax-normalised over L*P.

    Returns:
        (B, Lq, M*D), channel = head * D + d.

    ``reference`` runs the official ``grid_sample`` per level and one weighted sum; ``fast`` the same values as one
    weighted gather (:func:`_gather_weighted`), with and without autograd.
    """
    if get_impl() == "fast":
        return _gather_weighted(value, spatial_shapes, sampling_locations, attention_weights)
    b, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, num_levels, p)  # (B*M, 1, Lq, L, P)

    def sample(lvl: int, h: int, w: int) -> torch.Tensor:  # (B*M, D, Lq, P)
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)  # (B*M, D, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        return F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)

    # the official order: stack all levels, then one weighted sum
    samples = torch.stack([sample(lvl, h, w) for lvl, (h, w) in enumerate(spatial_shapes)], dim=-2)
    out = (samples.flatten(-2) * weights.flatten(-2)).sum(-1)  # (B*M, D, Lq)
    return out.view(b, m * d, lq).transpose(1, 2).contiguous()  # (B, Lq, M*D)


def _gather_weighted(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn_core` as one weighted gather (:class:`_BilinearGather`): every (image, head, query)
    sums the value rows of the 4 bilinear corners of its L*P points, weighted by attention weight x corner weight.

    grid_sample's semantics (align_corners=False: pixel = location * size - 0.5; zero padding) come from a
    one-pixel zero border around every level: corners are clamped into it, and points whose corners all fall
    outside get weight 0. The gradients reach the values through the gather and the locations and attention
    weights through the corner weights. On CPU it never holds the (B*M, D, Lq, L*P) samples that grid_sample
    writes and the weighted sum reads back (memory-bound: at Mask2Former's 384x384 training size the official
    path's products ran 3-10x slower in a training step than alone).
    """
    b, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    dev = value.device
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    table = torch.cat(  # (B, M, S', D): each level zero-padded by one pixel, row-major, concatenated
        [
            F.pad(x.view(b, h, w, m, d), (0, 0, 0, 0, 1, 1, 1, 1)).permute(0, 3, 1, 2, 4).flatten(2, 3)
            for x, (h, w) in zip(per_level, spatial_shapes, strict=True)
        ],
        dim=2,
    )
    # level- and axis-major copies, (L, 2, B, M, Lq, P) and (L, B, M, Lq, P): every op below is on contiguous
    # blocks with Python scalars (broadcasts over the small L, P, 2 dims run element by element)
    locations = sampling_locations.permute(3, 5, 0, 2, 1, 4).contiguous()
    attention = attention_weights.permute(3, 0, 2, 1, 4).contiguous()
    itype = torch.int32 if b * m * table.shape[2] < 2**31 else torch.int64  # int32 indices: less to move
    block_row = (torch.arange(b * m, device=dev, dtype=itype) * table.shape[2]).view(b, m, 1, 1)
    index, weights = [], []
    levels, start = [], 0  # (first row, rows, padded width) of every level within one (image, head) block
    for lvl, (h, w) in enumerate(spatial_shapes):
        x, y = locations[lvl, 0] * w - 0.5, locations[lvl, 1] * h - 0.5
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        cx, cy = x0.clamp(-1, w - 1), y0.clamp(-1, h - 1)  # top-left corner in the padded level
        attn = attention[lvl] * ((cx == x0) & (cy == y0))  # 0 where all 4 corners are outside the level
        first = block_row + (cy.to(itype) + 1) * (w + 2) + (cx.to(itype) + start + 1)
        index += [first, first + 1, first + (w + 2), first + (w + 3)]
        above, below = attn * (1 - fy), attn * fy
        weights += [above * (1 - fx), above * fx, below * (1 - fx), below * fx]
        levels.append((start, (h + 2) * (w + 2), w + 2))
        start += (h + 2) * (w + 2)
    index = torch.stack(index, 3).view(b * m * lq, -1)  # (B*M*Lq, L*4*P)
    weights = torch.stack(weights, 3).view(b * m * lq, -1)
    if torch.is_grad_enabled() and table.dtype in (torch.bfloat16, torch.float16):
        # training under autocast: float32 as the official grid_sample (autocast's float32 list); CPU's reduced
        # precision embedding_bag backward is also several times slower
        table = table.float()
    out = _BilinearGather.apply(table.reshape(-1, d), index, weights.to(table.dtype), tuple(levels))
    return out.view(b, m, lq, d).transpose(1, 2).reshape(b, lq, m * d)


class _BilinearGather(torch.autograd.Function):
    """out[n] = sum_k weights[n, k] * table[index[n, k]]: (R, D) table, (N, L*4*P) int index, (N, L*4*P) weights
    -> (N, D), the forward ``F.embedding_bag(..., mode="sum")``. The index holds, per level l and point, the 4
    bilinear corners ``first + (0, 1, W_l, W_l + 1)`` ([level, corner, point] order) of a table made of blocks of
    ``levels``: (first row, rows, padded width W_l) per level.

    Backward: d table is the gather run the other way, by corner: the (N*L*P) top-left corners sorted by table row
    (a quarter of all entries to sort), one ``embedding_bag`` per corner sums the output gradients of every row's
    entries, and the corner's sums are added shifted by its offset (at Mask2Former's stride-8 training shapes
    17 ms, where sorting all entries took 45 ms and PyTorch's own embedding_bag table gradient 185 ms);
    d weights[n, k] = <table[index[n, k]], d out[n]> (aten's per-sample-weights backward of embedding_bag).
    """

    @staticmethod
    def forward(ctx, table, index, weights, levels):  # type: ignore[override]
        ctx.save_for_backward(table, index, weights)
        ctx.levels = levels
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        table, index, weights = ctx.saved_tensors
        n, k = index.shape
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = _table_grad(grad, index, weights, table.shape[0], ctx.levels)
        if ctx.needs_input_grad[2]:
            offsets = torch.arange(0, n * k, k, device=index.device)
            bags = torch.arange(n, device=index.device).repeat_interleave(k)
            grad_weights = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad, table, index.reshape(-1).long(), offsets, bags, 0
            ).view(n, k)
        return grad_table, None, grad_weights, None


def _table_grad(
    grad: torch.Tensor,
    index: torch.Tensor,
    weights: torch.Tensor,
    rows: int,
    levels: tuple[tuple[int, int, int], ...],
) -> torch.Tensor:
    """(rows, D) gradient of :class:`_BilinearGather`'s table from the (N, D) output gradient."""
    n, d = grad.shape
    corners = index.view(n, len(levels), 4, -1)  # (N, L, 4, P)
    first = corners[:, :, 0].reshape(-1)
    order = torch.argsort(first)
    counts = torch.bincount(first, minlength=rows)
    bags, offsets = order // (first.numel() // n), counts.cumsum(0) - counts
    by_corner = weights.view(corners.shape)
    sums = [
        F.embedding_bag(
            bags, grad, offsets, per_sample_weights=by_corner[:, :, c].reshape(-1)[order], mode="sum"
        )
        for c in range(4)
    ]  # (rows, D) each, by top-left row
    block = sum(size for _, size, _ in levels)
    total, sums = sums[0].view(-1, block, d), [x.view(-1, block, d) for x in sums]
    for start, size, width in levels:
        for c, shift in ((1, 1), (2, width), (3, width + 1)):
            total[:, start + shift : start + size] += sums[c][:, start : start + size - shift]
    return total.view(rows, d)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (official ``MSDeformAttn``; keys ``sampling_offsets``,
    ``attention_weights``, ``value_proj``, ``output_proj``).

    Args:
        d_model: channels C.
        n_levels: feature levels L.
        n_heads: heads M (C divisible by M).
        n_points: sampling points P per head and level.

    Raises:
        ValueError: d_model not divisible by n_heads.
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: zero offsets with a per-head direction grid as bias, zero attention logits."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)  # (M, 2)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)  # (M, L, P, 2)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """Args:
            query: (B, Lq, C).
            reference_points: (B, Lq, L, 2) normalised (x, y) per level.
            value: (B, S, C) flattened levels (S = sum h_l*w_l).
            spatial_shapes: L x (h_l, w_l).

        Returns:
            (B, Lq, C).
        """
        b, lq, c = query.shape
        m, num_levels, p = self.n_heads, self.n_levels, self.n_points
        v = self.value_proj(value).view(b, value.shape[1], m, c // m)  # (B, S, M, D)
        offsets = self.sampling_offsets(query).view(b, lq, m, num_levels, p, 2)  # (x, y) last
        weights = self.attention_weights(query).view(b, lq, m, num_levels * p).softmax(-1)
        weights = weights.view(b, lq, m, num_levels, p)  # level-major
        # (w_l, h_l) per level, built from the sizes themselves (not torch.tensor) so that ONNX tracing keeps them
        normalizer = torch.stack(
            [torch.stack([torch.as_tensor(w), torch.as_tensor(h)]) for h, w in spatial_shapes]
        )
        # both broadcasts over whole contiguous (L, P, 2) blocks: over the small trailing dims themselves CPU
        # kernels run element by element (same values, 3.8 -> 1.4 ms at 512x512)
        normalizer = normalizer.to(query)[:, None].expand(num_levels, p, 2).contiguous()
        points = reference_points[:, :, None, :, None, :].expand(b, lq, 1, num_levels, p, 2).contiguous()
        locations = points + offsets / normalizer
        return self.output_proj(ms_deform_attn_core(v, spatial_shapes, locations, weights))
