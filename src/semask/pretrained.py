"""semask's own weight files: ``NAME.safetensors`` plus a sibling ``NAME.json`` holding the model config, and
:func:`load_model`, the one loader for every kind of semask model file (also run checkpoints and run folders).

The JSON is ``{"format": "semask", "config": cfg.to_dict(), "semask_version": ...}`` with the network's config
(:class:`~semask.models.segmenter.SeMaskFPNConfig` or :class:`~semask.models.semask_m2f.SeMaskM2FConfig`); loading is
strict (every key, every shape), so a file always rebuilds exactly the network that wrote it.

:data:`PRETRAINED` registers weight files by name with their SHA-256 (:class:`PretrainedCfg`); nothing is ever
downloaded: :func:`load_pretrained` reads a local file and refuses one whose checksum differs.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from semask.engine.checkpoint import load_trained_model, load_weights, read_checkpoint, run_checkpoint
from semask.errors import CheckpointError, ConfigError
from semask.models import network_from_config
from semask.models.segmenter import ConfigDict

FORMAT = "semask"


def _json_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write tensors to a ``.safetensors`` file. A tensor stored under several keys (FaPN's shared GroupNorms) is
    written once per key. Raises ConfigError for another suffix."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: weights are written as safetensors; use a name ending in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, storages = {}, set()
    for key, value in state_dict.items():
        value = value.detach().contiguous()
        storage = value.untyped_storage().data_ptr()
        tensors[key] = value.clone() if storage in storages else value  # safetensors refuses shared memory
        storages.add(storage)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def save_weights(cfg: ConfigDict, state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``state_dict`` to ``path`` (``.safetensors``) and ``cfg`` to the sibling ``.json``. Returns ``path``."""
    from semask import __version__

    path = write_safetensors(state_dict, path)
    meta = {"format": FORMAT, "config": cfg.to_dict(), "semask_version": __version__}
    _json_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def save_model(model: nn.Module, path: str | Path) -> Path:
    """Save ``model`` (a semask network with a ``cfg``: weights + config) as ``path`` (``.safetensors``) and its
    sibling ``.json``."""
    return save_weights(model.cfg, model.state_dict(), path)


def read_config(path: str | Path) -> dict:
    """The model config dict stored beside weight file ``path`` (see :func:`semask.models.network_from_config`).

    Raises:
        CheckpointError: the ``.json`` is missing, unreadable, not of format ``semask``, or holds a bad config.
    """
    meta_path = _json_path(Path(path))
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        if not isinstance(meta.get("config"), dict):
            raise ValueError("no 'config' object")
        return meta["config"]
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{meta_path}: missing (semask weights need their config .json beside them)"
        ) from e
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{meta_path}: not a valid semask model config: {e}") from e


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(
    path: str | Path, device: str | torch.device = "cpu", sha256: str | None = None, with_info: bool = False
) -> nn.Module | tuple[nn.Module, dict]:
    """Load any semask model file, strictly (every key, every shape), in eval mode: the one public loader.

    Args:
        path: a ``.safetensors`` file written by :func:`save_model` or ``semask convert`` (its ``.json`` config
            beside it); a training checkpoint ``.pt`` (a run's ``best.pt`` or ``last.pt``, which carry the
            config, class names and palette); or a run folder (its ``best.pt``, else ``last.pt``).
        device: where the model goes.
        sha256: if given, the expected hex SHA-256 of the file read, checked before reading it.
        with_info: also return the info dict: ``classes`` (names), ``palette`` ((r, g, b) per class) and
            ``experiment`` (the run's config dict) of a training checkpoint; ``{}`` for ``.safetensors``.

    Returns:
        The model, or ``(model, info)`` with ``with_info``.

    Raises:
        CheckpointError: one line naming the file: missing/invalid config, unreadable weights, SHA-256 mismatch
            (naming both digests), keys/shapes that do not fit the config, or a file that is not weights (a
            run's ``config.json`` or a model ``.json``: the message says what to pass instead; a folder that
            is not a run folder).
    """
    path = run_checkpoint(Path(path))
    if sha256 is not None and path.is_file() and (actual := file_sha256(path)) != sha256.lower():
        raise CheckpointError(f"{path}: SHA-256 is {actual}, expected {sha256} (corrupt or different file)")
    if path.suffix == ".safetensors":
        model, info = _load_safetensors(path), {}
    else:
        model, info = load_trained_model(path)
    model = model.to(device).eval()
    return (model, info) if with_info else model


def _load_safetensors(path: Path) -> nn.Module:
    """The network of ``path`` (``.safetensors``) built from its sibling ``.json`` config."""
    cfg = read_config(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    try:
        model = network_from_config(cfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{_json_path(path)}: not a valid semask model config: {e}") from e
    load_weights(model, read_checkpoint(path), f"{path} (config {_json_path(path).name})")
    return model


# ------------------------------------------------------------------------------------- registered weights
@dataclass(frozen=True)
class PretrainedCfg:
    """A released weight file known by name and checksum. Nothing is downloaded: the user fetches and converts
    the release (``semask convert``) once, then the file is found in :func:`cache_dir` or given by path.

    Attributes:
        file: name of the ``.safetensors`` file (its ``.json`` config sits beside it).
        sha256: hex SHA-256 of ``file``, checked before the file is read.
        num_classes: head classes K of the weights.
        source: where the original release comes from and how it was converted (shown when the file is missing).
    """

    file: str
    sha256: str
    num_classes: int
    source: str = ""


PRETRAINED: dict[str, PretrainedCfg] = {}
"""Registered weights by name, e.g. ``"semask_swin_tiny_fpn.ade20k_512"``; add entries with their SHA-256."""


def cache_dir() -> Path:
    """Where registered weight files are looked for: ``$SEMASK_CACHE``, else ``~/.cache/semask``."""
    return Path(os.environ.get("SEMASK_CACHE", Path.home() / ".cache" / "semask"))


def load_pretrained(
    name: str, path: str | Path | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load registered weights ``name`` from ``path`` (default: ``cache_dir() / cfg.file``), SHA-256 checked.

    Raises:
        ConfigError: ``name`` is not registered.
        CheckpointError: the file is missing (the message says where it was looked for and where it comes from),
            its SHA-256 differs from the registered one (naming both), it is unreadable, or it does not have
            the registered number of classes.
    """
    if name not in PRETRAINED:
        raise ConfigError(
            f"no registered weights {name!r}; registered: {', '.join(sorted(PRETRAINED)) or 'none'}"
        )
    cfg = PRETRAINED[name]
    path = Path(path) if path is not None else cache_dir() / cfg.file
    if not path.is_file():
        raise CheckpointError(
            f"{path}: weights {name!r} not found (semask downloads nothing; get them from {cfg.source or 'their release'} "
            "and place the converted file there, or pass its path)"
        )
    model = load_model(path, device, sha256=cfg.sha256)
    if model.num_classes != cfg.num_classes:
        raise CheckpointError(f"{path}: {model.num_classes} classes, but {name!r} has {cfg.num_classes}")
    return model
