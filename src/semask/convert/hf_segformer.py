"""Hugging Face ``SegformerForSemanticSegmentation`` <-> the semask SegFormer models (``segformer_mit_b*``):
config translation and the export key map (the import map is :func:`semask.convert.mit.convert_segformer_hf`).

transformers sources: ``models/segformer/modeling_segformer.py`` and ``configuration_segformer.py``. Written names:
the installed 5.x layout (``segformer.stages.{s}...``); our fused ``kv`` Linear (rows [0, C) key, [C, 2C) value)
becomes transformers' ``k_proj`` / ``v_proj``. Note: transformers' SegFormer LayerNorms all use eps 1e-5 where
the official model (and semask) uses 1e-6 in the blocks and the stage norms, so the same weights give slightly
different outputs in the two libraries; semask reproduces the official network.
"""

import re
from typing import Any

import torch

from semask.backbones.mit import mit_variant
from semask.convert.hf_keys import KeyMap, Pair
from semask.errors import ConfigError

_KV = re.compile(r"^(.*)\.kv_proj\.(weight|bias)$")


def _pairs() -> list[Pair]:
    pairs = []
    for s in range(1, 5):
        hf = f"segformer.stages.{s - 1}."
        blk, hf_blk = f"backbone.block{s}.{{a}}.", hf + "blocks.{a}."
        pairs += [
            (f"backbone.patch_embed{s}.proj.", hf + "patch_embeddings.proj."),
            (f"backbone.patch_embed{s}.norm.", hf + "patch_embeddings.layer_norm."),
            (blk + "norm1.", hf_blk + "layernorm_before."),
            (blk + "norm2.", hf_blk + "layernorm_after."),
            (blk + "attn.q.", hf_blk + "attention.q_proj."),
            (blk + "attn.kv.", hf_blk + "attention.kv_proj."),
            (blk + "attn.proj.", hf_blk + "attention.o_proj."),
            (blk + "attn.sr.", hf_blk + "attention.sequence_reduction.sequence_reduction."),
            (blk + "attn.norm.", hf_blk + "attention.sequence_reduction.layer_norm."),
            (blk + "mlp.", hf_blk + "mlp."),
            (f"backbone.norm{s}.", hf + "layer_norm."),
            (f"decode_head.linear_c{s}.", f"decode_head.linear_projections.{s - 1}."),
        ]
    return pairs + [
        ("decode_head.linear_fuse.conv.weight", "decode_head.linear_fuse.weight"),
        ("decode_head.linear_fuse.bn.", "decode_head.batch_norm."),
        ("decode_head.linear_pred.", "decode_head.classifier."),
    ]


MAP = KeyMap(_pairs())
"""semask <-> transformers 5.x SegFormer keys (``kv`` as ``kv_proj``, split by :func:`split_kv`)."""


def split_kv(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``X.kv_proj.P`` (2C rows) by ``X.k_proj.P`` and ``X.v_proj.P``."""
    out = {}
    for key, value in sd.items():
        if m := _KV.match(key):
            k, v = value.chunk(2)
            out[f"{m[1]}.k_proj.{m[2]}"], out[f"{m[1]}.v_proj.{m[2]}"] = k.contiguous(), v.contiguous()
        else:
            out[key] = value
    return out


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(f"transformers SegformerConfig: {what} has no semask counterpart")


def fields_from_hf(config: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """semask model fields (``{"arch", ...}``) of a transformers ``SegformerConfig`` dict; the arch is the
    ``segformer_mit_b*`` of the same widths and depths (``segformer_mit_b0`` with its fields overridden otherwise).

    Raises:
        ConfigError: patch sizes, strides, stage count or activation that semask's MiT does not have.
    """
    _check(list(config.get("patch_sizes", [7, 3, 3, 3])) == [7, 3, 3, 3], "patch_sizes")
    _check(list(config.get("strides", [4, 2, 2, 2])) == [4, 2, 2, 2], "strides")
    _check(config.get("num_encoder_blocks", 4) == 4, "num_encoder_blocks")
    _check(config.get("hidden_act", "gelu") == "gelu", "hidden_act")
    _check(config.get("reshape_last_stage", True), "reshape_last_stage=False")
    widths = dict(
        embed_dims=tuple(config.get("hidden_sizes", (32, 64, 160, 256))),
        depths=tuple(config.get("depths", (2, 2, 2, 2))),
    )
    variant = mit_variant(**widths)
    return (
        {"arch": f"segformer_{variant}", "num_classes": num_classes}
        | widths
        | dict(
            num_heads=tuple(config.get("num_attention_heads", (1, 2, 5, 8))),
            sr_ratios=tuple(config.get("sr_ratios", (8, 4, 2, 1))),
            mlp_ratios=tuple(config.get("mlp_ratios", (4, 4, 4, 4))),
            drop_path_rate=config.get("drop_path_rate", 0.1),
            semantic_attention=None,
            decoder_channels=config.get("decoder_hidden_size", 256),
            dropout=config.get("classifier_dropout_prob", 0.1),
        )
    )


def config_to_hf(cfg: Any) -> dict[str, Any]:
    """transformers ``SegformerConfig`` dict (without labels) of a plain semask SegFormer config.

    Raises:
        ConfigError: semantic layers (transformers has no SeMask-MiT).
    """
    if cfg.semantic_attention is not None:
        raise ConfigError(
            "transformers has no SeMask semantic layers: export a plain model (segformer_mit_b*)"
        )
    return dict(
        model_type="segformer",
        architectures=["SegformerForSemanticSegmentation"],
        num_encoder_blocks=4,
        hidden_sizes=list(cfg.embed_dims),
        depths=list(cfg.depths),
        num_attention_heads=list(cfg.num_heads),
        sr_ratios=list(cfg.sr_ratios),
        mlp_ratios=list(cfg.mlp_ratios),
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        drop_path_rate=cfg.drop_path_rate,
        decoder_hidden_size=cfg.decoder_channels,
        classifier_dropout_prob=cfg.dropout,
    )
