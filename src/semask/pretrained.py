"""semask's own weight files: ``NAME.safetensors`` plus a sibling ``NAME.json`` holding the model config.

The JSON is ``{"format": "semask", "config": SeMaskFPNConfig.to_dict(), "semask_version": ...}``; loading is
strict (every key, every shape), so a file always rebuilds exactly the network that wrote it.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from semask.errors import CheckpointError, ConfigError
from semask.models.segmenter import SeMaskFPN, SeMaskFPNConfig

FORMAT = "semask"


def _json_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write tensors to a ``.safetensors`` file. Raises ConfigError for another suffix."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: weights are written as safetensors; use a name ending in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in state_dict.items()}, str(path), metadata={"format": "pt"}
    )
    return path


def save_weights(cfg: SeMaskFPNConfig, state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``state_dict`` to ``path`` (``.safetensors``) and ``cfg`` to the sibling ``.json``. Returns ``path``."""
    from semask import __version__

    path = write_safetensors(state_dict, path)
    meta = {"format": FORMAT, "config": cfg.to_dict(), "semask_version": __version__}
    _json_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def save_model(model: SeMaskFPN, path: str | Path) -> Path:
    """Save ``model`` (weights + config) as ``path`` (``.safetensors``) and its sibling ``.json``."""
    return save_weights(model.cfg, model.state_dict(), path)


def read_config(path: str | Path) -> SeMaskFPNConfig:
    """The model config stored beside weight file ``path``.

    Raises:
        CheckpointError: the ``.json`` is missing, unreadable, not of format ``semask``, or holds a bad config.
    """
    meta_path = _json_path(Path(path))
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        return SeMaskFPNConfig.from_dict(meta["config"])
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


def load_model(path: str | Path, device: str | torch.device = "cpu", sha256: str | None = None) -> SeMaskFPN:
    """Rebuild a model saved by :func:`save_model` (or ``semask convert``), strictly, in eval mode.

    Args:
        path: the ``.safetensors`` file (its ``.json`` must sit beside it).
        device: where the model goes.
        sha256: if given, the expected hex SHA-256 of the ``.safetensors`` file.

    Raises:
        CheckpointError: missing/invalid config, unreadable weights, SHA-256 mismatch, or keys/shapes that do not
            fit the config (each named).
    """
    path = Path(path)
    cfg = read_config(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    if sha256 is not None and (actual := file_sha256(path)) != sha256.lower():
        raise CheckpointError(f"{path}: SHA-256 is {actual}, expected {sha256} (corrupt or different file)")
    try:
        sd = load_file(path)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    model = SeMaskFPN(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # torch names every missing/unexpected key and shape mismatch
        raise CheckpointError(f"{path}: weights do not fit the config in {_json_path(path).name}: {e}") from e
    return model.to(device).eval()
