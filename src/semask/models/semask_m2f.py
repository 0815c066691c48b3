"""SeMask Mask2Former / MaskFormer segmenters (the official detectron2 projects; SPEC A1, A7) and their registry.

Official sources: ``SeMask-Mask2Former`` / ``SeMask-MaskFormer`` ``SeMaskMaskFormer`` (meta-architecture),
``BranchMaskFormerHead`` (``sem_seg_head``) and ``D2SeMaskSwinTransformer``. Attribute names mirror the official
state-dict prefixes (``backbone``, ``sem_seg_head.pixel_decoder``, ``sem_seg_head.predictor``, ``criterion``), so
detectron2 checkpoints map one to one (``semask.convert.semask_d2``).
"""

from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from semask.backbones.swin import BackboneOutput, SeMaskSwin
from semask.decoders.mask2former import (
    BasePixelDecoder,
    MSDeformAttnPixelDecoder,
    MSDeformAttnPixelFANDecoder,
    MultiScaleMaskedTransformerDecoder,
    PixelDecoderOutput,
    PixelFANDecoder,
    PointSampler,
    PredictorOutput,
    SetCriterion,
    TransformerPredictor,
    decode_priors,
    semantic_inference,
)
from semask.layers.impl import get_impl
from semask.layers.semantic_attention import SemanticAttention
from semask.models.segmenter import SwinBackboneConfig
from semask.models.semask_fpn import _SIZES
from semask.registry import register_model


@dataclass
class SeMaskM2FConfig(SwinBackboneConfig):
    """Everything that defines a SeMask Mask2Former (``decoder="mask2former"``), MaskFormer (``"maskformer"``),
    FaPN Mask2Former (``"fapn"``) or MSFaPN Mask2Former (``"msfapn"``) network.

    Defaults are the official Mask2Former head (SPEC A1) on a Swin-T backbone. ``backbone_init="d2"`` is the
    detectron2 init (SPEC A2 'Init'), ``"fpn"`` the mmseg one. ``enc_*`` only apply to the MSDeformAttn encoder
    (Mask2Former, MSFaPN); FaPN and MSFaPN use the Mask2Former predictor and criterion; MaskFormer v1
    uses ``class_weight`` 1 for both the class cost and ``loss_ce`` and no point sampling.
    """

    decoder: str = "mask2former"
    backbone_init: str = "d2"
    conv_dim: int = 256
    mask_dim: int = 256
    hidden_dim: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 10
    enc_layers: int = 6
    enc_dim_feedforward: int = 1024
    enc_n_points: int = 4
    dropout: float = 0.0
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    cate_weight: float = 0.4
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    size_divisibility: int = 32
    arch: str = field(default="semask_swin_m2f")


# decoder -> (registry suffix, name); FaPN and MSFaPN pair their pixel decoder with the Mask2Former predictor
DECODERS = {
    "mask2former": ("m2f", "Mask2Former"),
    "maskformer": ("maskformer", "MaskFormer"),
    "fapn": ("fapn_m2f", "FaPN Mask2Former"),
    "msfapn": ("msfapn_m2f", "MSFaPN Mask2Former"),
}

# MaskFormer v1 head (SPEC A1 'MF', A7 'MaskFormer criterion'): fields that differ from the Mask2Former defaults.
MASKFORMER_HEAD = dict(
    decoder="maskformer", dec_layers=6, dropout=0.1, class_weight=1.0, mask_weight=20.0, dice_weight=1.0
)


def project_semantic_layout(decoder: str, num_classes: int) -> tuple[str, ...]:
    """Per-project rule (SPEC A7 'Semantic layout per project'): Mask2Former: stage 3 global iff K == 150, else
    all windowed; MaskFormer: stages 0-2 windowed, stage 3 global always; SeMask-FAPN (FaPN, MSFaPN): stages 0-1
    windowed, stages 2-3 global always."""
    if decoder in ("fapn", "msfapn"):
        return ("window", "window", "global", "global")
    if decoder == "maskformer" or num_classes == 150:
        return ("window", "window", "window", "global")
    return ("window",) * 4


def d2_backbone_init_(backbone: SeMaskSwin) -> None:
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


_PREDICTOR_FIELDS = ("num_classes", "hidden_dim", "num_queries", "nheads", "dim_feedforward", "dec_layers",
                     "mask_dim", "dropout")  # fmt: skip


