"""Official Microsoft Swin ImageNet checkpoints (and timm's layout) -> the ``backbone.*`` keys of a semask model.

Input (SPEC A4): ``torch.load(f)['model']`` with ``patch_embed.*``, ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``
at the end of stage i, ``norm.*``, ``head.*`` and ``attn_mask`` / ``relative_position_index`` buffers. timm stores the
downsample at the start of the next stage (``layers.{i+1}.downsample``) and the head as ``head.fc``. The loading
reproduces the official FPN path (``mmcv_custom/checkpoint.py``): bicubic resize of the relative-position tables to
the model window, then a non-strict load that leaves the semantic layers, ``norm0-3`` and the head at their init.
"""

import logging
import re

import torch

from semask.convert._rules import (
    Rule,
    pop_relative_position_index,
    rename,
    resize_relative_position_tables,
    unwrap_state_dict,
    window_from_table,
)
from semask.errors import CheckpointError
from semask.models.base import ModelConfig
from semask.models.zoo import SeMaskFPNConfig, official_semantic_layout
from semask.weights.keys import compare_keys, meta_shapes

logger = logging.getLogger("semask.convert")

_DROP = re.compile(r"^(head|norm)\.|\.attn_mask$")
_SWIN_KEY = re.compile(r"^backbone\.(patch_embed|layers\.\d+\.(blocks|downsample))\.")


def infer_swin_arch(sd: dict[str, torch.Tensor], prefix: str = "") -> dict:
    """Swin hyperparameters read from weight shapes (keys under ``prefix``).

    Returns:
        ``embed_dim`` (patch_embed.proj rows), ``depths`` (blocks per stage), ``num_heads``
        (relative-position-table columns), ``window_size`` (table rows = (2M-1)^2) and ``mlp_ratio``.

    Raises:
        CheckpointError: a key needed for the inference is absent, or the stages are not 0-3.
    """

    def shape(key: str) -> torch.Size:
        if prefix + key not in sd:
            raise CheckpointError(f"not a Swin checkpoint: it has no {prefix + key!r}")
        return sd[prefix + key].shape

    block = re.compile(re.escape(prefix) + r"layers\.(\d+)\.blocks\.(\d+)\.")
    depth_of: dict[int, int] = {}
    for key in sd:
        if m := block.match(key):
            depth_of[int(m[1])] = max(depth_of.get(int(m[1]), 0), int(m[2]) + 1)
    if sorted(depth_of) != [0, 1, 2, 3]:
        raise CheckpointError(f"expected Swin stages 0-3 with blocks, found stages {sorted(depth_of)}")
    tables = [shape(f"layers.{i}.blocks.0.attn.relative_position_bias_table") for i in range(4)]
    embed_dim = shape("patch_embed.proj.weight")[0]
    return dict(
        embed_dim=embed_dim,
        depths=tuple(depth_of[i] for i in range(4)),
        num_heads=tuple(t[1] for t in tables),
        window_size=window_from_table(
            tables[0][0], f"{prefix}layers.0.blocks.0.attn.relative_position_bias_table"
        ),
        mlp_ratio=shape("layers.0.blocks.0.mlp.fc1.weight")[0] / embed_dim,
    )


def _rules(sd: dict[str, torch.Tensor]) -> list[Rule]:
    """Prefix ``backbone.``; for timm's layout first move the downsample back to the end of stage i."""
    rules: list[Rule] = [(r"^", "backbone.")]
    if "layers.0.downsample.reduction.weight" not in sd and "layers.1.downsample.reduction.weight" in sd:
        rules.insert(0, (r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample."))
    return rules


def convert_state_dict(
    sd: dict[str, torch.Tensor], window_size: int | None = None
) -> dict[str, torch.Tensor]:
    """Rename a Swin ImageNet state dict to ``backbone.*`` keys and resize its tables to ``window_size``.

    Drops ``head.*``, ``norm.*``, ``attn_mask`` and (after checking it) ``relative_position_index``.

    Args:
        sd: unwrapped state dict (MS, timm, MoBY ``encoder.`` or already-converted ``backbone.`` layout).
        window_size: target window; ``None`` keeps the checkpoint's.

    Raises:
        CheckpointError: not a Swin checkpoint, or a non-standard ``relative_position_index``.
    """
    sd = {k: v for k, v in rename(sd, [(r"^(backbone|encoder)\.", "")]).items() if not _DROP.search(k)}
    sd = rename(sd, _rules(sd))
    source_window = infer_swin_arch(sd, "backbone.")["window_size"]
    pop_relative_position_index(sd, source_window)
    resized = resize_relative_position_tables(sd, window_size or source_window)
    if resized:
        logger.info(
            "resized %d relative-position tables from window %d to %d",
            len(resized),
            source_window,
            window_size,
        )
    return sd


def convert(
    ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[SeMaskFPNConfig, dict[str, torch.Tensor]]:
    """Convert a Swin ImageNet checkpoint for a SeMask-FPN model of the same Swin size.

    Args:
        ckpt: ``{'model': state_dict}`` or a bare state dict.
        semantic_attention: per-stage layout of the returned config (default: official FPN rule).
        num_classes: K of the returned config (default 150).
        window_size: model window; tables are bicubically resized to it (default: the checkpoint's).
        sem_window_size: semantic window of the returned config (default: ``window_size``).

    Returns:
        ``(cfg, sd)``: the config the backbone weights are meant for, and the ``backbone.*`` Swin weights,
        which cover every Swin block key of ``build_model(cfg)`` (load them with ``strict=False``, or use
        :func:`load_imagenet_backbone`).

    Raises:
        CheckpointError: unmapped checkpoint keys, missing Swin keys or shape mismatches (all listed).
    """
    sd = convert_state_dict(unwrap_state_dict(ckpt), window_size)
    arch = infer_swin_arch(sd, "backbone.")
    num_classes = num_classes or 150
    cfg = SeMaskFPNConfig(
        arch="semask_swin_fpn",
        **arch,
        sem_window_size=sem_window_size or arch["window_size"],
        num_classes=num_classes,
        semantic_attention=semantic_attention or official_semantic_layout(arch["embed_dim"], num_classes),
    )
    compare_keys(sd, meta_shapes(cfg), _SWIN_KEY.match).raise_if_bad("swin-imagenet checkpoint")
    return cfg, sd


def imagenet_state_dict(ckpt: dict, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Swin ImageNet weights (official ``.pth``, timm layout, or a ``--from swin-imagenet`` output) -> the
    ``backbone.*`` keys of the model of ``cfg``, relative-position tables resized to ``cfg.window_size`` (the
    official FPN init, SPEC 0 'Init', A4). Every Swin block key is required (``is_imagenet_key``); semantic
    layers, ``norm0-3`` and the decoder keep their init.

    Raises:
        CheckpointError: a table of a non-square window.
    """
    return convert_state_dict(unwrap_state_dict(ckpt), cfg.window_size)


is_imagenet_key = _SWIN_KEY.match
"""The model keys that Swin ImageNet weights must cover."""
