"""Hugging Face ``transformers`` checkpoints <-> semask models, both ways, without importing ``transformers``.

Families: Mask2Former-Swin (``facebook/mask2former-swin-*``) <-> ``swin_m2f``, MaskFormer-Swin
(``facebook/maskformer-swin-*``) <-> ``swin_maskformer`` (plain Swin, no semantic layers: their weights also
initialise a SeMask model non-strictly), SegFormer (``nvidia/segformer-b*``) <-> ``segformer_mit_b*``. A
transformers checkpoint is a folder with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``);
:func:`from_hf` / :func:`to_hf` work on the state dict and the config dict, :func:`read_hf_dir` /
:func:`write_hf_dir` on the folder. ``id2label`` carries the class names both ways.

Key maps: :mod:`semask.convert.hf_mask`, :mod:`semask.convert.hf_segformer` (+ :mod:`semask.convert.mit`);
separate q/k/v projections are fused into our ``qkv`` / ``in_proj`` / ``kv`` and split back.
"""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semask.convert import hf_mask, hf_segformer
from semask.convert._rules import check_requested, pop_relative_position_index
from semask.convert.hf_keys import fuse_qkv, rename_all, split_qkv
from semask.convert.mit import convert_segformer_hf
from semask.data.meta import get_meta
from semask.errors import CheckpointError, ConfigError
from semask.layers.window_attention import relative_position_index
from semask.models.base import ModelConfig, model_config_class
from semask.weights import read_checkpoint, save_weights, write_safetensors
from semask.weights.keys import compare_keys, meta_shapes

logger = logging.getLogger("semask.convert")

FAMILIES = {
    "mask2former": ("swin", "mask2former"),
    "maskformer": ("swin", "maskformer"),
    "segformer": ("mit", "segformer_head"),
}
"""transformers ``model_type`` -> the (backbone, decoder) parts of the semask model."""
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _family(config: dict[str, Any]) -> str:
    family = config.get("model_type")
    if family not in FAMILIES:
        raise ConfigError(
            f"transformers model_type {family!r} is not supported; supported: {sorted(FAMILIES)}"
        )
    return family


def class_names(config: dict[str, Any]) -> list[str] | None:
    """The class names of a transformers config (``id2label`` in index order), None when absent."""
    id2label = config.get("id2label")
    if not id2label:
        return None
    return [id2label[k] for k in sorted(id2label, key=int)]


def _labels(classes: list[str] | None, num_classes: int) -> dict[str, Any]:
    names = list(classes) if classes is not None else [f"LABEL_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for a model of {num_classes} classes")
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _num_classes(sd: dict[str, torch.Tensor], key: str, extra: int, config: dict[str, Any]) -> int:
    if key not in sd:
        raise CheckpointError(f"not a whole transformers {config.get('model_type')} model: it has no {key!r}")
    k = sd[key].shape[0] - extra
    names = class_names(config)
    if names is not None and len(names) != k:
        raise CheckpointError(f"config id2label has {len(names)} classes but {key} predicts {k}")
    return k


