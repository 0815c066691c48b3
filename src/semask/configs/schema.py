"""Typed experiment configuration (dataclasses). Presets are Python functions; JSON is only a dump."""

import ast
import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semask.errors import ConfigError
from semask.hardware import Amp
from semask.metrics import Metric


@dataclass
class DataCfg:
    """Dataset and train/test pipelines (SPEC A3). Sizes are (height, width); ``scale`` is mmseg's
    ``img_scale`` (long side, short side) for keep-ratio resizing.

    detectron2 recipes set ``short_edges`` (ResizeShortestEdge 'choice': the short side is drawn from the list,
    the long side capped at ``max_size``; replaces ``scale`` x ratio) and ``image_pad_value`` 128 (raw pixels
    padded before normalisation; None = mmseg's 0 after normalisation).
    """

    dataset: str = "ade20k"
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratios: tuple[float, ...] | None = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    ratio_range: tuple[float, float] | None = None
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    short_edges: tuple[int, ...] | None = None
    max_size: int = 0
    image_pad_value: int | None = None
    unknown_label: str = "error"
    num_workers: int = 2


@dataclass
class OptimCfg:
    """AdamW. ``param_rules="mmseg"``: no weight decay for names containing ``norm``,
    ``relative_position_bias_table`` or ``absolute_pos_embed`` (mmcv custom_keys); ``"d2"``: no weight decay for
    normalisation layers, ``nn.Embedding``, the position tables and embeddings, and the learning rate of every
    ``backbone.*`` parameter times ``backbone_lr_mult`` (detectron2 ``build_optimizer``, SPEC A3 'D2');
    ``"mmseg-maskformer"`` / ``"none"``: the mmseg 1.x MaskFormer Swin / ResNet rules (:mod:`semask.engine.optim`).
    ``decoder_lr_mult``: the learning rate of every other parameter (decoder, criterion) times this (SegFormer's
    mmcv ``custom_keys={'head': dict(lr_mult=10.)}``, official NVlabs ``local_configs/segformer/*``).
    ``grad_clip``: max L2 norm of all gradients together (full-model clipping), None = off."""

    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None
    param_rules: str = "mmseg"
    backbone_lr_mult: float = 1.0
    decoder_lr_mult: float = 1.0


@dataclass
class TrainCfg:
    """Iteration-based schedule: linear warmup then poly decay (mmcv ``PolyLrUpdaterHook``).

    ``pretrained``: ImageNet backbone weights to start from (official Microsoft Swin ``.pth`` or converted, see
    :func:`semask.convert.load_imagenet_backbone`). ``cate_weight``, ``ohem_min_kept``, ``class_weight``: the loss
    settings every model's ``losses`` receives (:class:`semask.losses.base.LossSettings`; the mask heads' loss and
    matching-cost weights are ``model`` fields). ``poly_after_warmup``: the poly decay starts after the warmup
    (mmengine ``LinearLR`` + ``PolyLR(begin=warmup_iters)``) instead of spanning the whole schedule (mmcv).
    """

    max_iters: int = 80000
    batch_size: int = 16
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    amp: Amp = "none"  # semask.hardware.amp_decision
    pretrained: str | None = None
    cate_weight: float = 0.4
    ohem_min_kept: int | None = None
    class_weight: tuple[float, ...] | None = None
    eval_interval: int = 8000
    ckpt_interval: int = 8000
    log_interval: int = 50
    seed: int = 0
    max_nonfinite: int = 0
    poly_after_warmup: bool = False


