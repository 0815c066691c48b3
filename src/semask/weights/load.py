"""semask's model files and :func:`load`, the one loader.

A saved or converted model is ``NAME.safetensors`` plus the sidecar ``NAME.json``::

    {"format": "semask", "semask_version": ..., "model": {"arch": ..., **fields}, "classes": [...] | null,
     "palette": [[r, g, b], ...] | null, "mean": [...], "std": [...], "source": "...", "dataset": ... | null}

``semask.create_model(model["arch"], **model)`` rebuilds the network; loading is strict (every key, every shape).
A run's training checkpoint (``best.pt`` / ``last.pt``, a ``torch.save`` dict) holds ``model`` (state dict),
``model_config`` (the same ``{"arch", **fields}``), ``experiment`` (the run's config), ``classes``, ``palette``,
``iteration``, ``optimizer``, ``scaler``, ``rng``, ``best``, ``nonfinite``.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semask.data.transforms import MEAN, STD
from semask.errors import CheckpointError, ConfigError
from semask.registry import PRETRAINED, cache_dir, create_model, list_models
from semask.weights.files import (
    _one_line,
    _weight_files_hint,
    file_sha256,
    read_checkpoint,
    write_safetensors,
)
from semask.weights.keys import load_weights

FORMAT = "semask"


def sidecar_path(path: str | Path) -> Path:
    """The ``.json`` beside a ``.safetensors`` weight file."""
    return Path(path).with_suffix(".json")


def save_weights(
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    source: str = "",
    dataset: str | None = None,
) -> Path:
    """Write ``state_dict`` to ``path`` (``.safetensors``) and the sidecar ``.json``. Returns ``path``.

    Args:
        config: ``{"arch": ..., **fields}`` (``cfg.to_dict()``).
        classes, palette: class names and (r, g, b) colours, one per class, when known.
        source: where the weights come from (e.g. the converted file).
        dataset: the dataset kind the classes are those of (``semask eval`` reads it), when known.

    Raises:
        ConfigError: a name not ending in ``.safetensors``, or classes/palette of the wrong length.
    """
    from semask import __version__

    k = config["num_classes"]
    for name, values in (("classes", classes), ("palette", palette)):
        if values is not None and len(values) != k:
            raise ConfigError(f"{name} has {len(values)} entries but the model predicts {k} classes")
    path = write_safetensors(state_dict, path)
    meta = {
        "format": FORMAT,
        "semask_version": __version__,
        "model": config,
        "classes": None if classes is None else list(classes),
        "palette": None if palette is None else [list(c) for c in palette],
        "mean": list(MEAN),
        "std": list(STD),
        "source": source,
        "dataset": dataset,
    }
    sidecar_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def save_model(model: nn.Module, path: str | Path, **info) -> Path:
    """Save a :class:`~semask.models.segmenter.Segmenter` built from a config (``model.cfg``) as ``path``
    (``.safetensors``) and its sidecar; ``info``: ``classes``, ``palette``, ``source`` as :func:`save_weights`."""
    return save_weights(model.cfg.to_dict(), model.state_dict(), path, **info)


def read_sidecar(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model config dict, info)`` from the sidecar of weight file ``path``; info holds ``classes``,
    ``palette``, ``mean``, ``std``, ``source``, ``dataset`` (None where not recorded).

    Raises:
        CheckpointError: the ``.json`` is missing, unreadable, not of format ``semask``, or holds no model config.
    """
    meta_path = sidecar_path(path)
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        if not isinstance(meta.get("model"), dict) or "arch" not in meta["model"]:
            raise ValueError(
                "no 'model' object with an 'arch' (written by semask < 0.2? convert the weights again)"
            )
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{meta_path}: missing (semask weights need their config .json beside them)"
        ) from e
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{meta_path}: not a valid semask model config: {e}") from e
    info = {k: meta.get(k) for k in ("classes", "palette", "mean", "std", "source", "dataset")}
    return meta["model"], info


def model_from_config(config: dict[str, Any], source: str | Path) -> nn.Module:
    """``create_model(config["arch"], **config)``, errors as CheckpointError naming ``source``."""
    try:
        return create_model(config["arch"], **config)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid model config ({_one_line(e)})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a semask training checkpoint with :func:`~semask.weights.files.read_checkpoint` (never executes code).

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


