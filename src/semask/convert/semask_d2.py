"""Official SeMask detectron2 checkpoints (``SeMask-Mask2Former``, ``SeMask-MaskFormer``, ``SeMask-FAPN``'s FaPN
and MSFaPN Mask2Former) -> strict-loading :class:`~semask.models.segmenter.Segmenter` models.

Input (SPEC A4): ``DetectionCheckpointer`` files ``{'model': state_dict, ...}`` with ``backbone.*``,
``sem_seg_head.{pixel_decoder,predictor}.*`` and ``criterion.empty_weight``. Our module names equal the official
keys, so the only changes are: strip ``module.``, undo the head's v1->v2 renaming when it was applied twice
(``pixel_decoder.pixel_decoder.*``, what loading a dict without ``_metadata`` into the official model produces) or
not at all (v1 ``sem_seg_head.X``), and check and drop the ``relative_position_index`` buffers. The architecture is
read from the shapes; the semantic layout (identical keys for windowed and global blocks), the semantic window and
the head count are not in the weights: they follow the per-project rules (SPEC A7) unless given.

The original Mask2Former / MaskFormer model zoo (no semantic layers; ``--from mask2former-d2`` /
``maskformer-d2``) is read the same way: plain Swin, or detectron2's ResNet-50/101 (``backbone.stem``,
``res2``..``res5``) renamed to the torchvision layout of :mod:`semask.backbones.resnet`.

One converter per project (``semask-{m2f,maskformer,fapn,msfapn}-d2``): the project is recognised from the keys,
and a checkpoint given to another project's converter is refused, naming the right one. FaPN checkpoints hold
each shared GroupNorm (``align_k.offset.norm`` IS ``layer_k.norm``) under both keys, as our model does: the two
copies are checked to be equal and returned as separate tensors (safetensors refuses shared storage).
"""

import logging
import re
from collections.abc import Callable
from dataclasses import replace

import torch

from semask.backbones.resnet import RESNET_DEPTHS
from semask.convert._rules import (
    Rule,
    check_requested,
    pop_relative_position_index,
    rename,
    unwrap_state_dict,
)
from semask.convert.resnet import from_detectron2, infer_resnet_arch
from semask.convert.swin_official import infer_swin_arch
from semask.decoders.maskformer.head import MASKFORMER_HEAD
from semask.errors import CheckpointError
from semask.models.base import ModelConfig, model_config_class
from semask.models.zoo import project_semantic_layout
from semask.weights.keys import compare_keys, meta_shapes

# project -> (registered decoder, name)
DECODERS = {
    "mask2former": ("mask2former", "Mask2Former"),
    "maskformer": ("maskformer", "MaskFormer"),
    "fapn": ("fapn_m2f", "FaPN Mask2Former"),
    "msfapn": ("msfapn_m2f", "MSFaPN Mask2Former"),
}

logger = logging.getLogger("semask.convert")

