"""Checkpoint files: atomic writes, safe reads, strict weight loading, and resolving a model argument.

Reading never executes code from a file: ``.safetensors`` hold tensors only, and pickled ``torch.save`` files
are read with ``weights_only=True`` plus an explicit allow-list of the numpy objects official mmcv checkpoints
carry. Every failure raises :class:`CheckpointError` with a one-line message naming the file.

Training-checkpoint format (a dict saved with ``torch.save``): ``model`` (state dict), ``model_config``
(network config dict), ``experiment`` (resolved experiment config dict), ``classes``, ``palette``,
``iteration``, ``optimizer``, ``scaler``, ``rng``, ``best``, ``nonfinite``.
"""

import errno
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semask.errors import CheckpointError, ConfigError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _one_line(err: BaseException) -> str:
    """First line of an exception's message (torch's are often paragraphs), prefixed by its type."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: ``torch.save`` reports a failed write as a RuntimeError raised from it."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash, a kill or a full disk mid-write leaves the previous file at ``path`` intact; on an error the temp
    file is removed (after a kill, :func:`remove_stale_temp_files` removes it).

    Raises:
        CheckpointError: the file could not be written (the message names ``path`` and the reason, e.g. that
            the disk is full).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        os_err = _os_error(err)
        if os_err is None:
            raise
        reason = "the disk is full" if os_err.errno in _DISK_FULL else (os_err.strerror or str(os_err))
        raise CheckpointError(
            f"{path}: cannot write the checkpoint: {reason}; any previous {path.name} is left intact"
        ) from err


def remove_stale_temp_files(path: str | Path) -> None:
    """Delete the temp files that a killed :func:`save_atomic` of ``path`` left beside it."""
    path = Path(path)
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        stale.unlink(missing_ok=True)


def _numpy_safe_globals() -> list:
    """numpy objects that official mmcv checkpoints pickle in ``meta`` (arrays, scalars, dtypes).

    Both the numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) names are allowed.
    """
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: list = [np.ndarray, np.dtype] + [type(np.dtype(c)) for c in "?bBhHiIlLqQefdg"]
    for name in ("_reconstruct", "scalar"):
        fn = getattr(core, name)
        out += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    return out


def _weight_files_hint(folder: Path) -> str:
    """``" (it holds a.pth, b.pth: pass one of them)"`` for a folder passed where a file was expected."""
    names = sorted(f.name for f in folder.iterdir() if f.suffix in (".pth", ".pt", ".safetensors", ".pkl"))
    if not names:
        return " (it holds no .pth, .pt or .safetensors file)"
    return f" (it holds {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}: pass one of them)"


def _json_file_kind(path: Path) -> str | None:
    """What a JSON text file passed as weights is, and what to pass instead; None for any other file."""
    with open(path, "rb") as f:
        if not f.read(64).lstrip().startswith(b"{"):
            return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and data.get("format") == "semask":
        weights = path.with_suffix(".safetensors")
        return f"is the model config written beside {weights.name}, not weights; pass {weights}"
    if isinstance(data, dict) and {"model", "data", "train"} <= data.keys():
        run = path.parent
        return f"is a run's config file, not weights; pass the run folder {run} or {run / 'best.pt'}"
    return "is a JSON text file, not weights (semask reads .safetensors files and .pt/.pth torch checkpoints)"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``.safetensors`` file, or a ``torch.save`` file with ``weights_only=True`` (never unsafe pickle).

    numpy arrays/scalars in an mmcv ``meta`` dict are allowed through an explicit allow-list.

    Raises:
        CheckpointError: missing, truncated or corrupt file, a directory (the message lists the weight files
            inside), a JSON file (the message says what it is: a run's config or a model config, and what to
            pass instead), or a pickle holding other non-tensor objects (the message names them and says how to
            re-save such a trusted file).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file{_weight_files_hint(path)}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if (what := _json_file_kind(path)) is not None:
        raise CheckpointError(f"{path}: {what}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:
            raise CheckpointError(
                f"{path}: not a readable safetensors file (truncated or corrupt?): {_one_line(e)}"
            ) from e
    allowed = _numpy_safe_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in allowed}
        try:
            unsafe = [u for u in torch.serialization.get_unsafe_globals_in_checkpoint(path) if u not in names]
        except Exception:
            unsafe = []
        if not unsafe:  # torch's own message advises weights_only=False: unsafe, and no help for a bad file
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint (truncated or corrupt, or not a torch file)"
            ) from e
        raise CheckpointError(
            f"{path}: the checkpoint pickles non-tensor objects {unsafe} that semask will not unpickle "
            "(torch.load weights_only=True). If you trust the file, keep only its weights once, e.g. "
            "python -c \"import torch; c = torch.load('IN.pth', weights_only=False); "
            "torch.save({'state_dict': c.get('state_dict', c.get('model', c))}, 'OUT.pth')\", then convert OUT.pth"
        ) from e
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): {_one_line(e)}"
        ) from e


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a semask training checkpoint with :func:`read_checkpoint` (never executes code from the file).

    Raises:
        CheckpointError: missing, truncated/corrupt or unsafe file, or not a semask training checkpoint.
    """
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(
            f"{path}: not a semask training checkpoint (expected keys 'model', 'model_config'); "
            "an official release is read with `semask convert` first"
        )
    return ckpt


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` strictly (every key, every shape).

    Args:
        source: what the weights are, for the message (e.g. the file name).

    Raises:
        CheckpointError: one line naming ``source`` with the number of missing, unexpected and mismatched keys
            and the first of each (the classifier first, as it shows a class-count mismatch).
    """
    from semask.convert._rules import compare_keys

    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CheckpointError(f"{source}: the weights are not a mapping of names to tensors")
    report = compare_keys(state_dict, {k: v.shape for k, v in model.state_dict().items()})
    mismatched = sorted(report.mismatched, key=lambda m: not m.startswith("decode_head."))
    problems = [
        f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for label, keys in (
            ("shape mismatches", mismatched),
            ("missing keys", report.missing),
            ("unexpected keys", report.unmapped),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state_dict)


def run_checkpoint(path: Path) -> Path:
    """The file to load for ``path``: a run folder's ``best.pt``, else its ``last.pt``; any other path as given.

    Raises:
        CheckpointError: a folder that holds neither.
    """
    if not path.is_dir():
        return path
    found = [p for p in (path / "best.pt", path / "last.pt") if p.is_file()]
    if not found:
        raise CheckpointError(
            f"{path}: a folder without best.pt or last.pt (not a run folder){_weight_files_hint(path)}"
        )
    return found[0]


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
    from semask.models import network_from_config

    path = run_checkpoint(Path(path))
    if path.suffix == ".safetensors":
        from semask.pretrained import load_model

        return load_model(path).eval(), {}
    ckpt = load_checkpoint(path)
    try:
        model = network_from_config(ckpt["model_config"])
    except (ValueError, TypeError, KeyError, AttributeError, AssertionError) as e:
        raise CheckpointError(f"{path}: invalid model config ({_one_line(e)})") from None
    load_weights(model, ckpt["model"], str(path))
    info = {k: ckpt[k] for k in ("classes", "palette", "experiment") if k in ckpt}
    return model.eval(), info


def resolve_model(spec: str, num_classes: int | None = None) -> torch.nn.Module:
    """The network a ``MODEL`` argument names: a registered architecture (random init) or trained weights.

    Args:
        spec: architecture name, run folder, ``.pt`` training checkpoint or converted ``.safetensors``.
        num_classes: head classes K for an architecture.

    Returns:
        The network (``nn.Module``).

    Raises:
        ConfigError: ``spec`` is neither a registered name nor an existing path, or ``num_classes`` was given
            for trained weights.
        CheckpointError: the path holds nothing loadable.
    """
    from semask.registry import create_model, list_models

    if spec in list_models():
        return create_model(spec, **({} if num_classes is None else {"num_classes": num_classes}))
    if not Path(spec).exists():
        raise ConfigError(f"{spec!r} is neither a registered architecture (see `semask list`) nor a path")
    if num_classes is not None:
        raise ConfigError("--num-classes applies to architecture names only (trained weights fix K)")
    return load_trained_model(spec)[0]
