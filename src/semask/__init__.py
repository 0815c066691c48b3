"""semask: SeMask (Jain et al., 2021) semantic segmentation in pure PyTorch."""

from semask.convert import convert_checkpoint, convert_file, load_imagenet_backbone
from semask.models import semask_fpn  # noqa: F401  (registers the FPN architectures)
from semask.models.segmenter import SegOutput, SeMaskFPN, SeMaskFPNConfig
from semask.pretrained import load_model, save_model
from semask.registry import create_model, list_models

__version__ = "0.1.0"

__all__ = ["SeMaskFPN", "SeMaskFPNConfig", "SegOutput", "create_model", "list_models", "__version__"]
__all__ += ["convert_checkpoint", "convert_file", "load_imagenet_backbone", "load_model", "save_model"]