def from_hf(
    state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A transformers Mask2Former-Swin, MaskFormer-Swin or SegFormer model -> ``(cfg, state_dict)`` that loads
    strictly into ``semask.models.build_model(cfg)``.

    Args:
        state_dict: the transformers state dict (5.x or 4.x / Hub names).
        config: its ``config.json`` as a dict (``model_type`` selects the family).

    Raises:
        ConfigError: an unsupported family or setting.
        CheckpointError: keys that do not fit (every unmapped, missing and mismatched key is listed), a
            non-standard ``relative_position_index``, a backbone-only checkpoint, or labels that disagree.
    """
    family = _family(config)
    cfg_class = model_config_class(*FAMILIES[family])
    if family == "segformer":
        sd, _ = convert_segformer_hf(state_dict)
        k = _num_classes(sd, "decode_head.linear_pred.weight", 0, config)
        cfg, unmapped = cfg_class.from_dict(hf_segformer.fields_from_hf(config, k)), []
    else:
        renamed = fuse_qkv(rename_all(state_dict, hf_mask.ALIASES[family]))
        unused = hf_mask.SWIN_PREFIX[family] + "layernorm."
        dropped = [key for key in renamed if key.startswith(unused)]
        if dropped:
            logger.info("dropped %s (transformers' Swin final norm, used by no output)", dropped)
        k = _num_classes(renamed, "class_predictor.weight", 1, config)
        cfg = cfg_class.from_dict(hf_mask.fields_from_hf(family, config, k))
        sd, unmapped = {}, []
        for key, value in renamed.items():
            ours = hf_mask.MAPS[family].from_hf(key)
            if ours is not None:
                sd[ours] = value
            elif key not in dropped:
                unmapped.append(key)
        pop_relative_position_index(sd, cfg.window_size)
    report = compare_keys(sd, meta_shapes(cfg), required=lambda key: key != "criterion.empty_weight")
    report.unmapped += unmapped
    report.raise_if_bad(f"transformers {family} checkpoint")
    return cfg, sd


def to_hf(
    model: nn.Module, classes: list[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A plain semask Mask2Former / MaskFormer (Swin) or SegFormer model -> ``(state_dict, config dict)`` of
    transformers' ``Mask2FormerForUniversalSegmentation`` / ``MaskFormerForInstanceSegmentation`` /
    ``SegformerForSemanticSegmentation`` (load with ``load_state_dict(strict=True)``).

    Args:
        model: a :class:`~semask.models.segmenter.Segmenter` built from a config (``model.cfg``).
        classes: class names for ``id2label`` (default ``LABEL_i``).

    Raises:
        ConfigError: a model without config, another family, semantic layers, or settings transformers lacks.
    """
    cfg = getattr(model, "cfg", None)
    parts = None if cfg is None else (cfg.backbone_name, cfg.decoder_name)
    family = next((f for f, p in FAMILIES.items() if p == parts), None)
    if family is None:
        raise ConfigError(f"no transformers counterpart for the parts {parts}; supported: {FAMILIES}")
    own = {k: v.detach() for k, v in model.state_dict().items()}
    if family == "segformer":
        config = hf_segformer.config_to_hf(cfg)
        sd = hf_segformer.split_kv({hf_segformer.MAP.to_hf(k): v for k, v in own.items()})
    else:
        config = hf_mask.config_to_hf(family, cfg)
        sd = rename_all(
            split_qkv({hf_mask.MAPS[family].to_hf(k): v for k, v in own.items()}), hf_mask.DIALECT[family]
        )
        width = cfg.embed_dim * 8
        unused = hf_mask.SWIN_PREFIX[family] + "layernorm."
        sd |= {unused + "weight": torch.ones(width), unused + "bias": torch.zeros(width)}
        if family == "maskformer":  # a persistent buffer in transformers' MaskFormer Swin
            index = relative_position_index(cfg.window_size)
            sd |= {
                k.replace("_bias_table", "_index"): index.clone()
                for k in sd
                if k.endswith(".relative_position_bias_table")
            }
    return sd, config | _labels(classes, cfg.num_classes)


def read_hf_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config)`` of a transformers checkpoint folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``). Raises CheckpointError: not such a folder (the message says what is missing)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a transformers checkpoint folder (no config.json)")
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"{path}: no {' or '.join(WEIGHT_FILES)} (sharded checkpoints: merge them first)"
        )
    return read_checkpoint(weights), json.loads((path / "config.json").read_text())


def write_hf_dir(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into folder ``path`` (``from_pretrained`` reads it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(state_dict, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def convert(
    ckpt: dict[str, Any],
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """:data:`semask.convert.SOURCES` entry ``hf``: ``ckpt`` = ``{"state_dict": ..., "config": ...}``
    (:func:`read_hf_dir`); ``num_classes`` / ``window_size`` are checked against the checkpoint.

    Raises:
        ConfigError: semantic-layer options (transformers models have none). CheckpointError: as :func:`from_hf`.
    """
    if semantic_attention is not None or sem_window_size is not None:
        raise ConfigError("transformers checkpoints have no semantic layers (no --semantic-attention)")
    cfg, sd = from_hf(ckpt["state_dict"], ckpt["config"])
    window = {"window_size": window_size} if hasattr(cfg, "window_size") else {}
    check_requested(cfg, num_classes=num_classes, **window)
    return cfg, sd


def convert_dir(
    src: str | Path, dst: str | Path, dataset: str | None = None, **options
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """``semask convert SRC DST --from hf``: the folder ``src`` -> ``dst`` (``.safetensors`` + sidecar). Class
    names come from ``id2label``, or from ``dataset`` (with its palette) when given.

    Raises:
        ConfigError: ``dataset`` of another class count; as :func:`convert`. CheckpointError: as :func:`from_hf`.
    """
    sd, config = read_hf_dir(src)
    cfg, sd = convert({"state_dict": sd, "config": config}, **options)
    classes, palette = class_names(config), None
    if dataset is not None:
        meta = get_meta(dataset)
        if meta.num_classes != cfg.num_classes:
            raise ConfigError(
                f"--dataset {dataset} has {meta.num_classes} classes but the weights {cfg.num_classes}"
            )
        classes, palette = meta.classes, meta.palette
    save_weights(
        cfg.to_dict(),
        sd,
        dst,
        classes=classes,
        palette=palette,
        source=f"{Path(src).name} (semask convert --from hf)",
        dataset=dataset,
    )
    return cfg, sd
