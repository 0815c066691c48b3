"""Explicit conversion of foreign checkpoints into semask weights (DESIGN 'convert/').

Sources:

- ``semask-fpn-mmseg``: official SeMask-FPN release checkpoints -> a whole model (strict load).
- ``mmseg-maskformer``: MMSegmentation 1.x MaskFormer checkpoints (R-50/101-D32, Swin-T/S) -> a whole model.
- ``swin-imagenet``: official Microsoft (or timm-layout) Swin ImageNet checkpoints -> ``backbone.*`` weights for
  a non-strict load (see :func:`load_imagenet_backbone`).
- ``hf``: Hugging Face ``transformers`` folders (``config.json`` + weights) of Mask2Former-Swin, MaskFormer-Swin
  and SegFormer -> a whole model (:mod:`semask.convert.hf`, which also converts back: ``to_hf``).
- ``segformer``: whole SegFormer models (official NVlabs/mmseg or Hugging Face ``nvidia/segformer-b*``).
- ``mit-imagenet``: MiT ImageNet weights (NVlabs ``mit_b*.pth`` or Hugging Face ``nvidia/mit-b*``) ->
  ``backbone.*`` weights of a SeMask-MiT model.
- ``resnet-imagenet``: torchvision ImageNet ResNet-50/101 (``resnet50-*.pth``) -> ``backbone.*`` weights of a
  ResNet model.
"""

import logging
from pathlib import Path

import torch
from torch import nn

from semask.convert import hf, mit, mmseg_maskformer, resnet, semask_d2, semask_fpn_mmseg, swin_official
from semask.data.meta import get_meta
from semask.errors import ConfigError
from semask.models.base import ModelConfig
from semask.weights import KeyReport, read_checkpoint, save_weights, write_safetensors
from semask.weights.keys import compare_keys

logger = logging.getLogger("semask.convert")

SOURCES = {
    "semask-fpn-mmseg": semask_fpn_mmseg.convert,
    "semask-m2f-d2": semask_d2.convert_m2f,
    "semask-maskformer-d2": semask_d2.convert_maskformer,
    "semask-fapn-d2": semask_d2.convert_fapn,
    "semask-msfapn-d2": semask_d2.convert_msfapn,
    "mask2former-d2": semask_d2.convert_m2f,  # original Mask2Former model zoo (.pkl): no semantic layers
    "maskformer-d2": semask_d2.convert_maskformer,
    "swin-imagenet": swin_official.convert,
    "segformer": mit.convert_segformer,
    "mit-imagenet": mit.convert_mit_backbone,
    "mmseg-maskformer": mmseg_maskformer.convert,
    "hf": hf.convert,
    "resnet-imagenet": resnet.convert,
}
BACKBONE_SOURCES = ("swin-imagenet", "mit-imagenet", "resnet-imagenet")
"""Sources that give backbone weights only (written without a model sidecar)."""
IMAGENET_WEIGHTS = {name: (module.imagenet_state_dict, module.is_imagenet_key) for name, module in (
    ("swin", swin_official), ("mit", mit), ("resnet", resnet))}  # fmt: skip
"""Per registered backbone: (checkpoint, model config) -> its ``backbone.*`` ImageNet weights, and the predicate of
the model keys those weights must cover (``train.pretrained``)."""


def load_imagenet_backbone(model: nn.Module, path: str | Path) -> KeyReport:
    """Load ImageNet weights into ``model.backbone`` (``train.pretrained``), mapped by the converter of its
    backbone (:data:`IMAGENET_WEIGHTS`); a non-strict load, the rest of the model keeps its init.

    Returns:
        The key report (``not_loaded``: model keys left at their init, e.g. semantic layers and decoder).

    Raises:
        ConfigError: no ImageNet weights converter for this backbone.
        CheckpointError: unreadable file, any unmapped checkpoint key, a required backbone key missing or of
            another shape (e.g. another size or depth).
    """
    backbone = model.cfg.backbone_name
    if backbone not in IMAGENET_WEIGHTS:
        raise ConfigError(
            f"no ImageNet weights loader for backbone {backbone!r}; have {sorted(IMAGENET_WEIGHTS)}"
        )
    to_state_dict, required = IMAGENET_WEIGHTS[backbone]
    sd = to_state_dict(read_checkpoint(path), model.cfg)
    report = compare_keys(sd, {k: v.shape for k, v in model.state_dict().items()}, required)
    report.raise_if_bad(f"{path}")
    model.load_state_dict(sd, strict=False)
    logger.info(
        "loaded %d ImageNet tensors from %s; %d model tensors keep their init",
        len(sd),
        path,
        len(report.not_loaded),
    )
    return report


