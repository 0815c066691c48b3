"""Official SeMask-FPN release checkpoints (mmcv ``save_checkpoint``) -> a strict-loading semask model.

Input (SPEC A4): ``{'meta': ..., 'state_dict': {backbone.*, decode_head.*}}`` from ``SeMask-FPN`` (mmseg 0.11 fork).
Our module names equal the official keys, so the only changes are: strip ``module.``, check and drop the
``relative_position_index`` buffers (non-persistent here). The architecture is read from the weight shapes; the
semantic-attention layout cannot be (windowed and global blocks have identical keys), so it follows the official
FPN rule unless given (SPEC 0).
"""

import logging
import re

import torch

from semask.convert._rules import (
    check_requested,
    pop_relative_position_index,
    unwrap_state_dict,
)
from semask.convert.swin_official import infer_swin_arch
from semask.errors import CheckpointError
from semask.models.zoo import SeMaskFPNConfig, official_semantic_layout
from semask.weights.keys import compare_keys, meta_shapes

logger = logging.getLogger("semask.convert")

_SEM_BLOCK = re.compile(r"^backbone\.layers\.0\.semantic_layer\.class_injection\.(\d+)\.")
_PRIOR_Q = "backbone.layers.0.semantic_layer.class_injection.0.mlp_cls_q.weight"
_HEAD = "decode_head.conv_seg.weight"


def infer_config(
    sd: dict[str, torch.Tensor],
    semantic_attention: tuple[str, ...] | None = None,
    sem_window_size: int | None = None,
) -> SeMaskFPNConfig:
    """The :class:`SeMaskFPNConfig` of an official SeMask-FPN state dict.

    Read from shapes: Swin size (:func:`infer_swin_arch`), prior classes K' (``mlp_cls_q`` rows), head classes K
    (``conv_seg`` rows), decoder width (``conv_seg`` columns), N_S (``class_injection`` blocks) and lambda
    (``gamma`` present). Without any ``semantic_layer`` key the result is the plain Swin FPN baseline.

    Args:
        sd: unwrapped state dict.
        semantic_attention: per-stage ``"window"``/``"global"``; default: the official FPN rule
            ``official_semantic_layout(embed_dim, K')`` (SPEC A1).
        sem_window_size: semantic window (not stored in the weights); default: the Swin window.

    Raises:
        CheckpointError: a key needed for the inference is absent.
    """
    arch = infer_swin_arch(sd, "backbone.")
    if _HEAD not in sd:
        raise CheckpointError(f"not a SeMask-FPN checkpoint: it has no {_HEAD!r}")
    num_classes, channels = sd[_HEAD].shape[:2]
    common = dict(
        **arch,
        sem_window_size=sem_window_size or arch["window_size"],
        num_classes=num_classes,
        decoder_channels=channels,
    )
    if not any(".semantic_layer." in k for k in sd):
        return SeMaskFPNConfig(**common, semantic_attention=None, arch="swin_fpn")
    num_prior = sd[_PRIOR_Q].shape[0] if _PRIOR_Q in sd else num_classes
    if num_prior != num_classes:
        logger.warning(
            "the semantic layers predict %d prior classes but the head %d classes (as the official "
            "COCO-Stuff-10k checkpoints: SPEC A5); keeping both",
            num_prior,
            num_classes,
        )
    return SeMaskFPNConfig(
        **common,
        semantic_attention=semantic_attention or official_semantic_layout(arch["embed_dim"], num_prior),
        num_prior_classes=None if num_prior == num_classes else num_prior,
        num_sem_blocks=1 + max((int(m[1]) for k in sd if (m := _SEM_BLOCK.match(k))), default=0),
        use_gamma=any(k.endswith(".gamma") for k in sd),
        arch="semask_swin_fpn",
    )


def convert(
    ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[SeMaskFPNConfig, dict[str, torch.Tensor]]:
    """Convert an official SeMask-FPN checkpoint; the result loads into ``build_model(cfg)`` with ``strict=True``.

    Args:
        ckpt: mmcv ``{'meta', 'state_dict'}`` or a bare state dict (``module.`` prefixes allowed).
        semantic_attention: see :func:`infer_config`.
        num_classes: if given, checked against the head (``conv_seg`` rows).
        window_size: if given, checked against the relative-position tables (finished segmentation
            checkpoints are not resized).
        sem_window_size: see :func:`infer_config`.

    Returns:
        ``(cfg, sd)`` with the same keys minus the ``relative_position_index`` buffers.

    Raises:
        CheckpointError: a checked setting disagrees with the weights, a ``relative_position_index`` is not
            the standard one, or keys do not fit (every unmapped, missing and mismatched key is listed).
    """
    sd = unwrap_state_dict(ckpt)
    cfg = infer_config(sd, semantic_attention, sem_window_size)
    check_requested(cfg, num_classes=num_classes, window_size=window_size)
    pop_relative_position_index(sd, cfg.window_size)
    compare_keys(sd, meta_shapes(cfg)).raise_if_bad("semask-fpn-mmseg checkpoint")
    return cfg, sd
