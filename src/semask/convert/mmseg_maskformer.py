"""MMSegmentation 1.x MaskFormer checkpoints (ResNet-50/101-D32, Swin-T/S) -> strict-loading semask models
(torchvision ImageNet ResNet weights: :mod:`semask.convert.resnet`).

Input: mmengine ``{'meta', 'state_dict': {backbone.*, decode_head.*}}`` (or a bare state dict). The
``decode_head.*`` and the ResNet ``backbone.*`` keys equal ours. The mmseg Swin keys are renamed to the
:class:`~semask.backbones.swin.SeMaskSwin` layout (``patch_embed.projection`` -> ``patch_embed.proj``,
``stages.i`` -> ``layers.i``, ``attn.w_msa.*`` -> ``attn.*``, ``ffn.layers.0.0`` / ``ffn.layers.1`` ->
``mlp.fc1`` / ``mlp.fc2``), the ``relative_position_index`` buffers are checked and dropped, and the PatchMerging
``norm`` / ``reduction`` are permuted: mmseg's ``nn.Unfold(2, 2)`` orders the 4C vector channel-major
(``c*4 + kh*2 + kw``), ours as the original Swin, ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` blocks of C. LayerNorm over
the 4C vector commutes with the permutation, so the converted model computes exactly the same function.

The architecture is read from the shapes; the decoder head count is not in the weights (default 8, the configs').
"""

import re

import torch

from semask.convert._rules import (
    Rule,
    check_requested,
    pop_relative_position_index,
    rename,
    unwrap_state_dict,
)
from semask.convert.resnet import infer_resnet_arch
from semask.convert.swin_official import infer_swin_arch
from semask.errors import CheckpointError
from semask.models.base import ModelConfig, model_config_class
from semask.weights.keys import compare_keys, meta_shapes

SWIN_RULES: list[Rule] = [
    (r"^backbone\.patch_embed\.projection\.", "backbone.patch_embed.proj."),
    (r"^backbone\.stages\.(\d+)\.", r"backbone.layers.\1."),
    (r"^(backbone\..*)\.attn\.w_msa\.", r"\1.attn."),
    (r"^(backbone\..*)\.ffn\.layers\.0\.0\.", r"\1.mlp.fc1."),
    (r"^(backbone\..*)\.ffn\.layers\.1\.", r"\1.mlp.fc2."),
]
_MERGE = re.compile(r"^backbone\.layers\.\d+\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)$")
_SWIN_ARCH = {
    (96, (2, 2, 6, 2), (3, 6, 12, 24), 7): "maskformer_swin_t",
    (96, (2, 2, 18, 2), (3, 6, 12, 24), 7): "maskformer_swin_s",
}
_DEC_LAYER = re.compile(r"^decode_head\.transformer_decoder\.layers\.(\d+)\.")


def unfold_to_swin_order(channels: int) -> torch.Tensor:
    """Index ``p`` with ``ours[..., j] = mmseg[..., p[j]]`` for a PatchMerging 4C vector (C = ``channels``).

    Ours: block b in [(0,0), (1,0), (0,1), (1,1)] (kh, kw) times C; mmseg: ``c*4 + kh*2 + kw``.
    """
    blocks = torch.tensor([0, 2, 1, 3])  # (kh*2 + kw) of our blocks (0,0), (1,0), (0,1), (1,1)
    return (torch.arange(channels)[None, :] * 4 + blocks[:, None]).reshape(-1)  # (4C,)


def swin_backbone(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg ``SwinTransformer`` keys -> :class:`~semask.backbones.swin.SeMaskSwin` keys (PatchMerging
    permuted, ``relative_position_index`` checked and dropped). Raises CheckpointError for a non-standard index."""
    sd = rename(sd, SWIN_RULES)
    pop_relative_position_index(sd, infer_swin_arch(sd, "backbone.")["window_size"])
    for key in [k for k in sd if _MERGE.match(k)]:
        perm = unfold_to_swin_order(sd[key].shape[-1] // 4)
        sd[key] = sd[key][..., perm].contiguous()
    return sd


def infer_head(sd: dict[str, torch.Tensor]) -> dict:
    """The ``mmseg_maskformer`` decoder fields (and ``num_classes``) read from ``decode_head.*`` shapes.

    Raises:
        CheckpointError: not a MaskFormer head (no ``decode_head.cls_embed.weight``).
    """
    p = "decode_head."
    if p + "cls_embed.weight" not in sd:
        raise CheckpointError("not an mmseg MaskFormer checkpoint: it has no 'decode_head.cls_embed.weight'")
    queries, feat = sd[p + "query_embed.weight"].shape
    return dict(
        num_classes=sd[p + "cls_embed.weight"].shape[0] - 1,
        feat_channels=feat,
        out_channels=sd[p + "mask_embed.4.weight"].shape[0],
        num_queries=queries,
        dim_feedforward=sd[p + "transformer_decoder.layers.0.ffn.layers.0.0.weight"].shape[0],
        dec_layers=1 + max(int(m[1]) for k in sd if (m := _DEC_LAYER.match(k))),
    )


def infer_config(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """The config of an mmseg MaskFormer state dict (mmseg key layout): ResNet or plain Swin backbone."""
    head = infer_head(sd)
    if "backbone.conv1.weight" in sd:
        arch = infer_resnet_arch(sd)
        name = {(3, 4, 6, 3): "maskformer_r50_d32", (3, 4, 23, 3): "maskformer_r101_d32"}
        return model_config_class("resnet", "mmseg_maskformer")(
            arch=name.get(arch["depths"], "maskformer_resnet"), **arch, **head
        )
    arch = infer_swin_arch(swin_backbone(dict(sd)), "backbone.")
    size = (arch["embed_dim"], arch["depths"], arch["num_heads"], arch["window_size"])
    return model_config_class("swin", "mmseg_maskformer")(
        arch=_SWIN_ARCH.get(size, "maskformer_swin"),
        **arch,
        sem_window_size=arch["window_size"],
        semantic_attention=None,
        **head,
    )


def convert_state_dict(sd: dict[str, torch.Tensor]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Unwrapped mmseg MaskFormer state dict -> ``(cfg, sd)`` in our key layout (not yet checked)."""
    cfg = infer_config(sd)
    return cfg, (sd if cfg.backbone_name == "resnet" else swin_backbone(sd))


def convert(
    ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert an mmseg 1.x MaskFormer checkpoint; the result loads into ``build_model(cfg)`` with ``strict=True``.

    Args:
        ckpt: ``{'meta', 'state_dict'}`` or a bare state dict (``module.`` prefixes allowed).
        semantic_attention, sem_window_size: refused (the mmseg models have no semantic layers).
        num_classes, window_size: if given, checked against the weights.

    Raises:
        CheckpointError: a checked setting disagrees, a non-standard ``relative_position_index``, or keys do not
            fit (every unmapped, missing and mismatched key is listed).
    """
    if semantic_attention is not None or sem_window_size is not None:
        raise CheckpointError("mmseg MaskFormer checkpoints have no semantic layers")
    cfg, sd = convert_state_dict(unwrap_state_dict(ckpt))
    check_requested(cfg, num_classes=num_classes)
    if window_size is not None and cfg.backbone_name == "swin":
        check_requested(cfg, window_size=window_size)
    compare_keys(sd, meta_shapes(cfg)).raise_if_bad("mmseg-maskformer checkpoint")
    return cfg, sd
