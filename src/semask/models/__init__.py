"""Whole segmentation models and their registry entrypoints."""

from torch import nn


def network_from_config(config: dict) -> nn.Module:
    """Rebuild a network from its config dict (``cfg.to_dict()`` as stored in checkpoints and weight ``.json``).

    A dict with a ``decoder`` field is a :class:`~semask.models.semask_m2f.SeMaskM2FConfig` (Mask2Former, MaskFormer
    and their FaPN variants), any other a :class:`~semask.models.segmenter.SeMaskFPNConfig`.

    Raises:
        ValueError, TypeError: unknown keys or invalid values.
    """
    if "decoder" in config:
        from semask.models.semask_m2f import SeMaskM2F, SeMaskM2FConfig

        return SeMaskM2F(SeMaskM2FConfig.from_dict(config))
    from semask.models.segmenter import SeMaskFPN, SeMaskFPNConfig

    return SeMaskFPN(SeMaskFPNConfig.from_dict(config))
