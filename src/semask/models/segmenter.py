"""SeMask segmenter = SeMask-Swin backbone + Semantic-FPN decoder + prior decoder (official ``EncoderDecoder``)."""

from dataclasses import asdict, dataclass, field, fields
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from semask.backbones.swin import BackboneOutput, SeMaskSwin
from semask.decoders.semantic_fpn import SemanticFPNHead
from semask.layers.impl import get_impl

_C = TypeVar("_C", bound="ConfigDict")


class ConfigDict:
    """JSON round trip for the network config dataclasses (dumped beside converted weights)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_C], d: dict) -> _C:
        """Build from a dict (lists become tuples). Raises ValueError on unknown keys."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class SwinBackboneConfig(ConfigDict):
    """The :class:`~semask.backbones.swin.SeMaskSwin` fields every network config starts with (``num_classes`` is
    the number of semantic-prior classes unless a subclass says otherwise)."""

    num_classes: int = 150
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    sem_window_size: int = 7
    semantic_attention: tuple[str, ...] | None = ("window", "window", "window", "global")
    num_sem_blocks: int = 1
    use_gamma: bool = True
    sem_drop: float = 0.1
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    use_checkpoint: bool = False

    def build_backbone(self, **overrides) -> SeMaskSwin:
        """``SeMaskSwin`` from these fields, with ``overrides`` (e.g. another ``num_classes``) taking precedence."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(SwinBackboneConfig)}
        return SeMaskSwin(**kwargs | overrides)


@dataclass
class SeMaskFPNConfig(SwinBackboneConfig):
    """Everything that defines a SeMask/Swin Semantic-FPN network (dumped as JSON beside converted weights).

    ``semantic_attention=None`` is the plain Swin FPN baseline. ``num_prior_classes`` defaults to
    ``num_classes``; the official COCO-Stuff-10k checkpoints use 150 prior classes with 171 head classes (SPEC A5).
    """

    semantic_attention: tuple[str, ...] | None = ("window", "window", "global", "global")
    num_prior_classes: int | None = None
    decoder_channels: int = 256
    dropout: float = 0.1
    arch: str = field(default="semask_swin_fpn")


@dataclass
class SegOutput:
    """Model outputs at stride 4 relative to the (unpadded) input.

    Attributes:
        logits: (B, K, ceil(H/4), ceil(W/4)) main decoder logits.
        prior_logits: (B, K', same size) prior-decoder logits, or ``None`` without semantic layers.
    """

    logits: torch.Tensor
    prior_logits: torch.Tensor | None


def official_semantic_layout(embed_dim: int, num_classes: int) -> tuple[str, ...]:
    """The official SeMask-FPN rule (SPEC A1): stages 2,3 global iff embed_dim in {96,192} and K > 19."""
    if embed_dim in (96, 192) and num_classes > 19:
        return ("window", "window", "global", "global")
    return ("window",) * 4


class SeMaskFPN(nn.Module):
    """SeMask Semantic-FPN segmenter. ``forward`` takes normalised (B, 3, H, W) images.

    Attributes ``backbone`` and ``decode_head`` mirror the official state_dict prefixes.
    """

    def __init__(self, cfg: SeMaskFPNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = cfg.build_backbone(num_classes=cfg.num_prior_classes or cfg.num_classes)
        self.decode_head = SemanticFPNHead(
            self.backbone.channels, cfg.num_classes, cfg.decoder_channels, cfg.dropout, self.backbone.strides
        )

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def forward_features(self, images: torch.Tensor) -> BackboneOutput:
        """Backbone only: (B, 3, H, W) -> :class:`BackboneOutput`."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor, priors: bool = True) -> SegOutput:
        """Args:
            images: (B, 3, H, W) normalised (mean/std of the preset), any H and W.
            priors: decode the semantic-prior maps (``False``: ``prior_logits`` is None).

        Returns:
            :class:`SegOutput` at stride 4.
        """
        feats = self.backbone(images)
        logits = self.decode_head(feats.features)
        maps = feats.semantic_maps if priors else None
        return SegOutput(logits, None if maps is None else self.decode_head.decode_priors(maps))

    def decode_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Whole-image logits before the final resize: (B, 3, H, W) -> (B, K, ceil(H/4), ceil(W/4)).

        ``reference`` runs the whole forward as the official head does (the prior branch included); ``fast`` skips
        the prior decoder, whose output inference never reads.
        """
        return self(images, priors=get_impl() == "reference").logits

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Whole-image logits resized to the input (official ``encode_decode``): (B, K, H, W)."""
        return F.interpolate(
            self.decode_logits(images), size=images.shape[-2:], mode="bilinear", align_corners=False
        )
