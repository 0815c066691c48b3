"""Registered SeMask-Swin / Swin Semantic-FPN architectures (paper Table 2; SPEC A1 hyperparameters).

Unless ``semantic_attention`` is given, the per-stage layout follows the official FPN rule
(:func:`official_semantic_layout`). ``swin_*_fpn`` are the paper's baselines without semantic layers.
"""

from dataclasses import fields, replace

from semask.models.segmenter import SeMaskFPN, SeMaskFPNConfig, official_semantic_layout
from semask.registry import register_model

_SIZES = {
    "tiny": dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, sem_window_size=7
    ),
    "small": dict(
        embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, sem_window_size=7
    ),
    "base": dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, sem_window_size=12
    ),
    "large": dict(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12, sem_window_size=12
    ),
    # tiny test/demo models (not in the paper)
    "test": dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=7, sem_window_size=7),
    "nano": dict(
        embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 3, 6, 12), window_size=7, sem_window_size=7
    ),
}


def build_fpn(cfg: SeMaskFPNConfig) -> SeMaskFPN:
    """Build a network from a full config (used by ``create_model`` and checkpoint loading)."""
    return SeMaskFPN(cfg)


def _build(arch: str, size: str, semantic: bool, **overrides) -> SeMaskFPN:
    names = {f.name for f in fields(SeMaskFPNConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"{arch}: unknown config fields {sorted(unknown)}")
    cfg = replace(SeMaskFPNConfig(arch=arch, **_SIZES[size]), **overrides)
    if semantic and "semantic_attention" not in overrides:
        cfg = replace(cfg, semantic_attention=official_semantic_layout(cfg.embed_dim, cfg.num_classes))
    if not semantic:
        cfg = replace(cfg, semantic_attention=None)
    if size in ("test", "nano") and "decoder_channels" not in overrides:
        cfg = replace(cfg, decoder_channels=32 if size == "test" else 64)
    return SeMaskFPN(cfg)


def _entry(size: str, semantic: bool):
    name = f"{'semask_' if semantic else ''}swin_{size}_fpn"

    def fn(**overrides) -> SeMaskFPN:
        return _build(name, size, semantic, **overrides)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (
        f"{'SeMask-' if semantic else ''}Swin-{size} Semantic-FPN. Overrides: SeMaskFPNConfig fields."
    )
    return register_model(fn)


for _size in _SIZES:
    for _semantic in (True, False):
        _entry(_size, _semantic)
