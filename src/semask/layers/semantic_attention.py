"""The SeMask attention block and the semantic layer (paper Sec. 3.2; SPEC A2).

Official source: ``SeMask-FPN/mmseg/models/backbones/semask_swin_transformer.py`` (``SemanticAttention``,
``SWSeMaskBlock`` = windowed, ``SeMaskBlock`` = global).
"""

from typing import Literal

import torch
from torch import nn

from semask.layers.impl import get_impl
from semask.layers.windows import from_windows, to_windows, tokens_to_nchw

SemanticMode = Literal["window", "global"]

# fast path: rows of Q per chunk are capped so that one chunk's scores hold at most this many elements per image
_CHUNK_ELEMENTS = 1 << 22


def semantic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T) V``: single head, no 1/sqrt(K) scaling, no mask (SPEC A2).

    ``reference`` materialises the (B', N, N) scores. ``fast`` splits the queries into chunks of at most
    2^22 / N rows, so the global semantic layer (N = h*w) needs memory linear in N; windowed layers and small
    maps (N <= 2048) run as one chunk. Plain matmul + softmax beat ``scaled_dot_product_attention`` here on CPU
    (K != C forces its math kernel; zero-padding Q, K to C for the fused kernel was 1.05-1.8x slower in fp32
    and 2-4x slower in bf16 on Swin-T shapes), so both implementations use the same kernel.

    Args:
        q: (B', N, K) class-space queries; k: (B', N, K) keys; v: (B', N, C) values.

    Returns:
        (B', N, C).
    """
    n = k.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // n)
    kt = k.transpose(-2, -1)  # (B', K, N)
    if get_impl() == "reference" or n <= chunk:
        return (q @ kt).softmax(dim=-1) @ v
    out = None  # written chunk by chunk: kept chunk results would pin freed score blocks (heap fragmentation)
    for start in range(0, q.shape[1], chunk):
        part = (q[:, start : start + chunk] @ kt).softmax(dim=-1) @ v  # (B', chunk, C)
        if out is None:
            out = part.new_empty(part.shape[0], q.shape[1], part.shape[2])
        out[:, start : start + chunk] = part
    return out


class SemanticAttention(nn.Module):
    """Single-head semantic attention: ``gamma * proj(softmax(Q K^T) V) + x`` with Q, K in class space.

    No 1/sqrt(K) scaling, no heads, no mask (SPEC A2). ``Q`` is returned as the semantic-prior logits.

    Args:
        dim: token channels C.
        num_classes: prior classes K.
        proj_drop: dropout after ``mlp_res`` (official 0.1).
        use_gamma: learnable scalar lambda (init 0); ``False`` is the paper's "without lambda" ablation
            (Table 4), where the projected attention is added with weight 1.
    """

    def __init__(self, dim: int, num_classes: int, proj_drop: float = 0.1, use_gamma: bool = True) -> None:
        super().__init__()
        self.mlp_cls_q = nn.Linear(dim, num_classes)
        self.mlp_cls_k = nn.Linear(dim, num_classes)
        self.mlp_v = nn.Linear(dim, dim)
        self.mlp_res = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.gamma = nn.Parameter(torch.zeros(1)) if use_gamma else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: (B', N, C) LayerNorm'd tokens (N = window area or h*w).

        Returns:
            ``(q, out)``: q (B', N, K) prior logits, out (B', N, C).
        """
        q = self.mlp_cls_q(x)  # (B', N, K)
        attn = semantic_attention(q, self.mlp_cls_k(x), self.mlp_v(x))  # (B', N, C)
        f = self.proj_drop(self.mlp_res(attn))
        if self.gamma is not None:
            f = self.gamma * f
        return q, f + x


class SemanticLayer(nn.Module):
    """The semantic layer closing each stage: LayerNorm, then N_S SeMask attention blocks.

    ``window`` mode zero-pads to multiples of ``window_size`` and attends within non-shifted windows (padded
    tokens take part, unmasked); ``global`` mode attends over all h*w tokens. Without an outer residual, the
    output is LN(x) + gamma * F (SPEC A2).

    Args:
        dim: channels C of the stage.
        num_classes: prior classes K.
        mode: ``"window"`` (official ``SWSeMaskBlock``) or ``"global"`` (``SeMaskBlock``).
        window_size: semantic window (official ``sem_window_size``).
        num_blocks: N_S (1 in every released model).
        use_gamma: see :class:`SemanticAttention`.
        proj_drop: see :class:`SemanticAttention`.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        mode: SemanticMode,
        window_size: int,
        num_blocks: int = 1,
        use_gamma: bool = True,
        proj_drop: float = 0.1,
    ) -> None:
        super().__init__()
        if mode not in ("window", "global"):
            raise ValueError(f"semantic attention mode must be 'window' or 'global', got {mode!r}")
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1 (use semantic_attention=None for plain Swin)")
        self.mode = mode
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.class_injection = nn.ModuleList(
            SemanticAttention(dim, num_classes, proj_drop, use_gamma) for _ in range(num_blocks)
        )

    def _blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = x
        for blk in self.class_injection:
            q, x = blk(x)
        return q, x

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: (B, h*w, C) stage tokens.

        Returns:
            ``(out, prior)``: out (B, h*w, C); prior (B, K, h, w) raw logits of the last block's Q.
        """
        x = self.norm1(x)
        if self.mode == "global":
            q, x = self._blocks(x)  # (B, N, K), (B, N, C)
        else:
            m = self.window_size
            q, x = self._blocks(to_windows(x, h, w, m))  # (B*nW, M*M, K), (B*nW, M*M, C)
            q, x = from_windows(q, h, w, m), from_windows(x, h, w, m)  # (B, N, K), (B, N, C)
        return x, tokens_to_nchw(q, h, w)  # (B, K, h, w)
