"""Typed experiment configuration (dataclasses). Presets are Python functions; JSON is only a dump."""

import ast
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semask.errors import ConfigError
from semask.hardware import Amp
from semask.metrics import Metric


@dataclass
class ModelCfg:
    """Which network to build. ``pretrained``: ImageNet Swin checkpoint (official MS ``.pth`` or converted).

    ``dropout``, ``sem_drop`` and ``decoder_channels`` left at None keep the architecture's default: ``dropout`` is
    the Dropout2d before the FPN classifier (0.1) or the transformer dropout of the mask decoders (Mask2Former 0.0,
    MaskFormer 0.1); ``sem_drop`` the dropout in the semantic attention (0.1); ``decoder_channels`` the
    Semantic-FPN width (FPN architectures only).
    """

    arch: str = "semask_swin_tiny_fpn"
    num_classes: int = 150
    pretrained: str | None = None
    drop_path_rate: float = 0.3
    dropout: float | None = None
    sem_drop: float | None = None
    decoder_channels: int | None = None
    use_checkpoint: bool = False


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
    test_scale: tuple[int, int] | None = (2048, 512)
    unknown_label: str = "error"
    num_workers: int = 2


@dataclass
class OptimCfg:
    """AdamW. ``param_rules="mmseg"``: no weight decay for names containing ``norm``,
    ``relative_position_bias_table`` or ``absolute_pos_embed`` (mmcv custom_keys); ``"d2"``: no weight decay for
    normalisation layers, ``nn.Embedding``, the position tables and embeddings, and the learning rate of every
    ``backbone.*`` parameter times ``backbone_lr_mult`` (detectron2 ``build_optimizer``, SPEC A3 'D2').
    ``grad_clip``: max L2 norm of all gradients together (full-model clipping), None = off."""

    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None
    param_rules: str = "mmseg"
    backbone_lr_mult: float = 1.0


@dataclass
class TrainCfg:
    """Iteration-based schedule: linear warmup then poly decay (mmcv ``PolyLrUpdaterHook``)."""

    max_iters: int = 80000
    batch_size: int = 16
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    amp: Amp = "none"  # semask.hardware.amp_decision
    cate_weight: float = 0.4
    ohem_min_kept: int | None = None
    class_weight: tuple[float, ...] | None = None
    eval_interval: int = 8000
    ckpt_interval: int = 8000
    log_interval: int = 50
    seed: int = 0
    max_nonfinite: int = 0


@dataclass
class EvalCfg:
    """Inference during evaluation: ``whole`` or ``slide`` (crop, stride in pixels), optional ms+flip TTA.

    TTA scales are ``data.test_scale`` x ``tta_ratios`` (mmseg ``aug_test``), or the explicit (long, short) bounds
    ``tta_scales`` (detectron2 ``TEST.AUG``: shortest-edge sizes with a fixed max size).

    ``metric``: the official evaluator whose semantics the scores follow (:mod:`semask.metrics`): ``mmseg``
    (SeMask-FPN presets) or ``detectron2`` (``SemSegEvaluator``: Mask2Former / MaskFormer / FaPN presets), which
    differ in the IoU of a class absent from every label map.
    """

    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    tta_ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    tta_scales: tuple[tuple[int, int], ...] | None = None
    batch_size: int = 1
    metric: Metric = "mmseg"


@dataclass
class ExperimentCfg:
    name: str = ""
    model: ModelCfg = field(default_factory=ModelCfg)
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
        cfg = cls(name=d.get("name", ""))
        for section, values in d.items():
            if section == "name":
                continue
            for key, value in values.items():
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
    hints = typing.get_type_hints(type(section))
    if parts[1] not in hints:
        raise ConfigError(f"unknown config key {key!r}; fields of {parts[0]}: {sorted(hints)}")
    setattr(section, parts[1], _check(value, hints[parts[1]], key))


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