@dataclass
class MaskSegOutput(PredictorOutput):
    """Outputs on the input padded to ``size_divisibility`` (Hp, Wp).

    Attributes (besides :class:`PredictorOutput`'s ``pred_logits`` (B, Q, K+1), ``pred_masks``
    (B, Q, Hp/4, Wp/4), ``aux_outputs``, ``attn_masks``):
        prior_logits: (B, K, Hp, Wp) prior-decoder logits (input of ``loss_cate``), None without semantic layers.
        image_size: (H, W) of the unpadded input.
    """

    prior_logits: torch.Tensor | None
    image_size: tuple[int, int]


class MaskClassificationHead(nn.Module):
    """``sem_seg_head``: pixel decoder, then the predictor on its multi-scale features (Mask2Former) or on the
    raw res5 (MaskFormer, TRANSFORMER_IN_FEATURE res5)."""

    def __init__(self, pixel_decoder: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, features: list[torch.Tensor]) -> tuple[PixelDecoderOutput, PredictorOutput]:
        """features: res2..res5 (B, C_i, Hp/s, Wp/s) -> (pixel-decoder output, predictions)."""
        pix = self.pixel_decoder(features)
        levels = pix.multi_scale_features if pix.multi_scale_features is not None else features[3:]
        return pix, self.predictor(levels, pix.mask_features)