_RULES: list[Rule] = [
    (r"^sem_seg_head\.pixel_decoder\.pixel_decoder\.", "sem_seg_head.pixel_decoder."),
    (r"^sem_seg_head\.(?!predictor\.|pixel_decoder\.)", "sem_seg_head.pixel_decoder."),
]
_PD, _PR = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
_PRIOR_Q = "backbone.layers.0.semantic_layer.class_injection.0.mlp_cls_q.weight"
_MF_FFN = _PR + "transformer.decoder.layers.0.linear1.weight"
_M2F_FFN = _PR + "transformer_ffn_layers.0.linear1.weight"
_SHARED_NORM = re.compile(r"^(sem_seg_head\.pixel_decoder\.)align_(\d+)\.offset\.norm\.(weight|bias)$")
SOURCE_NAME = {
    "mask2former": "semask-m2f-d2",
    "maskformer": "semask-maskformer-d2",
    "fapn": "semask-fapn-d2",
    "msfapn": "semask-msfapn-d2",
}


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of indexed submodules ``prefix{i}.`` (max index + 1, 0 if none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max((int(m[1]) for k in sd if (m := pattern.match(k))), default=-1)


def _is_resnet(sd: dict[str, torch.Tensor]) -> bool:
    """Whether the (renamed) state dict holds a ResNet backbone (torchvision layout, see :func:`from_detectron2`)."""
    return "backbone.conv1.weight" in sd


def detect_decoder(sd: dict[str, torch.Tensor]) -> str | None:
    """The project of a renamed detectron2 state dict: ``"fapn"``/``"msfapn"`` (``pixel_decoder.align_*``, MSFaPN
    with the MSDeformAttn encoder), ``"maskformer"`` (DETR decoder), ``"mask2former"`` (masked-attention
    decoder), or None when none of these keys is present."""
    if any(k.startswith(_PD + "align_") for k in sd):
        return "msfapn" if _PD + "transformer.level_embed" in sd else "fapn"
    if _MF_FFN in sd:
        return "maskformer"
    return "mask2former" if _M2F_FFN in sd else None


def check_shared_norms(sd: dict[str, torch.Tensor]) -> None:
    """Check that every FaPN ``align_k.offset.norm.*`` equals ``layer_k.norm.*`` (one module officially), and
    give it its own storage.

    Raises:
        CheckpointError: naming every pair that differs (or whose ``layer_k`` half is absent).
    """
    bad = []
    for key in [k for k in sd if _SHARED_NORM.match(k)]:
        twin = _SHARED_NORM.sub(r"\1layer_\2.norm.\3", key)
        if twin not in sd or (sd[key] is not sd[twin] and not torch.equal(sd[key], sd[twin])):
            bad.append(f"{key} vs {twin}")
        else:
            sd[key] = sd[key].clone()
    if bad:
        raise CheckpointError(f"FaPN GroupNorms shared by FeatureAlign and layer_k differ: {bad}")


PLAIN_ARCH = {"mask2former": "swin_m2f", "maskformer": "swin_maskformer"}
"""The registry names of checkpoints without semantic layers (the original Mask2Former / MaskFormer projects)."""


def infer_config(
    sd: dict[str, torch.Tensor],
    decoder: str,
    semantic_attention: tuple[str, ...] | None = None,
    sem_window_size: int | None = None,
) -> ModelConfig:
    """The model config of an official detectron2 state dict (keys already renamed).

    Read from shapes: the Swin size, K (``class_embed`` rows - 1, checked against the priors' ``mlp_cls_q``),
    N_S, lambda, the head widths, queries, FFN widths and layer counts, MSDeformAttn points (for 8 heads).

    Args:
        sd: unwrapped, renamed state dict.
        decoder: ``"mask2former"``, ``"maskformer"``, ``"fapn"`` or ``"msfapn"``.
        semantic_attention: per-stage layout; default: the per-project rule (:func:`project_semantic_layout`).
        sem_window_size: semantic window; default: as the released configs, the Swin window, except the
            Cityscapes Mask2Former config (K = 19), which leaves SEM_WINDOW_SIZE at the project default 7.

    Raises:
        CheckpointError: a key needed for the inference is absent, the checkpoint is of another project, or
            prior and head class counts differ.
    """
    found = detect_decoder(sd)
    if found not in (None, decoder):
        raise CheckpointError(
            f"this is a {DECODERS[found][1]} checkpoint: convert it with --from {SOURCE_NAME[found]}"
        )

    def shape(key: str) -> torch.Size:
        if key not in sd:
            raise CheckpointError(f"not a SeMask {decoder} detectron2 checkpoint: it has no {key!r}")
        return sd[key].shape

    resnet = _is_resnet(sd)
    arch = infer_resnet_arch(sd) if resnet else infer_swin_arch(sd, "backbone.")
    num_classes = shape(_PR + "class_embed.weight")[0] - 1
    num_queries, hidden_dim = shape(_PR + "query_embed.weight")
    mask_dim, conv_dim = shape(_PD + "mask_features.weight")[:2]
    head = dict(
        num_classes=num_classes,
        num_queries=num_queries,
        hidden_dim=hidden_dim,
        mask_dim=mask_dim,
        conv_dim=conv_dim,
    )
    registered = DECODERS[decoder][0]
    short = "m2f" if registered == "mask2former" else registered
    if resnet:  # the original Mask2Former / MaskFormer model zoo: no semantic layers
        depth = {v: k for k, v in RESNET_DEPTHS.items()}.get(arch["depths"], 50)
        cfg = model_config_class("resnet", registered)(**arch, **head, arch=f"resnet{depth}_{short}")
    else:
        cfg = model_config_class("swin", registered)(
            **arch, **head, weight_init="d2", arch=f"semask_swin_{short}"
        )
    if decoder == "maskformer":
        layers = _count(sd, _PR + "transformer.decoder.layers.")
        cfg = replace(cfg, **(MASKFORMER_HEAD | dict(dim_feedforward=shape(_MF_FFN)[0], dec_layers=layers)))
    else:
        cfg = replace(
            cfg,
            dim_feedforward=shape(_M2F_FFN)[0],
            dec_layers=_count(sd, _PR + "transformer_ffn_layers.") + 1,
        )
    if decoder in ("mask2former", "msfapn"):
        enc = _PD + "transformer.encoder.layers."
        points, rest = divmod(shape(enc + "0.self_attn.attention_weights.weight")[0], 3 * cfg.nheads)
        if rest:
            raise CheckpointError(
                f"{enc}0.self_attn.attention_weights rows are not 3 levels x {cfg.nheads} heads x points"
            )
        cfg = replace(
            cfg,
            enc_layers=_count(sd, enc),
            enc_dim_feedforward=shape(enc + "0.linear1.weight")[0],
            enc_n_points=points,
        )
    if resnet:
        return cfg
    if _PRIOR_Q not in sd:  # no semantic layers: the original Mask2Former / MaskFormer model zoo
        plain = PLAIN_ARCH.get(registered, cfg.arch)
        return replace(cfg, arch=plain, semantic_attention=None, sem_window_size=arch["window_size"])
    if shape(_PRIOR_Q)[0] != num_classes:
        raise CheckpointError(
            f"the semantic layers predict {shape(_PRIOR_Q)[0]} classes but the head {num_classes}"
        )
    if sem_window_size is None:
        sem_window_size = 7 if decoder == "mask2former" and num_classes == 19 else arch["window_size"]
        logger.info(
            "semantic window %d (not stored in the weights; pass sem_window_size to change)", sem_window_size
        )
    return replace(
        cfg,
        semantic_attention=semantic_attention or project_semantic_layout(registered, num_classes),
        sem_window_size=sem_window_size,
        num_sem_blocks=_count(sd, "backbone.layers.0.semantic_layer.class_injection."),
        use_gamma=any(k.endswith(".gamma") for k in sd),
    )


def convert_d2(
    ckpt: dict,
    decoder: str,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Convert an official SeMask detectron2 checkpoint of ``decoder`` ("mask2former", "maskformer", "fapn",
    "msfapn"); the result loads into ``build_model(cfg)`` strictly.

    Args:
        ckpt: ``{'model': state_dict, ...}`` or a bare state dict (``module.`` prefixes allowed).
        semantic_attention, sem_window_size: see :func:`infer_config`.
        num_classes, window_size: if given, checked against the weights.

    Returns:
        ``(cfg, sd)``: the same keys (renamed where needed) minus the ``relative_position_index`` buffers.

    Raises:
        CheckpointError: a checked setting disagrees, a non-standard ``relative_position_index``, or keys that do
            not fit (every unmapped, missing and mismatched key is listed), a FaPN shared GroupNorm whose two keys
            differ.
    """
    sd = from_detectron2(rename(unwrap_state_dict(ckpt), _RULES))
    resnet = _is_resnet(sd)
    if resnet and (semantic_attention is not None or window_size is not None or sem_window_size is not None):
        raise CheckpointError("a ResNet checkpoint has no semantic layers and no window")
    cfg = infer_config(sd, decoder, semantic_attention, sem_window_size)
    check_shared_norms(sd)
    check_requested(cfg, num_classes=num_classes)
    if not resnet:
        check_requested(cfg, window_size=window_size)
        pop_relative_position_index(sd, cfg.window_size)
    report = compare_keys(sd, meta_shapes(cfg), required=lambda key: key != "criterion.empty_weight")
    report.raise_if_bad(f"{SOURCE_NAME[decoder]} checkpoint")
    return cfg, sd


def _converter(decoder: str, project: str) -> Callable[..., tuple[ModelConfig, dict[str, torch.Tensor]]]:
    def convert(ckpt: dict, **options) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
        return convert_d2(ckpt, decoder, **options)

    convert.__doc__ = (
        f"Convert an official {project} checkpoint: :func:`convert_d2` with decoder={decoder!r}."
    )
    return convert


convert_m2f = _converter("mask2former", "SeMask-Mask2Former")
convert_maskformer = _converter("maskformer", "SeMask-MaskFormer")
convert_fapn = _converter("fapn", "SeMask-FAPN FaPN Mask2Former (PixelFANDecoder)")
convert_msfapn = _converter("msfapn", "SeMask-FAPN MSFaPN Mask2Former (MSDeformAttnPixelFANDecoder)")
