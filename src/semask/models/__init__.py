"""Whole segmentation models: the :class:`~semask.models.segmenter.Segmenter` and the registered architectures.

Importing this package registers every backbone, decoder and architecture.
"""

from semask.backbones import mit, swin  # noqa: F401  (register the backbones)
from semask.decoders import segformer_head, semantic_fpn  # noqa: F401  (register the decoders)
from semask.decoders.base import SegOutput
from semask.decoders.maskformer import head  # noqa: F401
from semask.models import small, zoo  # noqa: F401  (register the architectures)
from semask.models.base import ModelConfig, model_config_class
from semask.models.segmenter import Segmenter, build_model, compose

__all__ = ["ModelConfig", "SegOutput", "Segmenter", "build_model", "compose", "model_config_class"]