class SeMaskM2F(nn.Module):
    """SeMask-Swin + Mask2Former, MaskFormer, FaPN or MSFaPN head + parameter-free prior decoder. Inputs are
    normalised (B, 3, H, W) images of any size (padded to ``size_divisibility`` internally, bottom/right, zeros).

    Raises:
        ValueError: unknown ``cfg.decoder`` or ``cfg.backbone_init``.
    """

    # predict_logits returns class scores (not logits): inference averages them as they are, without a softmax
    scores_not_logits = True

    def __init__(self, cfg: SeMaskM2FConfig) -> None:
        super().__init__()
        if cfg.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {tuple(DECODERS)}, got {cfg.decoder!r}")
        if cfg.backbone_init not in ("d2", "fpn"):
            raise ValueError(f"backbone_init must be 'd2' or 'fpn', got {cfg.backbone_init!r}")
        self.cfg = cfg
        self.backbone = cfg.build_backbone()
        if cfg.backbone_init == "d2":
            d2_backbone_init_(self.backbone)
        channels = self.backbone.channels
        head = {f: getattr(cfg, f) for f in _PREDICTOR_FIELDS}
        if cfg.decoder == "maskformer":
            pixel_decoder = BasePixelDecoder(channels, cfg.conv_dim, cfg.mask_dim)
        elif cfg.decoder == "fapn":
            pixel_decoder = PixelFANDecoder(channels, cfg.conv_dim, cfg.mask_dim)
        else:
            enc = (cfg.nheads, cfg.enc_layers, cfg.enc_dim_feedforward, cfg.enc_n_points, cfg.dropout)
            msdeform = MSDeformAttnPixelFANDecoder if cfg.decoder == "msfapn" else MSDeformAttnPixelDecoder
            pixel_decoder = msdeform(channels, cfg.conv_dim, cfg.mask_dim, *enc)
        if cfg.decoder == "maskformer":
            predictor = TransformerPredictor(channels[3], **head)
        else:
            predictor = MultiScaleMaskedTransformerDecoder(cfg.conv_dim, **head)
        self.sem_seg_head = MaskClassificationHead(pixel_decoder, predictor)
        self.criterion = SetCriterion(
            cfg.num_classes,
            cfg.class_weight,
            cfg.mask_weight,
            cfg.dice_weight,
            cfg.cate_weight,
            cfg.no_object_weight,
            None if cfg.decoder == "maskformer" else cfg.train_num_points,
            cfg.oversample_ratio,
            cfg.importance_sample_ratio,
        )

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def pad(self, images: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """Pad (..., H, W) bottom/right to multiples of ``size_divisibility`` (detectron2 ``ImageList``)."""
        d = self.cfg.size_divisibility
        return F.pad(images, (0, (-images.shape[-1]) % d, 0, (-images.shape[-2]) % d), value=value)

    def forward_features(self, images: torch.Tensor) -> BackboneOutput:
        """Backbone only, on the unpadded input: (B, 3, H, W) -> :class:`BackboneOutput` (as ``SeMaskFPN``)."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor, priors: bool = True) -> MaskSegOutput:
        """Args:
            images: (B, 3, H, W) normalised.
            priors: decode the semantic-prior maps (``False``: ``prior_logits`` is None).

        Returns:
            :class:`MaskSegOutput` on the padded (Hp, Wp) input.
        """
        feats = self.backbone(self.pad(images))
        _, pred = self.sem_seg_head(feats.features)
        maps = feats.semantic_maps if priors else None
        prior = None if maps is None else decode_priors(maps)
        return MaskSegOutput(
            pred.pred_logits,
            pred.pred_masks,
            pred.aux_outputs,
            pred.attn_masks,
            prior,
            tuple(images.shape[-2:]),
        )

    def losses(
        self, outputs: MaskSegOutput, labels: torch.Tensor, sampler: PointSampler | None = None
    ) -> dict[str, torch.Tensor]:
        """Weighted losses under the official keys (``loss_ce``, ``loss_cate``, ``loss_mask``, ``loss_dice`` and
        ``_j`` for aux output j); their sum is the training loss.

        Args:
            outputs: :meth:`forward` output.
            labels: (B, H, W) int class map of the unpadded input (255 = void); padded with 255 here.
            sampler: point source of the Mask2Former losses (default: official random draws).

        Raises:
            ValueError: labels larger than the padded input.
        """
        hp, wp = 4 * outputs.pred_masks.shape[-2], 4 * outputs.pred_masks.shape[-1]
        if labels.shape[-2] > hp or labels.shape[-1] > wp:
            raise ValueError(f"labels {tuple(labels.shape[-2:])} are larger than the padded input {(hp, wp)}")
        labels = F.pad(
            labels, (0, wp - labels.shape[-1], 0, hp - labels.shape[-2]), value=self.criterion.ignore_index
        )
        return self.criterion.weigh(self.criterion(outputs, outputs.prior_logits, labels, sampler)[0])

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Semantic inference (official ``semantic_inference`` + crop): (B, 3, H, W) -> (B, K, H, W) scores
        sum_q p_q(c) * sigmoid(m_q) (not log-probabilities; the argmax is the prediction). ``fast`` skips the
        prior decoder (inference never reads it)."""
        out = self(images, priors=get_impl() == "reference")
        return semantic_inference(out.pred_logits, out.pred_masks, out.image_size)


# tiny test models: small widths, few queries and layers. conv_dim 64: the GroupNorm(32) layers need 2 channels per
# group to normalise the 1x1 stride-32 map of inputs up to 32x32 pixels (1x1 included)
_TEST_HEAD = dict(
    conv_dim=64,
    mask_dim=32,
    hidden_dim=32,
    num_queries=8,
    nheads=4,
    dim_feedforward=64,
    enc_layers=2,
    enc_dim_feedforward=64,
)


def _build(arch: str, size: str, decoder: str, **overrides) -> SeMaskM2F:
    unknown = set(overrides) - {f.name for f in fields(SeMaskM2FConfig)}
    if unknown:
        raise TypeError(f"{arch}: unknown config fields {sorted(unknown)}")
    base = dict(arch=arch, decoder=decoder, **_SIZES[size]) | (
        MASKFORMER_HEAD if decoder == "maskformer" else {}
    )
    if size == "test":
        base |= _TEST_HEAD | dict(dec_layers=3 if decoder == "maskformer" else 4)
    cfg = replace(SeMaskM2FConfig(**base), **overrides)
    if "semantic_attention" not in overrides:
        cfg = replace(cfg, semantic_attention=project_semantic_layout(decoder, cfg.num_classes))
    return SeMaskM2F(cfg)


def _entry(size: str, decoder: str):
    suffix, title = DECODERS[decoder]
    name = f"semask_swin_{size}_{suffix}"

    def fn(**overrides) -> SeMaskM2F:
        return _build(name, size, decoder, **overrides)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"SeMask-Swin-{size} {title}. Overrides: SeMaskM2FConfig fields."
    return register_model(fn)


for _size in ("tiny", "small", "base", "large", "test"):
    for _decoder in DECODERS:
        _entry(_size, _decoder)
