"""SeMask Swin Transformer backbone (paper Sec. 3; SPEC A1, A2).

Official source: ``SeMask-FPN/mmseg/models/backbones/semask_swin_transformer.py`` (Swin-Seg code plus a semantic
layer per stage). Module names equal the official state_dict keys, so official checkpoints map one to one.
Inside the stages tokens are NHWC / (B, N, C); the module boundary is NCHW.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from semask.backbones.base import Backbone, BackboneOutput, init_transformer_weights
from semask.layers.drop_path import DropPath
from semask.layers.semantic_attention import SemanticAttention, SemanticLayer, SemanticMode
from semask.layers.window_attention import relative_position_index, shift_mask, window_attention
from semask.layers.windows import (
    from_windows,
    pad_to_multiple,
    round_up,
    to_windows,
    tokens_to_nchw,
)
from semask.registry import BACKBONES, register_part


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
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
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
        bias = bias.view(n, n, -1).permute(2, 0, 1).contiguous()  # (heads, N, N), contiguous as the official
        out = window_attention(q, k, v, bias, mask, self.scale)  # (B*nW, heads, N, C/heads)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Linear(C, 4C) -> exact GELU -> Linear(4C, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


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
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
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
        m = self.window_size
        return shift_mask(round_up(h, m), round_up(w, m), m, x.device, x.dtype)

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


class SeMaskSwin(Backbone):
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
        self.semantic = semantic_attention is not None
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


@dataclass
class SwinConfig:
    """The :class:`SeMaskSwin` fields of a model config (registered backbone ``swin``; its ``num_classes`` is the
    model's ``num_prior_classes or num_classes``). ``semantic_attention=None`` is plain Swin.

    ``weight_init``: ``mmseg`` (SeMask-FPN, SPEC A2: trunc_normal Linears) or ``d2`` (the SeMask detectron2
    projects, SPEC A2 'Init': PyTorch's default Linear init, kaiming semantic layers with a zero ``mlp_res``).
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    sem_window_size: int = 7
    semantic_attention: tuple[SemanticMode, ...] | None = ("window", "window", "global", "global")
    num_sem_blocks: int = 1
    use_gamma: bool = True
    sem_drop: float = 0.1
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    use_checkpoint: bool = False
    weight_init: Literal["mmseg", "d2"] = "mmseg"


@register_part(BACKBONES, "swin", SwinConfig)
def build_swin(cfg: SwinConfig, num_classes: int) -> SeMaskSwin:
    """``SeMaskSwin`` from ``cfg`` with ``num_classes`` prior classes. Raises ValueError for an unknown
    ``weight_init``."""
    fields = asdict(cfg)
    init = fields.pop("weight_init")
    if init not in ("mmseg", "d2"):
        raise ValueError(f"weight_init must be 'mmseg' or 'd2', got {init!r}")
    backbone = SeMaskSwin(num_classes=num_classes, **fields)
    if init == "d2":
        d2_init_(backbone)
    return backbone


def d2_init_(backbone: nn.Module) -> None:
    """The detectron2 init of the SeMask Swin (SPEC A2 'Init'): ``init_weights`` is a no-op there, so every Linear
    keeps PyTorch's default init, and each SemanticAttention gets kaiming_normal weights, zero biases and a zero
    ``mlp_res`` weight (gamma 0)."""
    for m in backbone.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    for m in backbone.modules():
        if isinstance(m, SemanticAttention):
            for lin in (m.mlp_cls_q, m.mlp_cls_k, m.mlp_v, m.mlp_res):
                nn.init.kaiming_normal_(lin.weight)
                nn.init.zeros_(lin.bias)
            nn.init.zeros_(m.mlp_res.weight)