@dataclass
class InferenceCfg:
    """How to turn an image into class probabilities.

    Attributes:
        mode: ``whole`` or ``slide``.
        crop, stride: slide window and step (h, w) in pixels; positive, stride <= crop in each dimension (as in
            mmseg ``slide_inference``, which asserts that the windows cover every pixel).
        scale: keep-ratio test scale (long, short) or None to infer at the original size. FPN models: mmcv
            ``imrescale`` to that bound; mask-classification models: detectron2 ``ResizeShortestEdge(short,
            max_size=long)``.
        tta_ratios: scale ratios for ms TTA (``(1.0,)`` = single scale).
        tta_scales: explicit keep-ratio (long, short) bounds of the TTA passes, replacing ``scale`` x ratios
            (detectron2 ``TEST.AUG``: short sides ``MIN_SIZES`` with long side at most ``MAX_SIZE``).
        flip: add horizontally flipped passes.
        amp: ``none`` | ``auto`` | ``bf16`` | ``fp16`` (:func:`semask.hardware.amp_decision`).

    Raises:
        ConfigError: an unknown mode, a non-positive crop or stride, or a stride larger than the crop (also
            checked again when inference starts, after any change of the fields).
    """

    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    scale: tuple[int, int] | None = None
    tta_ratios: tuple[float, ...] = (1.0,)
    tta_scales: tuple[tuple[int, int], ...] | None = None
    flip: bool = False
    amp: Amp = "none"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError unless ``mode`` is whole/slide and the slide window and step are valid."""
        if self.mode not in ("whole", "slide"):
            raise ConfigError(f"inference mode must be 'whole' or 'slide', got {self.mode!r}")
        check_window(self.crop, self.stride)

    def single_scale(self) -> "InferenceCfg":
        """These settings without TTA: one pass at ``scale``, no flip."""
        return dataclasses.replace(self, tta_ratios=(1.0,), tta_scales=None, flip=False)


def check_window(crop: tuple[int, int], stride: tuple[int, int]) -> None:
    """Raise ConfigError unless crop and stride are two positive (h, w) sizes with stride <= crop."""
    if len(crop) != 2 or len(stride) != 2 or min(*crop, *stride) <= 0:
        raise ConfigError(
            f"slide crop {tuple(crop)} and stride {tuple(stride)} must be two positive sizes (h, w)"
        )
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ConfigError(
            f"slide stride {tuple(stride)} is larger than the crop {tuple(crop)}: the windows would leave pixels "
            "uncovered (mmseg slide_inference asserts full coverage); use a stride <= crop"
        )


@dataclass
class EvalCfg(InferenceCfg):
    """The preset's test settings: an :class:`InferenceCfg` whose TTA fields hold the official ms(+flip) passes
    (``semask eval --tta ms-flip``; training validation and plain ``semask eval`` run :meth:`single_scale`), plus
    ``metric``: the official evaluator the scores follow (:mod:`semask.metrics`): ``mmseg`` (SeMask-FPN presets)
    or ``detectron2`` (``SemSegEvaluator``: Mask2Former / MaskFormer / FaPN presets), which differ in the IoU of a
    class absent from every label map. TTA scales are ``scale`` x ``tta_ratios`` (mmseg ``aug_test``) or the
    explicit bounds ``tta_scales`` (detectron2 ``TEST.AUG``).
    """

    scale: tuple[int, int] | None = (2048, 512)
    tta_ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    metric: Metric = "mmseg"


def default_model() -> dict[str, Any]:
    return {"arch": "semask_swin_tiny_fpn", "num_classes": 150}


@dataclass
class ExperimentCfg:
    """A whole experiment. ``model`` is ``{"arch": ..., **fields}``: a registered architecture and the config fields
    that differ from its defaults (``semask.create_model(arch, **fields)``), checked against the arch's own config
    dataclass when set."""

    name: str = ""
    model: dict[str, Any] = field(default_factory=default_model)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        """Write the resolved config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentCfg":
        """Inverse of :meth:`to_dict`, type-checked. Raises ConfigError on unknown keys or wrong types."""
        model = d.get("model", default_model())
        if not isinstance(model, dict) or "arch" not in model:
            raise ConfigError(f"model: expected {{'arch': ..., **fields}}, got {model!r}")
        cfg = cls(name=d.get("name", ""), model={})
        set_value(cfg, "model.arch", model["arch"])
        for section, values in d.items():
            if section == "name":
                continue
            for key, value in values.items():
                if (section, key) != ("model", "arch"):
                    set_value(cfg, f"{section}.{key}", value)
        return cfg


def _check(value: Any, tp: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arm in typing.get_args(tp):
            if arm is type(None):
                continue
            try:
                return _check(value, arm, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a tuple, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_check(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def set_value(cfg: ExperimentCfg, key: str, value: Any) -> None:
    """Set ``section.field`` to ``value`` after type-checking it against the dataclass annotation."""
    parts = key.split(".")
    if len(parts) != 2 or not hasattr(cfg, parts[0]) or parts[0] == "name":
        raise ConfigError(
            f"unknown config key {key!r}; use section.field with sections model/data/optim/train/eval"
        )
    section = getattr(cfg, parts[0])
    if parts[0] == "model":
        hints = model_field_types(value if parts[1] == "arch" else cfg.model["arch"], key)
    else:
        hints = typing.get_type_hints(type(section))
    if parts[1] not in hints:
        raise ConfigError(f"unknown config key {key!r}; fields of {parts[0]}: {sorted(hints)}")
    value = _check(value, hints[parts[1]], key)
    if parts[0] == "model":
        section[parts[1]] = value
    else:
        setattr(section, parts[1], value)


@functools.cache
def _config_class(arch: str) -> type:
    from semask.registry import create_model

    with torch.device("meta"):
        return type(create_model(arch).cfg)


def model_field_types(arch: Any, key: str) -> dict[str, Any]:
    """The annotated fields of registered architecture ``arch``'s config dataclass (built once on the meta device).

    Raises:
        ConfigError: ``arch`` is not a registered architecture (``key`` names the setting).
    """
    from semask.registry import list_models

    if not isinstance(arch, str) or arch not in list_models():
        raise ConfigError(f"{key}: {arch!r} is not a registered architecture (see `semask list`)")
    cls = _config_class(arch)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(cfg: ExperimentCfg, overrides: list[str]) -> ExperimentCfg:
    """Apply ``key=value`` strings (values parsed with ``ast.literal_eval``; bare words are strings)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        set_value(cfg, key.strip(), value)
    return cfg
