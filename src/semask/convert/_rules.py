"""Converter machinery shared by every source format: regex key rules and Swin table handling (the key/shape
report is :class:`semask.weights.KeyReport`, the safe reader :func:`semask.weights.read_checkpoint`).

Conversion is explicit (DESIGN 'convert/'): a few regex rules rename keys, and every checkpoint key left without a
model counterpart, every required model key left uncovered and every shape mismatch is reported at once.
"""

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from semask.errors import CheckpointError
from semask.layers.window_attention import relative_position_index

Rule = tuple[str, str | Callable[[re.Match], str]]

_REL_INDEX = re.compile(r"\.relative_position_index$")
_REL_TABLE = re.compile(r"\.relative_position_bias_table$")


def unwrap_state_dict(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of an mmcv (``state_dict``), Microsoft/detectron2 (``model``) or bare checkpoint.

    A leading ``module.`` (DataParallel) is stripped from every key.

    Raises:
        CheckpointError: no tensors found.
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(ckpt.get(wrapper), Mapping):
            ckpt = ckpt[wrapper]
            break
    sd = {re.sub(r"^module\.", "", k): v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"no tensors found in the checkpoint (top-level keys: {sorted(ckpt)[:10]})")
    return sd


def rename(sd: Mapping[str, torch.Tensor], rules: list[Rule]) -> dict[str, torch.Tensor]:
    """Apply every ``(pattern, replacement)`` rule, in order, with ``re.sub`` to every key."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def pop_relative_position_index(sd: dict[str, torch.Tensor], window: int) -> None:
    """Remove the ``relative_position_index`` buffers after checking them against ours (SPEC A2).

    Raises:
        CheckpointError: naming every index that differs from the standard one for ``window``.
    """
    ref = relative_position_index(window)
    bad = []
    for key in [k for k in sd if _REL_INDEX.search(k)]:
        if not torch.equal(sd.pop(key).cpu().long(), ref):
            bad.append(key)
    if bad:
        raise CheckpointError(
            f"relative_position_index differs from the standard window-{window} index in: {bad}"
        )


def window_from_table(rows: int, key: str) -> int:
    """Window M of a relative-position table with (2M-1)^2 rows. Raises CheckpointError otherwise."""
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise CheckpointError(f"{key}: {rows} rows is not (2M-1)^2 for any window M")
    return (side + 1) // 2


def resize_relative_position_tables(sd: dict[str, torch.Tensor], window: int) -> list[str]:
    """Bicubically resize every relative-position table to ``window`` in place (official ``mmcv_custom``).

    A table (L1, nH) is viewed as (1, nH, S1, S1), interpolated bicubically (align_corners=False) to
    (S2, S2) with S2 = 2*window-1, and reshaped back to (S2^2, nH) (SPEC A4).

    Returns:
        The keys that were resized.
    """
    s2 = 2 * window - 1
    resized = []
    for key in [k for k in sd if _REL_TABLE.search(k)]:
        table = sd[key]  # (L1, nH)
        rows, heads = table.shape
        if rows == s2 * s2:
            continue
        s1 = math.isqrt(rows)
        grid = table.float().permute(1, 0).reshape(1, heads, s1, s1)  # (1, nH, S1, S1)
        grid = F.interpolate(grid, size=(s2, s2), mode="bicubic", align_corners=False)
        sd[key] = grid.reshape(heads, s2 * s2).permute(1, 0).contiguous().to(table.dtype)  # (S2^2, nH)
        resized.append(key)
    return resized


def check_requested(cfg: object, **requested: int | None) -> None:
    """Raise CheckpointError when a setting given by the user (not None) differs from the one found in the
    weights, e.g. ``check_requested(cfg, num_classes=19, window_size=None)``."""
    for name, given in requested.items():
        found = getattr(cfg, name)
        if given is not None and given != found:
            raise CheckpointError(f"{name}={given} was requested but the checkpoint has {name}={found}")
