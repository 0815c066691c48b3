"""The written interface every semask model follows: its config, its outputs and the kinds of its predictions.

A model config is flat: ``{"arch": ..., "num_classes": ..., **backbone fields, **decoder fields}``. Its class is made
once per (backbone, decoder) pair from the two parts' config dataclasses (:func:`model_config_class`), so any
registered backbone composes with any registered decoder without a config class written for the pair.
"""

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

_C = TypeVar("_C", bound="ModelConfig")


@dataclass
class ModelConfig:
    """Fields every model has; a concrete config adds its backbone's and decoder's fields (flat).

    Attributes:
        arch: the registered entrypoint (``semask.list_models()``) that rebuilds the model from these fields.
        num_classes: K, classes of the segmentation head.
        num_prior_classes: classes of the semantic layers; None = ``num_classes`` (the official COCO-Stuff-10k
            SeMask-FPN checkpoints use 150 prior classes with 171 head classes, SPEC A5).
    """

    backbone_name: ClassVar[str]
    decoder_name: ClassVar[str]

    arch: str
    num_classes: int = 150
    num_prior_classes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"arch": ..., **fields}`` (JSON-ready: tuples stay tuples, JSON writes them as lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[_C], d: dict[str, Any]) -> _C:
        """Build from a dict (lists become tuples). Raises TypeError naming unknown keys and the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(
                f"{d.get('arch', cls.__name__)}: unknown config fields {sorted(unknown)}; fields: {sorted(known)}"
            )
        return cls(**{k: _tuples(v) for k, v in d.items()})

    def part(self, config: type) -> Any:
        """The part config (a backbone's or a decoder's dataclass) holding this config's values of its fields."""
        return config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(config)})

    def replace(self: _C, **fields) -> _C:
        return dataclasses.replace(self, **fields)

    def __reduce__(self) -> tuple:
        """Pickle (and deepcopy) by the part names: the class is made at run time, so it is made again."""
        return _rebuild, (self.backbone_name, self.decoder_name, self.to_dict())


def _rebuild(backbone: str, decoder: str, fields: dict[str, Any]) -> ModelConfig:
    return model_config_class(backbone, decoder)(**fields)


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


@functools.cache
def model_config_class(backbone: str, decoder: str) -> type[ModelConfig]:
    """The flat config dataclass of a (registered backbone, registered decoder) pair.

    Raises:
        KeyError: an unknown part.
        TypeError: the two parts define a field of the same name (each field must have one owner).
    """
    from semask.registry import BACKBONES, DECODERS

    parts = (BACKBONES[backbone].config, DECODERS[decoder].config)
    base = {f.name for f in dataclasses.fields(ModelConfig)}
    specs, owner = [], {}
    for part in parts:
        hints = typing.get_type_hints(part)
        for f in dataclasses.fields(part):
            if f.name in owner or f.name in base:
                raise TypeError(
                    f"{part.__name__}.{f.name} is also a field of {owner.get(f.name, 'ModelConfig')}"
                )
            owner[f.name] = part.__name__
            default = {"default": f.default} if f.default is not dataclasses.MISSING else {}
            specs.append((f.name, hints[f.name], dataclasses.field(**default)))
    name = "".join(w.title() for w in f"{backbone}_{decoder}".split("_")) + "Config"
    cls = dataclasses.make_dataclass(name, specs, bases=(ModelConfig,))
    cls.backbone_name, cls.decoder_name = backbone, decoder
    cls.__module__ = __name__
    return cls
