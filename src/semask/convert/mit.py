"""MiT / SegFormer checkpoints -> semask keys (:class:`~semask.backbones.mit.SeMaskMiT` as ``backbone.*``,
:class:`~semask.decoders.segformer_head.SegFormerHead` as ``decode_head.*``).

Pure dict-to-dict maps (no I/O); each returns the converted state dict and a
:class:`~semask.convert._rules.KeyReport` against the architecture read from the weight shapes. Sources:

- NVlabs ImageNet ``mit_b*.pth`` (bare state dict of ``mix_transformer.py``): prefix ``backbone.``, drop the
  classifier ``head.*`` (the segmentation code never builds it).
- Official SegFormer checkpoints (``{"state_dict": {backbone.*, decode_head.*}}``): our names equal theirs;
  ``decode_head.conv_seg.*`` (created by mmseg's ``BaseDecodeHead``, unused by ``SegFormerHead``) is dropped.
- Hugging Face ``nvidia/mit-b*`` (``SegformerForImageClassification``: ``classifier.*`` dropped) and
  ``nvidia/segformer-b*`` (``SegformerForSemanticSegmentation``), under either the Hub / transformers 4.x names
  (``segformer.encoder.*``) or the transformers 5.x module names (``segformer.stages.*``); their separate
  key/value Linears are concatenated into the fused ``kv`` (rows [0, C) key, [C, 2C) value). The map is the one
  verified in ``fixtures/segformer_mit/official_mit_keys.json``. Note: HF LayerNorms use eps 1e-5 everywhere, the
  official model (and semask) 1e-6 in blocks and stage norms, so semask reproduces the official network.
"""

import re
from collections.abc import Callable

import torch

from semask.backbones.mit import SeMaskMiT, mit_variant, semantic_layout
from semask.convert._rules import Rule, check_requested, rename, unwrap_state_dict
from semask.decoders.segformer_head import SegFormerHead
from semask.errors import CheckpointError, ConfigError
from semask.models.base import ModelConfig, model_config_class
from semask.models.zoo.mit import segformer_head_width
from semask.weights.keys import KeyReport, compare_keys

_OFFICIAL_DEAD = re.compile(r"^decode_head\.conv_seg\.")
_IMAGENET_HEAD = re.compile(r"^(head|classifier)\.")
_BLOCK = re.compile(r"^backbone\.block(\d)\.(\d+)\.")
_KEY = re.compile(r"^(.*\.attn)\.k\.(weight|bias)$")


def _stage(template: str) -> Callable[[re.Match], str]:
    """A replacement writing the 0-based stage index of group 1 as the official 1-based one."""
    return lambda m: template.format(int(m[1]) + 1)


