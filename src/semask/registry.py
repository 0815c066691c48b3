"""The three registries a model is composed from (timm / mmseg style): backbones, decoders and whole models.

- :data:`BACKBONES`: name -> :class:`Part` (config dataclass + builder of a :class:`~semask.backbones.base.Backbone`).
- :data:`DECODERS`: name -> :class:`Part` (config dataclass + builder of the decoder, its prior decoder and its loss).
- :data:`MODELS`: whole-model entrypoints registered with ``@register_model`` (``semask_swin_tiny_fpn`` ...), each
  a named function that fixes a backbone, a decoder and their default fields.
- :data:`PRETRAINED`: released weights by ``arch.tag`` name and SHA-256 (:class:`PretrainedCfg`), loaded with
  :func:`semask.load`.

Nothing here imports a model: the modules that define parts register them when :mod:`semask.models` is imported
(which importing ``semask`` does).
"""

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Part:
    """A registered backbone or decoder: its config dataclass and the function that builds it from one."""

    config: type
    build: Callable[..., Any]


class Registry:
    """Name -> object, with a clear error for unknown or duplicate names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, item: Any) -> Any:
        """Add ``item`` under ``name``. Raises ValueError on a duplicate name."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> Any:
        """Raises KeyError naming the close matches of an unknown name."""
        if name not in self._items:
            close = [n for n in self._items if name.split("_")[0] in n][:8]
            raise KeyError(f"unknown {self.kind} {name!r}; similar: {close}; all: semask list")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching an fnmatch ``pattern``."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))


@dataclass(frozen=True)
class PretrainedCfg:
    """A released weight file known by ``arch.tag`` name and checksum. Nothing is downloaded: the user fetches and
    converts the release (``semask convert``) once; the file is then found in :func:`cache_dir`.

    Attributes:
        file: name of the ``.safetensors`` file (its sidecar ``.json`` beside it).
        sha256: hex SHA-256 of ``file``, checked before the file is read.
        fields: config fields of the weights that differ from the arch's defaults (e.g. ``num_classes``).
        source: where the original release comes from and how it was converted (shown when the file is missing).
    """

    file: str
    sha256: str
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = ""


PRETRAINED: dict[str, PretrainedCfg] = {}
"""Registered weights by name, e.g. ``"semask_swin_tiny_fpn.ade20k_512"``; add entries with their SHA-256."""


def cache_dir() -> Path:
    """Where registered weight files are looked for: ``$SEMASK_CACHE``, else ``~/.cache/semask``."""
    return Path(os.environ.get("SEMASK_CACHE", Path.home() / ".cache" / "semask"))


BACKBONES = Registry("backbone")
DECODERS = Registry("decoder")
MODELS = Registry("model")


def register_part(registry: Registry, name: str, config: type) -> Callable[[Callable], Callable]:
    """Decorator: register a builder ``fn(cfg, ...)`` under ``name`` with its config dataclass."""

    def wrap(fn: Callable) -> Callable:
        registry.register(name, Part(config, fn))
        return fn

    return wrap


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a whole-model entrypoint under its function name (``def semask_swin_tiny_fpn(**fields)``)."""
    return MODELS.register(fn.__name__, fn)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered architectures matching an fnmatch ``pattern``."""
    return MODELS.names(pattern)


def create_model(name: str, **fields) -> nn.Module:
    """Build a registered architecture with random (official-style) init.

    Args:
        name: architecture name, e.g. ``semask_swin_tiny_fpn`` (see :func:`list_models`), or a registered weight
            name ``arch.tag`` (:data:`PRETRAINED`): the architecture with those weights' fields (their weights:
            :func:`semask.load`).
        **fields: model config fields, e.g. ``num_classes=19``, ``semantic_attention=("window",) * 4``,
            ``drop_path_rate=0.1``, ``use_checkpoint=True``; ``create_model(cfg["arch"], **cfg)`` with a stored
            config dict ``{"arch": ..., **fields}`` rebuilds the network that wrote it.

    Raises:
        KeyError: unknown name (the message lists close matches).
        TypeError: a field the architecture's config does not have (the message lists its fields).
        ValueError: an invalid field value.
    """
    fields.pop("arch", None)
    if name in PRETRAINED:
        name, fields = name.split(".", 1)[0], PRETRAINED[name].fields | fields
    return MODELS[name](**fields)
