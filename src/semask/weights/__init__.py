"""Everything about weights in one place: safe reading and atomic writing of files, the key report of
converters, strict loading, the sidecar config, and :func:`load`, the one public loader."""

from semask.weights.files import (
    file_sha256,
    read_checkpoint,
    remove_stale_temp_files,
    save_atomic,
    write_safetensors,
)
from semask.weights.keys import KeyReport, compare_keys, load_weights, meta_shapes
from semask.weights.load import load, load_checkpoint, read_sidecar, save_model, save_weights

__all__ = [
    "KeyReport",
    "compare_keys",
    "file_sha256",
    "load",
    "load_checkpoint",
    "load_weights",
    "meta_shapes",
]
__all__ += [
    "read_checkpoint",
    "read_sidecar",
    "remove_stale_temp_files",
    "save_atomic",
    "save_model",
    "save_weights",
]
__all__ += ["write_safetensors"]