def read_weights(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """``(model config, state dict, info)`` of a ``.safetensors`` + sidecar or a training checkpoint, without
    building the model (info as :func:`load` returns it).

    Raises:
        CheckpointError: as :func:`read_sidecar`, :func:`load_checkpoint` and
            :func:`~semask.weights.files.read_checkpoint`.
    """
    if path.suffix == ".safetensors":
        config, info = read_sidecar(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such weight file")
        return config, read_checkpoint(path), info
    ckpt = load_checkpoint(path)
    info = {k: ckpt.get(k) for k in ("classes", "palette", "experiment")} | {
        "mean": list(MEAN),
        "std": list(STD),
    }
    dataset = (info["experiment"] or {}).get("data", {}).get("dataset")
    return ckpt["model_config"], ckpt["model"], info | {"source": str(path), "dataset": dataset}


def _load_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    config, state_dict, info = read_weights(path)
    if path.suffix == ".safetensors":
        model = model_from_config(config, sidecar_path(path))
        load_weights(model, state_dict, f"{path} (config {sidecar_path(path).name})")
    else:
        model = model_from_config(config, path)
        load_weights(model, state_dict, str(path))
    return model, info


def _check_fields(model: nn.Module, spec: str, path: Path) -> None:
    """Raise CheckpointError when the weights of registered name ``spec`` differ from its registered fields."""
    config = model.cfg.to_dict()
    for key, value in PRETRAINED[spec].fields.items():
        if config.get(key) != value:
            raise CheckpointError(f"{path}: {key}={config.get(key)}, but {spec!r} has {key}={value}")


def load(
    spec: str | Path,
    device: str | torch.device = "cpu",
    *,
    sha256: str | None = None,
    with_info: bool = False,
    **fields,
) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """The one public loader: any model ``spec`` -> the network in eval mode.

    Args:
        spec: a registered architecture (random init; ``fields`` such as ``num_classes`` apply), a registered
            weight name ``arch.tag`` (:data:`semask.registry.PRETRAINED`: read from :func:`semask.registry.cache_dir`,
            SHA-256 checked; nothing is downloaded), a run folder (its ``best.pt``, else ``last.pt``), a training
            checkpoint ``.pt``, a ``.safetensors`` with its sidecar ``.json``, or ``hf://ORG/REPO[@rev]`` (a
            Hugging Face Hub model, :func:`semask.hub.download`; needs the ``hub`` extra).
        device: where the model goes.
        sha256: expected hex SHA-256 of the file read, checked before reading it.
        with_info: also return the info dict: ``classes``, ``palette`` and ``dataset`` (None where unknown),
            ``mean``/``std``, ``source``, and ``experiment`` (a run's config dict) for training checkpoints.

    Returns:
        The model, or ``(model, info)`` with ``with_info``.

    Raises:
        ConfigError: ``spec`` is neither a registered name nor an existing path; ``fields`` given for weights.
        CheckpointError: one line naming the file: missing/invalid config, unreadable weights, SHA-256 mismatch,
            registered weights whose config differs from their registered fields,
            (naming both digests), keys/shapes that do not fit the config, a file that is not weights (a run's
            ``config.json`` or a model ``.json``: the message says what to pass instead), a folder that is not a
            run folder, or registered weights that are not in the cache (the message says where they come from).
    """
    spec = str(spec)
    if spec.startswith(
        "hf://"
    ):  # a Hub model: its cached model.safetensors (+ sidecar), fetched when missing
        from semask.hub import download

        spec = str(download(spec))
    if spec in list_models():
        model, info = create_model(spec, **fields), {}
        return (model.to(device).eval(), info) if with_info else model.to(device).eval()
    if spec in PRETRAINED:
        entry = PRETRAINED[spec]
        path = cache_dir() / entry.file
        if not path.is_file():
            raise CheckpointError(
                f"{path}: weights {spec!r} not found (semask downloads nothing; get them from "
                f"{entry.source or 'their release'}, convert them with `semask convert` and place the file there)"
            )
        sha256 = sha256 or entry.sha256
    else:
        path = Path(spec)
        if not path.exists():
            raise ConfigError(
                f"{spec!r} is neither a registered architecture or weight name (see `semask list`) nor a path"
            )
    if fields:
        raise ConfigError(f"{sorted(fields)} apply to architecture names only (weights fix their config)")
    path = run_checkpoint(path)
    if sha256 is not None and path.is_file() and (actual := file_sha256(path)) != sha256.lower():
        raise CheckpointError(f"{path}: SHA-256 is {actual}, expected {sha256} (corrupt or different file)")
    model, info = _load_file(path)
    if spec in PRETRAINED:
        _check_fields(model, spec, path)
    model = model.to(device).eval()
    return (model, info) if with_info else model
