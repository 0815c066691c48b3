"""Experiment presets: ``load_config(name, overrides)`` and ``list_configs(pattern)``."""

import fnmatch
import json
from pathlib import Path

from semask.configs.presets import PRESETS
from semask.configs.schema import (
    DataCfg,
    EvalCfg,
    ExperimentCfg,
    InferenceCfg,
    OptimCfg,
    TrainCfg,
    apply_overrides,
)
from semask.errors import ConfigError

__all__ = [
    "DataCfg",
    "EvalCfg",
    "ExperimentCfg",
    "InferenceCfg",
    "OptimCfg",
    "TrainCfg",
    "list_configs",
    "load_config",
]


def list_configs(pattern: str = "*") -> list[str]:
    """Sorted preset names matching an fnmatch ``pattern``."""
    return sorted(n for n in PRESETS if fnmatch.fnmatch(n, pattern))


def load_config(name: str, overrides: list[str] | None = None) -> ExperimentCfg:
    """A preset by name, or a JSON dump (``config.json`` of a run), with ``section.field=value`` overrides.

    Raises:
        ConfigError: unknown preset, unreadable JSON, or a bad override.
    """
    if name in PRESETS:
        cfg = PRESETS[name]()
    elif name.endswith(".json") and Path(name).is_file():
        try:
            cfg = ExperimentCfg.from_dict(json.loads(Path(name).read_text()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{name}: not valid JSON ({e})") from None
    else:
        close = [n for n in PRESETS if name.split("_")[0] in n][:5]
        raise ConfigError(f"unknown preset {name!r}; `semask list --configs` lists them. Similar: {close}")
    return apply_overrides(cfg, overrides or [])
