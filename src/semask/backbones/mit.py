"""MiT (Mix Transformer, SegFormer's encoder) and SeMask-MiT (paper Sec. 3 and Table 6; SPEC 0 'SeMask MiT').

Official source of the MiT part: NVlabs/SegFormer ``mmseg/models/backbones/mix_transformer.py`` (commit
``65fa8cf``, ``MixVisionTransformer`` and ``mit_b0``..``mit_b5``). Module names equal its state_dict keys
(``patch_embed{s}``, ``block{s}.{j}``, ``norm{s}``, 1-based stages), so official weights map one to one. Details
reproduced exactly (``tests/test_parity_segformer.py``):

- overlapping patch embedding: Conv 7x7 stride 4 padding 3, then Conv 3x3 stride 2 padding 1 (sizes ceil(H/4),
  then ceil(/2)); its LayerNorm has the default eps 1e-5;
- blocks: pre-norm LayerNorms eps 1e-6; efficient self-attention whose keys/values come from a Conv sr x sr stride
  sr (no padding: trailing rows/columns are dropped) and a LayerNorm eps 1e-5, with one fused ``kv`` Linear
  (rows [0, C) keys, [C, 2C) values); Mix-FFN = Linear, depthwise Conv 3x3, exact GELU, Linear;
- every stage ends with a LayerNorm eps 1e-6 (``norm{s}``) on the main path: the next stage embeds the normalised
  map, and it is also the stage's output feature;
- drop path linspace(0, 0.1) over all blocks; no positional embedding.

SeMask-MiT (``semantic_attention`` not None) has no official code (SPEC 0). The paper says "The Semantic Layer
follows the Transformer Layer at each stage" (Sec. 3.1), builds it from Swin only, and reports SeMask MiT-B4 with
the SegFormer decoder ("SeMask can be plugged into any existing hierarchical vision transformer", Sec. 4.2 and
4.4, Table 6) without describing the MiT graft. Choices it leaves open, and where they come from:

- Placement: ``semantic_layer{s}`` runs after the stage's blocks and before ``norm{s}``; its output feeds
  ``norm{s}``, hence both the stage feature and the next stage (as the semantic layer feeds ``norm{i}`` and
  PatchMerging in the official SeMask-Swin, SPEC A2).
- The semantic layer itself is SeMask-Swin's :class:`~semask.layers.semantic_attention.SemanticLayer` unchanged:
  LayerNorm (eps 1e-5, the official SeMask-Swin ``nn.LayerNorm``; MiT's own block norms use 1e-6), single-head
  unscaled ``softmax(Q K^T) V``, lambda initialised to 0, dropout 0.1, N_S = 1, prior = raw Q logits.
- Window: the paper sets the semantic window "equal to that used inside the transformer layer" (Sec. 3.1); MiT
  has no attention window, so there is no value to copy; ``sem_window_size`` defaults to 7 (SeMask-Swin T/S), zero padding at the
  bottom/right with padded tokens unmasked, no shift (official ``SWSeMaskBlock``).
- Windowed vs global per stage: explicit per stage; :func:`semantic_layout` gives the default, the official
  SeMask-FPN rule without its Swin width condition: stages 0-1 windowed and 2-3 global when K > 19, else all
  windowed (SPEC A1).
- Init of the semantic layers: trunc_normal(0.02) Linears as every MiT Linear (and the SeMask-Swin FPN init).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semask.backbones.base import Backbone, BackboneOutput, init_transformer_weights
from semask.layers.drop_path import DropPath
from semask.layers.semantic_attention import SemanticLayer, SemanticMode
from semask.layers.windows import tokens_to_nchw
from semask.registry import BACKBONES, register_part

# official mit_b0..mit_b5: num_heads (1, 2, 5, 8), sr_ratios (8, 4, 2, 1), mlp_ratio 4 in all of them
MIT_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "mit_b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "mit_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "mit_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "mit_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "mit_b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "mit_b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}


def mit_variant(embed_dims: Sequence[int], depths: Sequence[int]) -> str:
    """The :data:`MIT_VARIANTS` name of these widths and depths; ``mit_b0`` for another size (a config's own fields
    then rebuild it)."""
    found = {"embed_dims": tuple(embed_dims), "depths": tuple(depths)}
    return next((name for name, v in MIT_VARIANTS.items() if v == found), "mit_b0")


_BLOCK_EPS = 1e-6  # official norm_layer = partial(nn.LayerNorm, eps=1e-6): block norm1/norm2 and norm1..norm4


def semantic_layout(num_classes: int) -> tuple[SemanticMode, ...]:
    """Default SeMask-MiT layout: stages 0-1 windowed, 2-3 global iff K > 19 (official FPN rule), else windowed."""
    if num_classes > 19:
        return ("window", "window", "global", "global")
    return ("window",) * 4


def nchw_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) in any memory format -> (B, h*w, C) row-major tokens (a view for channels-last input)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class OverlapPatchEmbed(nn.Module):
    """Conv k x k, stride s, padding k//2 (bias), then LayerNorm eps 1e-5 (official ``OverlapPatchEmbed``)."""

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, C_in, H, W) -> ``(tokens, h, w)``: (B, h*w, C), h = floor((H + 2(k//2) - k)/s) + 1."""
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(nchw_to_tokens(x)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from the map reduced by ``sr_ratio`` (official ``Attention``).

    Args:
        dim: channels C; num_heads: heads (head dim C/heads, scale its -0.5 power); sr_ratio: reduction R
            (``sr``/``norm`` exist only for R > 1).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Args:
            x: (B, h*w, C) LayerNorm'd tokens.

        Returns:
            (B, h*w, C).
        """
        b, n, c = x.shape
        d = c // self.num_heads
        q = self.q(x).view(b, n, self.num_heads, d).transpose(1, 2)  # (B, heads, N, d)
        if self.sr is not None:
            x = self.norm(nchw_to_tokens(self.sr(tokens_to_nchw(x, h, w))))  # (B, floor(h/R)*floor(w/R), C)
        kv = self.kv(x).view(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)  # (2, B, heads, N', d)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """Depthwise Conv 3x3, padding 1, bias (official ``DWConv``; the nesting gives the key ``dwconv.dwconv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, h*w, C)."""
        return nchw_to_tokens(self.dwconv(tokens_to_nchw(x, h, w)))


class MixFFN(nn.Module):
    """Linear(C, hidden) -> depthwise Conv 3x3 -> exact GELU -> Linear(hidden, C) (official ``Mlp``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, h*w, C)."""
        return self.fc2(self.hidden(x, h, w))

    def hidden(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, h*w, hidden): fc1, depthwise conv, GELU."""
        return self.act(self.dwconv(self.fc1(x), h, w))


class MiTBlock(nn.Module):
    """x = x + DropPath(attn(LN(x))); x = x + DropPath(MixFFN(LN(x))), LayerNorms eps 1e-6 (official ``Block``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, h*w, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class SeMaskMiT(Backbone):
    """MiT encoder with an optional semantic layer closing every stage (plain MiT when
    ``semantic_attention`` is None). Defaults are ``mit_b0``; see :data:`MIT_VARIANTS` for B1-B5.

    Args:
        embed_dims: C_s of the 4 stages.
        depths: blocks per stage.
        num_heads: heads per stage.
        sr_ratios: spatial reduction R of the keys/values per stage.
        mlp_ratios: Mix-FFN expansion per stage.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (official 0.1, hard-coded there).
        in_channels: image channels.
        num_classes: prior classes K of the semantic layers.
        semantic_attention: per-stage ``"window"``/``"global"`` semantic layers (see :func:`semantic_layout`),
            or None for plain MiT (SegFormer).
        sem_window_size: window of the windowed semantic layers.
        num_sem_blocks: SeMask blocks per semantic layer (N_S).
        use_gamma: learnable lambda (``False``: the "without lambda" ablation).
        sem_drop: dropout after the semantic attention projection.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (32, 64, 160, 256),
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        drop_path_rate: float = 0.1,
        in_channels: int = 3,
        num_classes: int = 150,
        semantic_attention: Sequence[SemanticMode] | None = None,
        sem_window_size: int = 7,
        num_sem_blocks: int = 1,
        use_gamma: bool = True,
        sem_drop: float = 0.1,
    ) -> None:
        super().__init__()
        for name, values in dict(
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            sr_ratios=sr_ratios,
            mlp_ratios=mlp_ratios,
            semantic_attention=semantic_attention or ("window",) * 4,
        ).items():
            if len(values) != 4:
                raise ValueError(f"{name} needs 4 entries (one per stage), got {values!r}")
        self.channels = list(embed_dims)
        self.strides = [4, 8, 16, 32]
        self.semantic = semantic_attention is not None
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        for s, dim in enumerate(self.channels, start=1):
            first = s == 1
            c_in = in_channels if first else self.channels[s - 2]
            self.add_module(
                f"patch_embed{s}", OverlapPatchEmbed(c_in, dim, 7 if first else 3, 4 if first else 2)
            )
            start = sum(depths[: s - 1])
            blocks = nn.ModuleList(
                MiTBlock(dim, num_heads[s - 1], mlp_ratios[s - 1], sr_ratios[s - 1], dpr[start + j])
                for j in range(depths[s - 1])
            )
            self.add_module(f"block{s}", blocks)
            self.add_module(f"norm{s}", nn.LayerNorm(dim, eps=_BLOCK_EPS))
            if self.semantic:
                layer = SemanticLayer(
                    dim,
                    num_classes,
                    semantic_attention[s - 1],
                    sem_window_size,
                    num_sem_blocks,
                    use_gamma,
                    sem_drop,
                )
                self.add_module(f"semantic_layer{s}", layer)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Args:
            x: (B, 3, H, W) normalised images, any H and W.

        Returns:
            :class:`~semask.backbones.base.BackboneOutput`: features 4 x (B, C_s, h_s, w_s) after ``norm{s}``
            with h_0 = ceil(H/4), then h_s = ceil(h_{s-1}/2); semantic_maps 4 x (B, K, h_s, w_s) raw prior logits
            (None for plain MiT).
        """
        features, priors = [], []
        for s in range(1, 5):
            tokens, h, w = getattr(self, f"patch_embed{s}")(x)  # (B, h*w, C_s)
            for blk in getattr(self, f"block{s}"):
                tokens = blk(tokens, h, w)
            if self.semantic:
                tokens, prior = getattr(self, f"semantic_layer{s}")(tokens, h, w)  # prior (B, K, h, w)
                priors.append(prior)
            x = tokens_to_nchw(getattr(self, f"norm{s}")(tokens), h, w)  # (B, C_s, h, w)
            features.append(x)
        return BackboneOutput(features, priors if self.semantic else None)


def _init_weights(m: nn.Module) -> None:
    """Official MiT init: Linear trunc_normal(0.02) with bias 0 and LayerNorm 1/0 (as Swin's
    :func:`~semask.backbones.base.init_transformer_weights`); Conv2d normal(0, sqrt(2/fan_out)) with
    fan_out = k*k*C_out/groups, bias 0. Lambda (gamma) stays 0."""
    init_transformer_weights(m)
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@dataclass
class MiTConfig:
    """The :class:`SeMaskMiT` fields of a model config (registered backbone ``mit``; defaults ``mit_b0``, see
    :data:`MIT_VARIANTS`). ``semantic_attention=None`` is plain MiT (SegFormer)."""

    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[float, ...] = (4, 4, 4, 4)
    drop_path_rate: float = 0.1
    semantic_attention: tuple[SemanticMode, ...] | None = None
    sem_window_size: int = 7
    num_sem_blocks: int = 1
    use_gamma: bool = True
    sem_drop: float = 0.1


@register_part(BACKBONES, "mit", MiTConfig)
def build_mit(cfg: MiTConfig, num_classes: int) -> SeMaskMiT:
    """``SeMaskMiT`` from ``cfg`` with ``num_classes`` prior classes."""
    return SeMaskMiT(num_classes=num_classes, **asdict(cfg))