def convert_checkpoint(
    source: str,
    state_dict_or_ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert a loaded checkpoint of format ``source`` (a key of :data:`SOURCES`).

    Args:
        source: a key of :data:`SOURCES`.
        state_dict_or_ckpt: the loaded checkpoint (wrapped or bare state dict).
        semantic_attention: 4 x ``"window"``/``"global"``; default: the official FPN rule (SPEC A1). Never
            guessed from keys.
        num_classes: head classes K (mmseg: checked against the weights; swin-imagenet: of the returned config).
        window_size: Swin window M (mmseg: checked; swin-imagenet: tables are bicubically resized to it).
        sem_window_size: semantic window (not stored in weights); default: the Swin window.

    Returns:
        ``(cfg, state_dict)``; see the source modules for what the state dict covers.

    Raises:
        ConfigError: unknown source or a malformed ``semantic_attention``.
        CheckpointError: the checkpoint does not fit (every unmapped, missing and mismatched key is listed).
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown checkpoint source {source!r}; choose from {sorted(SOURCES)}")
    if semantic_attention is not None:
        semantic_attention = tuple(semantic_attention)
        if len(semantic_attention) != 4 or set(semantic_attention) - {"window", "global"}:
            raise ConfigError(f"semantic_attention needs 4 of 'window'/'global', got {semantic_attention!r}")
    return SOURCES[source](
        state_dict_or_ckpt,
        semantic_attention=semantic_attention,
        num_classes=num_classes,
        window_size=window_size,
        sem_window_size=sem_window_size,
    )


DATASET_OF_CLASSES = {150: "ade20k", 19: "cityscapes", 171: "coco-stuff-10k"}
"""The dataset whose class names a converted official model gets by default, by its number of classes."""


def convert_file(
    src_path: str | Path, dst_path: str | Path, source: str, dataset: str | None = None, **kwargs
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read ``src_path``, convert it, write ``dst_path`` (``.safetensors``).

    Whole models are written with their sidecar ``.json`` (:func:`semask.weights.save_weights`: config, class
    names and palette, mean/std, source), readable with :func:`semask.load`. The :data:`BACKBONE_SOURCES` write
    only the ``backbone.*`` weights, for :func:`load_imagenet_backbone` (the model's own config decides the rest).

    Args:
        dataset: whose class names and palette the sidecar records (:func:`semask.data.meta.get_meta`); default:
            by the number of classes (:data:`DATASET_OF_CLASSES`), none for other counts.
        kwargs: the keyword options of :func:`convert_checkpoint`.

    Returns:
        ``(cfg, state_dict)`` as :func:`convert_checkpoint`.

    Raises:
        CheckpointError, ConfigError: as :func:`read_checkpoint` and :func:`convert_checkpoint`.
    """
    if source == "hf":  # a folder: config.json (class names in id2label) + weights
        return hf.convert_dir(src_path, dst_path, dataset, **kwargs)
    cfg, sd = convert_checkpoint(source, read_checkpoint(src_path), **kwargs)
    if source in BACKBONE_SOURCES:
        write_safetensors(sd, dst_path)
        return cfg, sd
    dataset = dataset or DATASET_OF_CLASSES.get(cfg.num_classes)
    meta = None if dataset is None else get_meta(dataset)
    if meta is not None and meta.num_classes != cfg.num_classes:
        raise ConfigError(
            f"--dataset {dataset} has {meta.num_classes} classes but the weights {cfg.num_classes}"
        )
    save_weights(
        cfg.to_dict(),
        sd,
        dst_path,
        classes=None if meta is None else meta.classes,
        palette=None if meta is None else meta.palette,
        source=f"{Path(src_path).name} (semask convert --from {source})",
        dataset=dataset,
    )
    return cfg, sd


__all__ = [
    "SOURCES",
    "KeyReport",
    "convert_checkpoint",
    "convert_file",
    "load_imagenet_backbone",
    "read_checkpoint",
]
