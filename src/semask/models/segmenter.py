"""``Segmenter(backbone, decoder[, prior_decoder])``: the one model class, and how a config builds it.

Data flow (paper Fig. 2): normalised images -> padded to the decoder's ``size_divisibility`` -> backbone
(multi-scale features and, with semantic layers, per-stage semantic-prior maps) -> decoder -> the decoder's output,
plus the prior decoder's logits on the prior maps; ``losses`` hands both to the criterion, ``predict`` turns the
decoder output into per-class maps at the input size.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semask.backbones.base import Backbone, BackboneOutput
from semask.decoders.base import Decoder, OutputKind, TestPipeline
from semask.losses.base import LossSettings
from semask.models.base import ModelConfig, model_config_class
from semask.registry import BACKBONES, DECODERS


class Segmenter(nn.Module):
    """A backbone, a decoder, the prior decoder of the decoder's family and its criterion.

    The decoder is held under its ``state_prefix`` (``decode_head`` / ``sem_seg_head``), so state-dict keys equal
    the official ones; :attr:`decoder` names it in code.

    Args:
        backbone: returns a :class:`~semask.backbones.base.BackboneOutput`.
        decoder: consumes ``backbone.channels`` at ``backbone.strides``.
        prior_decoder: parameter-free module turning the 4 prior maps into prior logits; used only when the
            backbone has semantic layers.
        criterion: ``criterion(outputs, labels, settings) -> dict`` of losses (a module: it may hold buffers).
        cfg: the config the model was built from (stored beside its weights); None for a hand-built model.

    Raises:
        ValueError: a backbone with semantic layers and no prior decoder.
    """

    def __init__(
        self,
        backbone: Backbone,
        decoder: Decoder,
        prior_decoder: nn.Module | None = None,
        criterion: nn.Module | None = None,
        cfg: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        if backbone.semantic and prior_decoder is None:
            raise ValueError("a backbone with semantic layers needs a prior decoder")
        self.backbone = backbone
        self._decoder_name = decoder.state_prefix
        self.add_module(decoder.state_prefix, decoder)
        self.prior_decoder = prior_decoder if backbone.semantic else None
        self.criterion = criterion
        self.cfg = cfg

    @property
    def decoder(self) -> Decoder:
        return self._modules[self._decoder_name]

    @property
    def output_kind(self) -> OutputKind:
        """``logits`` or ``scores``: what :meth:`predict` returns (stated by the decoder)."""
        return self.decoder.output_kind

    @property
    def test_pipeline(self) -> TestPipeline:
        """The official test pipeline and evaluator of the decoder's family."""
        return self.decoder.test_pipeline

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    def pad(self, images: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """Pad (..., H, W) bottom/right to multiples of the decoder's ``size_divisibility`` (detectron2
        ``ImageList``; an identity for the mmseg heads)."""
        d = self.decoder.size_divisibility
        return F.pad(images, (0, (-images.shape[-1]) % d, 0, (-images.shape[-2]) % d), value=value)

    def forward_features(self, images: torch.Tensor) -> BackboneOutput:
        """Backbone only, on the unpadded input: (B, 3, H, W) -> :class:`BackboneOutput`."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor, priors: bool = True, aux: bool = True) -> Any:
        """Args:
            images: (B, 3, H, W) normalised (mean/std of the preset), any H and W.
            priors: decode the semantic-prior maps into ``prior_logits`` (``False``, or no semantic layers: None).
            aux: the intermediate decoder layers' predictions of the mask heads (``aux_outputs``, read by the
                training losses; ``False``: an empty list, and MaskFormer skips their mask products).

        Returns:
            The decoder's output (:class:`~semask.models.base.SegOutput` at stride 4 for the mmseg heads,
            :class:`~semask.decoders.maskformer.common.MaskSegOutput` on the padded input for the mask heads).
        """
        feats = self.backbone(self.pad(images))
        out = self.decoder(feats.features, aux=aux)
        if priors and self.prior_decoder is not None:
            out.prior_logits = self.prior_decoder(feats.semantic_maps)
        return out

    def losses(self, outputs: Any, labels: torch.Tensor, settings: LossSettings | None = None) -> dict:
        """The weighted training losses of one batch (every ``loss*`` entry is a term of the total).

        Args:
            outputs: :meth:`forward`'s output; labels: (B, H, W) int64 of the unpadded input, 255 = void.
            settings: the recipe's loss settings (default: ``cate_weight`` 0.4, no OHEM, no class weights).

        Raises:
            ConfigError: settings the criterion does not support. ValueError: a model without criterion.
        """
        if self.criterion is None:
            raise ValueError("this segmenter was built without a criterion")
        return self.criterion.losses(outputs, labels, settings or LossSettings())

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class maps before the final resize, without the prior decoder and the mask heads' intermediate
        predictions (inference reads neither):
        (B, 3, H, W) -> (B, K, ceil(H/s), ceil(W/s)) with s = the decoder's ``output_stride``."""
        out = self(images, priors=False, aux=False)
        return self.decoder.dense(out, tuple(images.shape[-2:]))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K, H, W) per-class maps of kind :attr:`output_kind`; the logits of the mmseg heads
        are resized bilinearly (align_corners=False) to the input (official ``encode_decode``)."""
        dense = self.decode(images)
        if dense.shape[-2:] == images.shape[-2:]:
            return dense
        return F.interpolate(dense, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`predict` of a logits model. Raises TypeError for a scores model (use :meth:`predict_scores`)."""
        if self.output_kind != "logits":
            raise TypeError(f"{type(self.decoder).__name__} outputs class scores: use predict_scores")
        return self.predict(images)

    def predict_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities (softmax of the logits) or scores, (B, K, H, W): what TTA averages."""
        out = self.predict(images)
        return out.float().softmax(1) if self.output_kind == "logits" else out


def build_model(cfg: ModelConfig) -> Segmenter:
    """The :class:`Segmenter` of a config made by :func:`~semask.models.base.model_config_class`.

    Raises:
        ValueError, TypeError: invalid field values.
    """
    backbone_part = BACKBONES[cfg.backbone_name]
    decoder_part = DECODERS[cfg.decoder_name]
    backbone = backbone_part.build(cfg.part(backbone_part.config), cfg.num_prior_classes or cfg.num_classes)
    decoder, criterion, prior = decoder_part.build(
        cfg.part(decoder_part.config), backbone.channels, backbone.strides, cfg.num_classes
    )
    return Segmenter(backbone, decoder, prior, criterion, cfg)


def compose(
    arch: str, backbone: str, decoder: str, defaults: dict[str, Any], fields: dict[str, Any]
) -> Segmenter:
    """Build ``arch`` = (``backbone``, ``decoder``) with ``fields`` over the entrypoint's ``defaults``.

    Raises:
        TypeError: a field the pair's config does not have (the message lists the fields).
    """
    cls = model_config_class(backbone, decoder)
    return build_model(cls.from_dict({"arch": arch} | defaults | fields))
