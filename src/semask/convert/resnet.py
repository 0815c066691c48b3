"""ImageNet ResNet-50/101 weights -> the ``backbone.*`` keys of a model with the ``resnet`` backbone.

Input: torchvision ``resnet50`` / ``resnet101`` state dicts (``conv1``, ``bn1``, ``layer{1..4}.*``, ``fc.*``;
what mmseg's ``init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')`` loads), or ResNet weights
already under ``backbone.`` (an mmseg / mmcv checkpoint's backbone). Our ResNet keeps torchvision's names, so the
conversion drops the classifier ``fc.*`` and prefixes ``backbone.``; the model's decoder keeps its init (mmseg
loads the backbone non-strictly the same way).
"""

import re

import torch

from semask.convert._rules import Rule, rename, unwrap_state_dict
from semask.errors import CheckpointError
from semask.models.base import ModelConfig, model_config_class
from semask.weights.keys import compare_keys, meta_shapes

_BACKBONE = re.compile(r"^backbone\.")
_ARCH = {(3, 4, 6, 3): "maskformer_r50_d32", (3, 4, 23, 3): "maskformer_r101_d32"}


def infer_resnet_arch(sd: dict[str, torch.Tensor], prefix: str = "backbone.") -> dict:
    """``depths`` (blocks per stage), ``stem_channels`` and ``base_channels`` of a ResNet state dict.

    Raises:
        CheckpointError: no ``conv1`` or not stages ``layer1``..``layer4``.
    """
    layer = re.compile(re.escape(prefix) + r"layer(\d)\.(\d+)\.conv1\.weight$")
    depth_of: dict[int, int] = {}
    for key in sd:
        if m := layer.match(key):
            depth_of[int(m[1])] = max(depth_of.get(int(m[1]), 0), int(m[2]) + 1)
    if prefix + "conv1.weight" not in sd or sorted(depth_of) != [1, 2, 3, 4]:
        raise CheckpointError(f"not a ResNet checkpoint: no {prefix}conv1.weight or stages layer1..layer4")
    return dict(
        depths=tuple(depth_of[i] for i in range(1, 5)),
        stem_channels=sd[prefix + "conv1.weight"].shape[0],
        base_channels=sd[prefix + "layer1.0.conv1.weight"].shape[0],
    )


D2_RESNET_RULES: list[Rule] = [
    (r"^backbone\.stem\.conv1\.norm\.", "backbone.bn1."),
    (r"^backbone\.stem\.", "backbone."),
    (r"^backbone\.res([2-5])\.", lambda m: f"backbone.layer{int(m[1]) - 1}."),
    (r"^(backbone\.layer\d\.\d+)\.shortcut\.norm\.", r"\1.downsample.1."),
    (r"^(backbone\.layer\d\.\d+)\.shortcut\.", r"\1.downsample.0."),
    (r"^(backbone\.layer\d\.\d+)\.conv([1-3])\.norm\.", r"\1.bn\2."),
]
"""detectron2 ``ResNet`` (``build_resnet_backbone``: ``stem.conv1``, ``res2``..``res5``, ``convK.norm``,
``shortcut``) -> torchvision layout, the inverse of detectron2's ``tools/convert-torchvision-to-d2.py``."""


def from_detectron2(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detectron2 model whose backbone is a ResNet (``backbone.stem.conv1.weight``) with the backbone keys in
    torchvision layout (:data:`D2_RESNET_RULES`); other keys, and state dicts of other backbones, unchanged.
    detectron2's ``FrozenBN`` (its default ResNet norm, e.g. the Mask2Former / MaskFormer R-50 model zoo) stores
    no ``num_batches_tracked``: a zero counter is added (unused: the backbone's BatchNorms run in eval mode,
    ``norm_eval``)."""
    sd = rename(sd, D2_RESNET_RULES)
    for key in [k for k in sd if _BACKBONE.match(k) and k.endswith(".running_var")]:
        sd.setdefault(key.replace(".running_var", ".num_batches_tracked"), torch.zeros((), dtype=torch.int64))
    return sd


def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision (bare) or ``backbone.``-prefixed ResNet weights -> ``backbone.*`` without ``fc.*``.

    Raises:
        CheckpointError: not a ResNet state dict.
    """
    sd = rename(sd, [(r"^backbone\.", "")])
    sd = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    infer_resnet_arch(sd)
    return sd


def convert(
    ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert ImageNet ResNet weights for the mmseg MaskFormer model of the same depth.

    Args:
        ckpt: a torchvision state dict (or wrapped in ``state_dict`` / ``model``).
        num_classes: K of the returned config (default 150); the other options do not apply to ResNet.

    Returns:
        ``(cfg, sd)``: the config the weights are meant for and the ``backbone.*`` weights, which cover every
        backbone key of ``build_model(cfg)`` (load with ``strict=False`` or :func:`semask.convert.load_imagenet_backbone`).

    Raises:
        CheckpointError: not a ResNet, or unmapped / missing / mismatched backbone keys (all listed).
    """
    if semantic_attention is not None or window_size is not None or sem_window_size is not None:
        raise CheckpointError("ResNet weights have no semantic layers and no window")
    sd = convert_state_dict(unwrap_state_dict(ckpt))
    arch = infer_resnet_arch(sd)
    cfg = model_config_class("resnet", "mmseg_maskformer")(
        arch=_ARCH.get(arch["depths"], "maskformer_resnet"), num_classes=num_classes or 150, **arch
    )
    compare_keys(sd, meta_shapes(cfg), _BACKBONE.match).raise_if_bad("resnet-imagenet checkpoint")
    return cfg, sd


def imagenet_state_dict(ckpt: dict, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """ImageNet ResNet weights (torchvision ``.pth``, or a ``--from resnet-imagenet`` output) -> ``backbone.*``
    keys; every backbone key is required (``is_imagenet_key``), the decoder keeps its init."""
    return convert_state_dict(unwrap_state_dict(ckpt))


is_imagenet_key = _BACKBONE.match
"""The model keys that ResNet ImageNet weights must cover."""
