"""Training checkpoints: atomic writes, safe loads, and resolving a model argument for eval/predict.

Format (a dict saved with ``torch.save``, loadable with ``weights_only=True``): ``model`` (state dict),
``model_config`` (network config dict), ``experiment`` (resolved experiment config dict), ``iteration``,
``optimizer``, ``scaler``, ``rng``, ``best``, ``semask_version``.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from semask.errors import CheckpointError


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (or a full disk) mid-write leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a semask training checkpoint with ``weights_only=True`` (never executes code from the file).

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a semask training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt zips/pickles
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(
            f"{path}: not a semask training checkpoint (expected keys 'model', 'model_config')"
        )
    return ckpt


def load_trained_model(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A network ready for eval/predict from a run directory, a training checkpoint or converted weights.

    Args:
        path: run folder (uses ``best.pt``, else ``last.pt``), ``*.pt`` training checkpoint, or
            ``*.safetensors`` written by ``semask convert`` (config in the sibling ``.json``).

    Returns:
        (model in eval mode, info) where info may hold ``classes``, ``palette`` and ``experiment``.

    Raises:
        CheckpointError: nothing loadable at ``path``, or weights that do not fit the stored config.
    """
    from semask.models.segmenter import SeMaskFPN, SeMaskFPNConfig

    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "best.pt", path / "last.pt") if p.is_file()]
        if not found:
            raise CheckpointError(f"{path}: run folder holds neither best.pt nor last.pt")
        path = found[0]
    if path.suffix == ".safetensors":
        from semask.pretrained import load_model

        return load_model(path).eval(), {}
    ckpt = load_checkpoint(path)
    try:
        model = SeMaskFPN(SeMaskFPNConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not fit the stored model config ({e})") from None
    info = {k: ckpt[k] for k in ("classes", "palette", "experiment") if k in ckpt}
    return model.eval(), info
