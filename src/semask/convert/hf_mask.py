"""Hugging Face ``Mask2FormerForUniversalSegmentation`` / ``MaskFormerForInstanceSegmentation`` with a Swin
backbone <-> the plain semask models ``swin_m2f`` / ``swin_maskformer``: key maps and config translation.

transformers sources: ``models/mask2former/modeling_mask2former.py``, ``models/maskformer/modeling_maskformer.py``
(+ ``modeling_maskformer_swin.py``), ``models/swin/modeling_swin.py`` and their ``configuration_*.py``. Accepted
names: the current (5.x) module names and the 4.x / Hub names of the released checkpoints
(``attention.self.query``, ``intermediate.dense``, DETR ``fc1`` / ``out_proj``, Swin without ``swin.``); written
names: the installed 5.x layout. The backbone's final ``layernorm`` of transformers' Swin feeds no output of these
models: it is dropped on import and written as ones/zeros (its init) on export.
"""

from typing import Any

from semask.convert.hf_keys import KeyMap, Pair
from semask.decoders.maskformer.head import MASKFORMER_HEAD
from semask.errors import ConfigError

_PIX, _TR = "model.pixel_level_module.", "model.transformer_module."
_PD, _PR = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
SWIN_PREFIX = {"mask2former": _PIX + "encoder.swin.", "maskformer": _PIX + "encoder.model."}
"""Where each family's transformers Swin lives (its unused final ``layernorm`` is ``<prefix>layernorm.*``)."""