_HF_RULES: list[Rule] = [
    (r"^segformer\.", ""),
    # transformers 4.x / Hub names
    (r"^encoder\.patch_embeddings\.(\d)\.", _stage("backbone.patch_embed{}.")),
    (r"^encoder\.block\.(\d)\.", _stage("backbone.block{}.")),
    (r"^encoder\.layer_norm\.(\d)\.", _stage("backbone.norm{}.")),
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.attention\.self\.query\.", ".attn.q."),
    (r"\.attention\.self\.key\.", ".attn.k."),
    (r"\.attention\.self\.value\.", ".attn.v."),
    (r"\.attention\.self\.sr\.", ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", ".attn.norm."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"^decode_head\.linear_c\.(\d)\.", _stage("decode_head.linear_c{}.")),
    # transformers 5.x names
    (r"^stages\.(\d)\.patch_embeddings\.", _stage("backbone.patch_embed{}.")),
    (r"^stages\.(\d)\.blocks\.", _stage("backbone.block{}.")),
    (r"^stages\.(\d)\.layer_norm\.", _stage("backbone.norm{}.")),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.(q|k|v)_proj\.", r".attn.\1."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.norm."),
    (r"^decode_head\.linear_projections\.(\d)\.", _stage("decode_head.linear_c{}.")),
    # both
    (r"^(backbone\.patch_embed\d)\.layer_norm\.", r"\1.norm."),
    (r"^decode_head\.linear_fuse\.weight$", "decode_head.linear_fuse.conv.weight"),
    (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
    (r"^decode_head\.classifier\.", "decode_head.linear_pred."),
]


def infer_mit_arch(sd: dict[str, torch.Tensor], num_heads: tuple[int, ...] = (1, 2, 5, 8)) -> dict:
    """:class:`SeMaskMiT` keyword arguments read from the shapes of ``backbone.*`` keys.

    Read: ``embed_dims`` (``patch_embed{s}.proj`` rows), ``depths`` (blocks per stage), ``sr_ratios``
    (``attn.sr`` kernel, 1 without it), ``mlp_ratios`` (``mlp.fc1`` rows / C). The head count is not stored in
    the weights; ``num_heads`` is passed through (default: the official (1, 2, 5, 8) of every MiT-B*).

    Raises:
        CheckpointError: a needed key is absent (not a MiT checkpoint) or a stage has no blocks.
    """
    depth = {s: 0 for s in range(1, 5)}
    for key in sd:
        if m := _BLOCK.match(key):
            depth[int(m[1])] = max(depth[int(m[1])], int(m[2]) + 1)
    if min(depth.values()) == 0:
        raise CheckpointError(f"not a MiT checkpoint: blocks per stage {depth} (every stage needs blocks)")

    def shape(key: str) -> torch.Size:
        if "backbone." + key not in sd:
            raise CheckpointError(f"not a MiT checkpoint: it has no 'backbone.{key}'")
        return sd["backbone." + key].shape

    dims = tuple(shape(f"patch_embed{s}.proj.weight")[0] for s in range(1, 5))
    sr = tuple(
        sd[k].shape[-1] if (k := f"backbone.block{s}.0.attn.sr.weight") in sd else 1 for s in range(1, 5)
    )
    mlp = tuple(shape(f"block{s}.0.mlp.fc1.weight")[0] / dims[s - 1] for s in range(1, 5))
    return dict(
        embed_dims=dims,
        depths=tuple(depth.values()),
        num_heads=num_heads,
        sr_ratios=sr,
        mlp_ratios=mlp,
    )


def infer_head_arch(sd: dict[str, torch.Tensor]) -> dict:
    """:class:`SegFormerHead` keyword arguments (besides ``in_channels``) from ``decode_head.*`` shapes:
    ``num_classes`` and ``embed_dim`` (``linear_pred`` rows and columns).

    Raises:
        CheckpointError: no ``decode_head.linear_pred.weight``.
    """
    key = "decode_head.linear_pred.weight"
    if key not in sd:
        raise CheckpointError(f"not a SegFormer checkpoint: it has no {key!r}")
    num_classes, embed_dim = sd[key].shape[:2]
    return dict(num_classes=num_classes, embed_dim=embed_dim)


def _report(sd: dict[str, torch.Tensor], with_head: bool) -> KeyReport:
    """Keys/shapes of ``sd`` against the (meta-built) plain MiT, plus SegFormer head when ``with_head``."""
    arch = infer_mit_arch(sd)
    with torch.device("meta"):
        modules = {"backbone": SeMaskMiT(**arch)}
        if with_head:
            modules["decode_head"] = SegFormerHead(arch["embed_dims"], **infer_head_arch(sd))
    expected = {f"{p}.{k}": v.shape for p, mod in modules.items() for k, v in mod.state_dict().items()}
    return compare_keys(sd, expected)


def convert_mit_imagenet(ckpt: dict) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """NVlabs ImageNet ``mit_b*.pth`` (bare or wrapped state dict) -> ``backbone.*`` keys; ``head.*`` dropped.

    Returns:
        ``(sd, report)``; the report is against the plain MiT of the inferred size (load ``sd`` with
        ``strict=False`` into a SegFormer or SeMask-MiT model: the head and semantic layers keep their init).

    Raises:
        CheckpointError: no tensors, or the architecture cannot be read.
    """
    sd = {f"backbone.{k}": v for k, v in unwrap_state_dict(ckpt).items() if not _IMAGENET_HEAD.match(k)}
    return sd, _report(sd, with_head=False)


def convert_segformer_official(ckpt: dict) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """Official SegFormer checkpoint (``{"state_dict": ...}``) -> the keys of
    :class:`~semask.models.segmenter.Segmenter` (``segformer_mit_b*``); the dead ``decode_head.conv_seg.*`` is dropped.

    Raises:
        CheckpointError: no tensors, or the architecture cannot be read.
    """
    sd = {k: v for k, v in unwrap_state_dict(ckpt).items() if not _OFFICIAL_DEAD.match(k)}
    return sd, _report(sd, with_head=True)


def convert_segformer_hf(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """Hugging Face SegFormer state dict (``nvidia/segformer-b*``: whole model; ``nvidia/mit-b*``: backbone,
    its ImageNet ``classifier.*`` dropped), transformers 4.x/Hub or 5.x names -> semask keys.

    Returns:
        ``(sd, report)``; the report covers the head only when the input has ``decode_head.*`` keys.

    Raises:
        CheckpointError: the architecture cannot be read.
    """
    out = rename({k: v for k, v in sd.items() if not _IMAGENET_HEAD.match(k)}, _HF_RULES)
    for key in [k for k in out if _KEY.match(k)]:
        value_key = _KEY.sub(r"\1.v.\2", key)
        if value_key in out:
            out[_KEY.sub(r"\1.kv.\2", key)] = torch.cat([out.pop(key), out.pop(value_key)])
    return out, _report(out, with_head=any(k.startswith("decode_head.") for k in out))


def read_mit_checkpoint(ckpt: dict) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """Any of the layouts above, told apart by its keys: Hugging Face (``segformer.*``), official SegFormer
    (``backbone.*`` / ``decode_head.*``), else NVlabs ImageNet ``mit_b*.pth``."""
    sd = unwrap_state_dict(ckpt)
    if any(k.startswith("segformer.") for k in sd):
        return convert_segformer_hf(sd)
    if any(k.startswith(("backbone.", "decode_head.")) for k in sd):
        return convert_segformer_official(sd)
    return convert_mit_imagenet(sd)


def _no_window(window_size: int | None) -> None:
    if window_size is not None:
        raise ConfigError("window_size does not apply to MiT (it has no attention windows)")


def convert_segformer(
    ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """``semask convert --from segformer``: a whole SegFormer model (official NVlabs/mmseg checkpoint or Hugging
    Face ``nvidia/segformer-b*``) -> ``segformer_mit_b*`` config (sizes, K and head width E read from the
    weights) and its complete state dict.

    Raises:
        CheckpointError: not a whole SegFormer model (e.g. an ImageNet backbone: use ``mit-imagenet``), any
            unmapped, missing or mismatched key, or ``num_classes`` differing from the weights'.
        ConfigError: ``semantic_attention`` (SegFormer has no semantic layers) or ``window_size`` given.
    """
    _no_window(window_size)
    if semantic_attention is not None:
        raise ConfigError("SegFormer checkpoints have no semantic layers; convert without semantic_attention")
    sd, report = read_mit_checkpoint(ckpt)
    if not any(k.startswith("decode_head.") for k in sd):
        raise CheckpointError("no decode_head.* keys: a backbone checkpoint (convert it --from mit-imagenet)")
    report.raise_if_bad("SegFormer checkpoint")
    arch, head = infer_mit_arch(sd), infer_head_arch(sd)
    cfg = model_config_class("mit", "segformer_head")(
        arch=f"segformer_{mit_variant(arch['embed_dims'], arch['depths'])}",
        num_classes=head["num_classes"],
        decoder_channels=head["embed_dim"],
        **arch,
    )
    check_requested(cfg, num_classes=num_classes)
    return cfg, sd


def convert_mit_backbone(
    ckpt: dict,
    *,
    semantic_attention: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    sem_window_size: int | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """``semask convert --from mit-imagenet``: MiT ImageNet weights (NVlabs ``mit_b*.pth`` or Hugging Face
    ``nvidia/mit-b*``) -> the ``backbone.*`` weights of a SeMask-MiT model of that size.

    Args:
        semantic_attention: the returned config's layout (default :func:`semantic_layout` of ``num_classes``).
        num_classes: K of the returned config (default 150).
        sem_window_size: semantic window of the returned config (default 7).

    Returns:
        ``(cfg, sd)``: ``semask_mit_b*`` config and the plain MiT weights (load with ``strict=False`` or
        :func:`semask.convert.load_imagenet_backbone`: semantic layers and head keep their init).

    Raises:
        CheckpointError: unmapped, missing or mismatched backbone keys (all listed).
        ConfigError: ``window_size`` given.
    """
    _no_window(window_size)
    sd, report = read_mit_checkpoint(ckpt)
    sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    report.raise_if_bad("MiT ImageNet checkpoint")
    arch = infer_mit_arch(sd)
    variant, num_classes = mit_variant(arch["embed_dims"], arch["depths"]), num_classes or 150
    cfg = model_config_class("mit", "segformer_head")(
        arch=f"semask_{variant}",
        num_classes=num_classes,
        decoder_channels=segformer_head_width(variant),
        semantic_attention=semantic_attention or semantic_layout(num_classes),
        sem_window_size=sem_window_size or 7,
        **arch,
    )
    return cfg, sd


def imagenet_state_dict(ckpt: dict, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """MiT ImageNet weights (NVlabs ``mit_b*.pth`` or Hugging Face ``nvidia/mit-b*``) -> ``backbone.*`` keys
    (SegFormer's init: the official config's ``pretrained='pretrain/mit_b*.pth'``); semantic layers and decoder
    keep their init."""
    sd, _ = read_mit_checkpoint(ckpt)
    return {k: v for k, v in sd.items() if k.startswith("backbone.")}


def is_imagenet_key(key: str) -> bool:
    """The model keys that MiT ImageNet weights must cover: the backbone's, but its semantic layers."""
    return key.startswith("backbone.") and ".semantic_layer" not in key
