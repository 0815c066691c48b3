"""semask: SeMask (Jain et al., 2021) semantic segmentation in pure PyTorch.

A model is ``Segmenter(backbone, decoder[, prior_decoder])`` (:mod:`semask.models`), built from the registries
(:mod:`semask.registry`) with :func:`create_model` or loaded from any model file with :func:`load`.
"""

from semask.convert import convert_checkpoint, convert_file, load_imagenet_backbone
from semask.engine.inference import InferenceCfg, Predictor
from semask.layers.impl import get_impl, set_impl, use_impl
from semask.losses.base import LossSettings
from semask.models import ModelConfig, Segmenter, SegOutput, build_model, compose
from semask.registry import create_model, list_models
from semask.weights import load, save_model

__version__ = "0.2.0"

__all__ = ["ModelConfig", "SegOutput", "Segmenter", "build_model", "compose", "create_model", "list_models"]
__all__ += [
    "load",
    "save_model",
    "convert_checkpoint",
    "convert_file",
    "load_imagenet_backbone",
    "LossSettings",
]
__all__ += ["get_impl", "set_impl", "use_impl", "InferenceCfg", "Predictor", "__version__"]
