"""Weight files: atomic writes, safe reads, safetensors, checksums.

Reading never executes code from a file: ``.safetensors`` hold tensors only, and pickled ``torch.save`` files
are read with ``weights_only=True`` plus an explicit allow-list of the numpy objects official mmcv checkpoints
carry. Every failure raises :class:`CheckpointError` with a one-line message naming the file.

"""

import errno
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

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
    """Read a ``.safetensors`` file, a ``torch.save`` file with ``weights_only=True`` (never unsafe pickle), or a
    detectron2 model-zoo ``.pkl`` (numpy arrays only).

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
    if path.suffix == ".pkl":
        return _read_pkl(path)
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


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers, strings and numpy arrays only (detectron2 model-zoo ``.pkl`` files)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}": g[0]
            if isinstance(g, tuple)
            else g
            for g in _numpy_safe_globals()
        }
        if f"{module}.{name}" not in allowed:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return allowed[f"{module}.{name}"]


def _read_pkl(path: Path) -> dict[str, Any]:
    """A detectron2 ``.pkl`` (``{"model": {name: numpy array}, "__author__": ...}``) with tensors for arrays.

    Raises:
        CheckpointError: a truncated or corrupt file, or one that pickles anything but numpy arrays and plain data.
    """
    try:
        with open(path, "rb") as f:
            data = _NumpyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: the .pkl holds objects other than numpy arrays and plain data ({_one_line(e)}); semask "
            "will not unpickle it"
        ) from e
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable .pkl (truncated or corrupt?): {_one_line(e)}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a .pkl checkpoint is a dict, this one holds a {type(data).__name__}")
    model = data.get("model", data)
    return data | {
        "model": {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in model.items()
            if isinstance(v, np.ndarray)
        }
    }


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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