_SWIN_ALIASES = [  # 4.x / maskformer-swin names -> the names of the maps
    (r"^(model\.pixel_level_module\.encoder\.)(embeddings|encoder|layernorm)\.", r"\1swin.\2."),
    (r"\.attention\.self\.(q|k|v)[a-z]*\.", r".attention.\1_proj."),
    (r"\.attention\.self\.relative_position_", ".attention.relative_position_bias.relative_position_"),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"(\.blocks\.\d+)\.intermediate\.dense\.", r"\1.mlp.fc1."),
    (r"(\.blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]
ALIASES = {
    "mask2former": _SWIN_ALIASES,
    "maskformer": _SWIN_ALIASES
    + [(r"(decoder\.layers\.\d+)\.fc([12])\.", r"\1.mlp.fc\2."), (r"_attn\.out_proj\.", "_attn.o_proj.")],
}
"""transformers -> map names, applied before :data:`MAPS` on import."""
DIALECT = {
    "mask2former": [],
    "maskformer": [
        (r"\.attention\.q_proj\.", ".attention.self.query."),
        (r"\.attention\.k_proj\.", ".attention.self.key."),
        (r"\.attention\.v_proj\.", ".attention.self.value."),
        (r"\.attention\.relative_position_bias\.", ".attention.self."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
        (r"(\.blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
        (r"(\.blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."),
    ],
}
"""Map names -> the installed transformers' names, applied after :data:`MAPS` on export."""


def _swin_pairs(family: str) -> list[Pair]:
    swin, blk = SWIN_PREFIX[family], "backbone.layers.{a}.blocks.{b}."
    hf_blk = swin + "encoder.layers.{a}.blocks.{b}."
    norms = [f"stage{i + 1}" if family == "mask2former" else str(i) for i in range(4)]
    return [
        ("backbone.patch_embed.proj.", swin + "embeddings.patch_embeddings.projection."),
        ("backbone.patch_embed.norm.", swin + "embeddings.norm."),
        (blk + "norm1.", hf_blk + "layernorm_before."),
        (blk + "norm2.", hf_blk + "layernorm_after."),
        (blk + "attn.qkv.", hf_blk + "attention.qkv_proj."),
        (blk + "attn.proj.", hf_blk + "attention.o_proj."),
        (
            blk + "attn.relative_position_",
            hf_blk + "attention.relative_position_bias.relative_position_",
        ),
        (blk + "mlp.", hf_blk + "mlp."),
        ("backbone.layers.{a}.downsample.", swin + "encoder.layers.{a}.downsample."),
        *((f"backbone.norm{i}.", f"{_PIX}encoder.hidden_states_norms.{n}.") for i, n in enumerate(norms)),
        ("criterion.empty_weight", "criterion.empty_weight"),
    ]


_M2F_ENC, _HF_ENC = _PD + "transformer.encoder.layers.{a}.", _PIX + "decoder.encoder.layers.{a}."
_M2F_SA, _M2F_CA = (
    _PR + "transformer_self_attention_layers.{a}.",
    _PR + "transformer_cross_attention_layers.{a}.",
)
_HF_DEC = _TR + "decoder.layers.{a}."
_MF_DEC = _PR + "transformer.decoder.layers.{a}."

MAPS = {
    "mask2former": KeyMap(
        _swin_pairs("mask2former")
        + [
            (_PD + "input_proj.", _PIX + "decoder.input_projections."),
            (_PD + "transformer.level_embed", _PIX + "decoder.level_embed"),
            (_M2F_ENC + "self_attn.", _HF_ENC + "self_attn."),
            (_M2F_ENC + "norm1.", _HF_ENC + "self_attn_layer_norm."),
            (_M2F_ENC + "linear1.", _HF_ENC + "fc1."),
            (_M2F_ENC + "linear2.", _HF_ENC + "fc2."),
            (_M2F_ENC + "norm2.", _HF_ENC + "final_layer_norm."),
            (_PD + "adapter_1.weight", _PIX + "decoder.adapter_1.0.weight"),
            (_PD + "adapter_1.norm.", _PIX + "decoder.adapter_1.1."),
            (_PD + "layer_1.weight", _PIX + "decoder.layer_1.0.weight"),
            (_PD + "layer_1.norm.", _PIX + "decoder.layer_1.1."),
            (_PD + "mask_features.", _PIX + "decoder.mask_projection."),
            (_M2F_SA + "self_attn.in_proj_", _HF_DEC + "self_attn.qkv_proj."),
            (_M2F_SA + "self_attn.out_proj.", _HF_DEC + "self_attn.out_proj."),
            (_M2F_SA + "norm.", _HF_DEC + "self_attn_layer_norm."),
            (_M2F_CA + "multihead_attn.", _HF_DEC + "cross_attn."),
            (_M2F_CA + "norm.", _HF_DEC + "cross_attn_layer_norm."),
            (_PR + "transformer_ffn_layers.{a}.linear", _HF_DEC + "fc"),
            (_PR + "transformer_ffn_layers.{a}.norm.", _HF_DEC + "final_layer_norm."),
            (_PR + "decoder_norm.", _TR + "decoder.layernorm."),
            (_PR + "query_feat.", _TR + "queries_features."),
            (_PR + "query_embed.", _TR + "queries_embedder."),
            (_PR + "level_embed.", _TR + "level_embed."),
            (_PR + "input_proj.", _TR + "input_projections."),
            (_PR + "class_embed.", "class_predictor."),
            (_PR + "mask_embed.layers.{a}.", _TR + "decoder.mask_predictor.mask_embedder.{a}.0."),
        ]
    ),
    "maskformer": KeyMap(
        _swin_pairs("maskformer")
        + [
            (_PD + "layer_4.weight", _PIX + "decoder.fpn.stem.0.weight"),
            (_PD + "layer_4.norm.", _PIX + "decoder.fpn.stem.1."),
            *(
                pair
                for k in (3, 2, 1)
                for pair in (
                    (f"{_PD}adapter_{k}.weight", f"{_PIX}decoder.fpn.layers.{3 - k}.proj.0.weight"),
                    (f"{_PD}adapter_{k}.norm.", f"{_PIX}decoder.fpn.layers.{3 - k}.proj.1."),
                    (f"{_PD}layer_{k}.weight", f"{_PIX}decoder.fpn.layers.{3 - k}.block.0.weight"),
                    (f"{_PD}layer_{k}.norm.", f"{_PIX}decoder.fpn.layers.{3 - k}.block.1."),
                )
            ),
            (_PD + "mask_features.", _PIX + "decoder.mask_projection."),
            (_MF_DEC + "self_attn.in_proj_", _HF_DEC + "self_attn.qkv_proj."),
            (_MF_DEC + "self_attn.out_proj.", _HF_DEC + "self_attn.o_proj."),
            (_MF_DEC + "multihead_attn.in_proj_", _HF_DEC + "encoder_attn.qkv_proj."),
            (_MF_DEC + "multihead_attn.out_proj.", _HF_DEC + "encoder_attn.o_proj."),
            (_MF_DEC + "norm1.", _HF_DEC + "self_attn_layer_norm."),
            (_MF_DEC + "norm2.", _HF_DEC + "encoder_attn_layer_norm."),
            (_MF_DEC + "norm3.", _HF_DEC + "final_layer_norm."),
            (_MF_DEC + "linear", _HF_DEC + "mlp.fc"),
            (_PR + "transformer.decoder.norm.", _TR + "decoder.layernorm."),
            (_PR + "query_embed.", _TR + "queries_embedder."),
            (_PR + "input_proj.", _TR + "input_projection."),
            (_PR + "class_embed.", "class_predictor."),
            (_PR + "mask_embed.layers.{a}.", "mask_embedder.{a}.0."),
        ]
    ),
}
"""semask <-> transformers key maps of the two families (fused q/k/v as ``qkv_proj``, see :mod:`hf_keys`)."""

ARCH = {"mask2former": "swin_m2f", "maskformer": "swin_maskformer"}
ARCHITECTURES = {
    "mask2former": "Mask2FormerForUniversalSegmentation",
    "maskformer": "MaskFormerForInstanceSegmentation",
}


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(f"transformers config: {what} has no semask counterpart")


def swin_fields(bb: dict[str, Any]) -> dict[str, Any]:
    """semask Swin fields of a transformers ``SwinConfig`` dict (plain Swin, detectron2 init).

    Raises:
        ConfigError: a setting semask's Swin does not have (absolute embeddings, patch size != 4, ...).
    """
    _require(bb.get("model_type", "swin") in ("swin", "maskformer-swin"), f"backbone {bb.get('model_type')}")
    _require(not bb.get("use_absolute_embeddings", False), "use_absolute_embeddings=True")
    _require(bb.get("patch_size", 4) == 4, f"patch_size={bb.get('patch_size')}")
    _require(bb.get("qkv_bias", True), "qkv_bias=False")
    _require(bb.get("hidden_act", "gelu") == "gelu", f"hidden_act={bb.get('hidden_act')}")
    _require(bb.get("layer_norm_eps", 1e-5) == 1e-5, f"layer_norm_eps={bb.get('layer_norm_eps')}")
    window = bb.get("window_size", 7)
    return dict(
        embed_dim=bb.get("embed_dim", 96),
        depths=tuple(bb.get("depths", (2, 2, 6, 2))),
        num_heads=tuple(bb.get("num_heads", (3, 6, 12, 24))),
        window_size=window,
        sem_window_size=window,
        mlp_ratio=float(bb.get("mlp_ratio", 4.0)),
        drop_path_rate=bb.get("drop_path_rate", 0.1),
        semantic_attention=None,
        weight_init="d2",
    )


def swin_config(cfg: Any) -> dict[str, Any]:
    """transformers ``SwinConfig`` dict of a semask config (4 stages out, as the segmentation models use)."""
    return dict(
        model_type="swin",
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.num_heads),
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=cfg.drop_path_rate,
        patch_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def fields_from_hf(family: str, config: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """semask model fields (``{"arch", ...}``) of a transformers Mask2Former / MaskFormer config dict.

    Raises:
        ConfigError: a setting semask does not have (pre-norm decoder, another backbone, ...).
    """
    fields = {"arch": ARCH[family], "num_classes": num_classes} | swin_fields(
        config.get("backbone_config") or {}
    )
    if family == "mask2former":
        _require(not config.get("pre_norm", False), "pre_norm=True")
        return fields | dict(
            conv_dim=config.get("feature_size", 256),
            mask_dim=config.get("mask_feature_size", 256),
            hidden_dim=config.get("hidden_dim", 256),
            num_queries=config.get("num_queries", 100),
            nheads=config.get("num_attention_heads", 8),
            dim_feedforward=config.get("dim_feedforward", 2048),
            dec_layers=config.get("decoder_layers", 10),
            enc_layers=config.get("encoder_layers", 6),
            enc_dim_feedforward=config.get("encoder_feedforward_dim", 1024),
            enc_n_points=4,
            dropout=config.get("dropout", 0.0),
            class_weight=config.get("class_weight", 2.0),
            mask_weight=config.get("mask_weight", 5.0),
            dice_weight=config.get("dice_weight", 5.0),
            no_object_weight=config.get("no_object_weight", 0.1),
            train_num_points=config.get("train_num_points", 12544),
            oversample_ratio=config.get("oversample_ratio", 3.0),
            importance_sample_ratio=config.get("importance_sample_ratio", 0.75),
        )
    dec = config.get("decoder_config") or {}
    return (
        fields
        | MASKFORMER_HEAD
        | dict(
            conv_dim=config.get("fpn_feature_size", 256),
            mask_dim=config.get("mask_feature_size", 256),
            hidden_dim=dec.get("d_model", 256),
            num_queries=dec.get("num_queries", 100),
            nheads=dec.get("decoder_attention_heads", 8),
            dim_feedforward=dec.get("decoder_ffn_dim", 2048),
            dec_layers=dec.get("decoder_layers", 6),
            dropout=dec.get("dropout", 0.1),
            class_weight=config.get("cross_entropy_weight", 1.0),
            mask_weight=config.get("mask_weight", 20.0),
            dice_weight=config.get("dice_weight", 1.0),
            no_object_weight=config.get("no_object_weight", 0.1),
        )
    )


def config_to_hf(family: str, cfg: Any) -> dict[str, Any]:
    """transformers config dict (without labels) of a plain semask Mask2Former / MaskFormer config.

    Raises:
        ConfigError: semantic layers, or MSDeformAttn points other than transformers' fixed 4.
    """
    if cfg.semantic_attention is not None:
        raise ConfigError("transformers has no SeMask semantic layers: export a plain model (swin_*_m2f ...)")
    out = dict(
        model_type=family,
        architectures=[ARCHITECTURES[family]],
        backbone_config=swin_config(cfg),
        mask_feature_size=cfg.mask_dim,
        no_object_weight=cfg.no_object_weight,
        mask_weight=cfg.mask_weight,
        dice_weight=cfg.dice_weight,
    )
    if family == "mask2former":
        _require(cfg.enc_n_points == 4, f"enc_n_points={cfg.enc_n_points} (transformers uses 4)")
        return out | dict(
            feature_size=cfg.conv_dim,
            hidden_dim=cfg.hidden_dim,
            num_queries=cfg.num_queries,
            num_attention_heads=cfg.nheads,
            dim_feedforward=cfg.dim_feedforward,
            decoder_layers=cfg.dec_layers,
            encoder_layers=cfg.enc_layers,
            encoder_feedforward_dim=cfg.enc_dim_feedforward,
            dropout=cfg.dropout,
            class_weight=cfg.class_weight,
            train_num_points=cfg.train_num_points,
            oversample_ratio=cfg.oversample_ratio,
            importance_sample_ratio=cfg.importance_sample_ratio,
            pre_norm=False,
        )
    return out | dict(
        fpn_feature_size=cfg.conv_dim,
        cross_entropy_weight=cfg.class_weight,
        decoder_config=dict(
            model_type="detr",
            d_model=cfg.hidden_dim,
            num_queries=cfg.num_queries,
            decoder_attention_heads=cfg.nheads,
            decoder_ffn_dim=cfg.dim_feedforward,
            decoder_layers=cfg.dec_layers,
            encoder_layers=0,
            dropout=cfg.dropout,
        ),
    )
