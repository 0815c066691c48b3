"""SeMask Swin Transformer backbone (paper Sec. 3; SPEC A1, A2).

Official source: ``SeMask-FPN/mmseg/models/backbones/semask_swin_transformer.py`` (Swin-Seg code plus a semantic
layer per stage). Module names equal the official state_dict keys, so official checkpoints map one to one.
Inside the stages tokens are NHWC / (B, N, C); the module boundary is NCHW.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from semask.layers.drop_path import DropPath
from semask.layers.impl import get_impl
from semask.layers.onednn import Linear, fused_linear
from semask.layers.semantic_attention import SemanticLayer, SemanticMode
from semask.layers.windows import (
    from_windows,
    pad_to_multiple,
    round_up,
    to_windows,
    tokens_to_nchw,
    window_partition,
)


@dataclass
class BackboneOutput:
    """Backbone outputs, stage i at stride 2^(i+2) relative to the input image.

    Attributes:
        features: 4 x (B, C_i, ceil(H/2^(i+2)), ceil(W/2^(i+2))), after the output LayerNorms ``norm{i}``.
        semantic_maps: 4 x (B, K, same sizes) semantic-prior logits, or ``None`` without semantic layers.
    """

    features: list[torch.Tensor]
    semantic_maps: list[torch.Tensor] | None


def relative_position_index(window: int) -> torch.Tensor:
    """(M*M, M*M) int64 index into the ((2M-1)^2, heads) bias table: (dy+M-1)*(2M-1) + (dx+M-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (M*M, M*M, 2)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(
    hp: int, wp: int, window: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(nW, M*M, M*M) additive mask for shifted windows: -100 between tokens of different regions, else 0.

    Regions as the official slices (0:-M, -M:-M//2, -M//2:) per axis, numbered row-major; built from ``arange``
    comparisons so an export traces it for any size.
    """

    def region(n: int) -> torch.Tensor:  # (n,) 0, 1 or 2 along one axis
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - window // 2).long()

    ids = region(hp)[:, None] * 3 + region(wp)[None, :]  # (hp, wp)
    ids = window_partition(ids.view(1, hp, wp, 1), window).squeeze(-1)  # (nW, M*M)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff, dtype=dtype).masked_fill(diff != 0, -100.0)


@functools.lru_cache(maxsize=32)
def cached_shift_attention_mask(
    hp: int, wp: int, window: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`shift_attention_mask` cached per (size, window, device, dtype) for the ``fast`` path (read-only).

    Built outside inference mode, so a mask first made under ``torch.inference_mode`` still serves training.
    """
    with torch.inference_mode(False):
        return shift_attention_mask(hp, wp, window, device, dtype)


def _sdpa_is_faster(q: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether ``scaled_dot_product_attention`` beats the explicit kernel for these inputs.

    Measured on CPU (AVX-512 with bf16 dot products, no AMX), Swin-T window shapes, one thread: in fp32 inference
    SDPA is 10-20% faster; in bf16 it is about 1.4x slower; with autograd recording (training: the bias is a
    parameter) CPU SDPA falls back to its math kernel and forward + backward is 5-25% slower. Other devices use
    SDPA (not measured here).
    """
    if q.device.type != "cpu":
        return True
    recording = torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad)
    return q.dtype == torch.float32 and not recording


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias [+ mask]) v`` per window and head (SPEC A2, W-MSA).

    ``reference`` is the official sequence of explicit ops. ``fast`` hands the bias (+ shift mask) to
    ``scaled_dot_product_attention`` as one additive float ``attn_mask`` where that is faster (see
    :func:`_sdpa_is_faster`), and the explicit ops otherwise.

    Args:
        q, k, v: (B*nW, heads, N, d), N = M*M.
        bias: (heads, N, N) relative position bias.
        mask: (nW, N, N) additive shift mask, or None.
        scale: d^-0.5.

    Returns:
        (B*nW, heads, N, d).
    """
    bw, heads, n, _ = q.shape
    if get_impl() == "fast" and _sdpa_is_faster(q, bias):
        attn_mask = bias.unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            # (nW, heads, N, N) per image -> (B*nW, heads, N, N), a view when B = 1
            attn_mask = (bias + mask[:, None]).expand(bw // mask.shape[0], -1, -1, -1, -1)
            attn_mask = attn_mask.reshape(bw, heads, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), scale=scale)
    attn = (q * scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)  # (B*nW, heads, N, N)
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(bw // nw, nw, heads, n, n) + mask[None, :, None]).view(bw, heads, n, n)
    return attn.softmax(dim=-1) @ v


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a relative position bias (W-MSA).

    Args:
        dim: channels C; num_heads: heads; window_size: M.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = Linear(dim, dim * 3)
        self.proj = Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Args:
            x: (B*nW, M*M, C); mask: (nW, M*M, M*M) additive or None.

        Returns:
            (B*nW, M*M, C).
        """
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B*nW, heads, N, C/heads)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N*N, heads)
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
        out = window_attention(q, k, v, bias, mask, self.scale)  # (B*nW, heads, N, C/heads)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Linear(C, 4C) -> exact GELU -> Linear(4C, C) (GELU fused into ``fc1`` where :func:`fused_linear` applies)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = fused_linear(x, self.fc1, gelu=True)
        return self.fc2(self.act(self.fc1(x)) if h is None else h)


class SwinBlock(nn.Module):
    """x = x + DropPath(W-MSA(LN(x))); x = x + DropPath(MLP(LN(x))), shifted by M//2 when ``shift``.

    Pads bottom/right to window multiples (padded tokens are not masked); the window is never clamped.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift: bool, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Args:
            x: (B, h*w, C); mask: shift mask for the padded size (used only when shifted).

        Returns:
            (B, h*w, C).
        """
        m, s = self.window_size, self.shift
        y = self.attn(to_windows(self.norm1(x), h, w, m, s), mask if s else None)  # (B*nW, M*M, C)
        x = x + self.drop_path(from_windows(y, h, w, m, s))  # (B, h*w, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging: pad odd sizes, concat [x0,x1,x2,x3] = (0::2,0::2),(1::2,0::2),(0::2,1::2),(1::2,1::2),
    LayerNorm(4C), Linear(4C, 2C, no bias). Output size ceil(h/2) x ceil(w/2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = pad_to_multiple(x.view(b, h, w, c), 2)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))  # (B, ceil(h/2)*ceil(w/2), 2C)


class SwinStage(nn.Module):
    """``depth`` Swin blocks (alternately shifted), the optional semantic layer, then optional PatchMerging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        downsample: bool,
        semantic_layer: SemanticLayer | None,
        use_checkpoint: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, j % 2 == 1, mlp_ratio, drop_path[j]) for j in range(depth)
        )
        self.semantic_layer = semantic_layer
        self.downsample = PatchMerging(dim) if downsample else None

    def _shift_mask(self, h: int, w: int, x: torch.Tensor) -> torch.Tensor:
        """Built on every forward (``reference``, or inside a ``torch.compile`` graph) or cached per (size,
        device, dtype) (``fast``)."""
        m = self.window_size
        hp, wp = round_up(h, m), round_up(w, m)
        # compiled graphs fold the mask as a constant, so they build it in-graph
        cache = get_impl() == "fast" and not torch.compiler.is_compiling()
        build = cached_shift_attention_mask if cache else shift_attention_mask
        return build(hp, wp, m, x.device, x.dtype)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            x: (B, h*w, C).

        Returns:
            ``(out, prior)``: out (B, h*w, C) before downsampling; prior (B, K, h, w) or None.
        """
        mask = self._shift_mask(h, w, x) if len(self.blocks) > 1 else None
        for blk in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint(blk, x, h, w, mask, use_reentrant=False)
            else:
                x = blk(x, h, w, mask)
        prior = None
        if self.semantic_layer is not None:
            x, prior = self.semantic_layer(x, h, w)
        return x, prior


class PatchEmbed(nn.Module):
    """Zero-pad to multiples of 4, Conv 4x4 stride 4, LayerNorm. (B, 3, H, W) -> (B, C, ceil(H/4), ceil(W/4))."""

    def __init__(self, embed_dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[2:]
        x = F.pad(x, (0, round_up(w, p) - w, 0, round_up(h, p) - h))
        x = self.proj(x)  # (B, C, h, w)
        h, w = x.shape[2:]
        x = self.norm(x.flatten(2).transpose(1, 2))  # (B, h*w, C)
        return x.transpose(1, 2).reshape(-1, x.shape[-1], h, w)


class SeMaskSwin(nn.Module):
    """Swin Transformer with a semantic layer after every stage (SeMask, paper Fig. 2).

    Args:
        embed_dim: C_0; stage widths are C_i = embed_dim * 2^i.
        depths: Swin blocks per stage (N_A).
        num_heads: heads per stage.
        window_size: Swin window M.
        num_classes: prior classes K of the semantic layers (may differ from the head's, SPEC A5).
        semantic_attention: per-stage ``"window"``/``"global"``, or ``None`` for plain Swin (the paper's
            baseline: no semantic layers, no prior maps).
        sem_window_size: window of the windowed semantic layers.
        num_sem_blocks: SeMask blocks per semantic layer (N_S).
        use_gamma: learnable lambda (``False``: the "without lambda" ablation).
        sem_drop: dropout after the semantic attention projection (official 0.1).
        mlp_ratio: Swin MLP expansion.
        drop_path_rate: stochastic depth, linearly increasing over all Swin blocks (official 0.3).
        use_checkpoint: gradient checkpointing of the Swin blocks while training.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        num_classes: int = 150,
        semantic_attention: Sequence[SemanticMode] | None = ("window", "window", "global", "global"),
        sem_window_size: int = 7,
        num_sem_blocks: int = 1,
        use_gamma: bool = True,
        sem_drop: float = 0.1,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError("depths and num_heads need 4 entries (one per stage)")
        if semantic_attention is not None and len(semantic_attention) != 4:
            raise ValueError(f"semantic_attention needs 4 entries, got {semantic_attention!r}")
        self.channels = [embed_dim * 2**i for i in range(4)]
        self.strides = [4, 8, 16, 32]
        self.patch_embed = PatchEmbed(embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, dim in enumerate(self.channels):
            sem = None
            if semantic_attention is not None:
                sem = SemanticLayer(
                    dim,
                    num_classes,
                    semantic_attention[i],
                    sem_window_size,
                    num_sem_blocks,
                    use_gamma,
                    sem_drop,
                )
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    dim,
                    depths[i],
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    dpr[start : start + depths[i]],
                    downsample=i < 3,
                    semantic_layer=sem,
                    use_checkpoint=use_checkpoint,
                )
            )
        for i, dim in enumerate(self.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Args:
            x: (B, 3, H, W) normalised images, any H and W.

        Returns:
            :class:`BackboneOutput` with strides 4, 8, 16, 32.
        """
        x = self.patch_embed(x)  # (B, C0, h, w)
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C0)
        features, priors = [], []
        for i, stage in enumerate(self.layers):
            x, prior = stage(x, h, w)
            out = getattr(self, f"norm{i}")(x)  # (B, h*w, C_i)
            features.append(tokens_to_nchw(out, h, w))
            priors.append(prior)
            if stage.downsample is not None:
                x = stage.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return BackboneOutput(features, priors if priors[0] is not None else None)


def init_transformer_weights(m: nn.Module) -> None:
    """FPN-path init (SPEC A2): every Linear trunc_normal(0.02) with bias 0, LayerNorm 1/0; gamma stays 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
