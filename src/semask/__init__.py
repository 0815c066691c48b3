"""semask: SeMask (Jain et al., 2021) semantic segmentation in pure PyTorch."""

from semask.convert import convert_checkpoint, convert_file, load_imagenet_backbone
from semask.engine.inference import InferenceCfg, Predictor
from semask.layers.impl import get_impl, set_impl, use_impl
from semask.models import semask_fpn, semask_m2f  # noqa: F401  (register the FPN and M2F/MaskFormer architectures)
from semask.models.segmenter import SegOutput, SeMaskFPN, SeMaskFPNConfig
from semask.models.semask_m2f import SeMaskM2F, SeMaskM2FConfig
from semask.pretrained import load_model, save_model
from semask.registry import create_model, list_models

__version__ = "0.1.0"

__all__ = ["SeMaskFPN", "SeMaskFPNConfig", "SegOutput", "create_model", "list_models", "__version__"]
__all__ += ["convert_checkpoint", "convert_file", "load_imagenet_backbone", "load_model", "save_model"]
__all__ += ["get_impl", "set_impl", "use_impl", "InferenceCfg", "Predictor", "SeMaskM2F", "SeMaskM2FConfig"]
