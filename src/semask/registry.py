"""One registry of whole models (timm style): ``@register_model`` entrypoints, ``create_model``, ``list_models``."""

import fnmatch
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register an entrypoint under its function name. Raises ValueError on a duplicate name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered architectures matching an fnmatch ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered architecture with random (official-style) init.

    Args:
        name: architecture name, e.g. ``semask_swin_tiny_fpn``.
        **overrides: config fields, e.g. ``num_classes=19``, ``semantic_attention=("window",) * 4``,
            ``drop_path_rate=0.1``, ``use_checkpoint=True``.

    Raises:
        KeyError: unknown name (the message lists close matches).
        TypeError: unknown config field.
    """
    if name not in _MODELS:
        close = [n for n in _MODELS if name.split("_")[0] in n][:8]
        raise KeyError(f"unknown model {name!r}; see semask.list_models(). Similar: {close}")
    return _MODELS[name](**overrides)
