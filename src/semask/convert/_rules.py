"""Converter machinery shared by every source format: regex key rules, key/shape reports, and (re-exported from
:mod:`semask.engine.checkpoint`) the one safe checkpoint reader.

Conversion is explicit (DESIGN 'convert/'): a few regex rules rename keys, and every checkpoint key left without a
model counterpart, every required model key left uncovered and every shape mismatch is reported at once.
"""

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from semask.backbones.swin import relative_position_index
from semask.engine.checkpoint import read_checkpoint  # noqa: F401  (the one safe reader, re-exported)
from semask.errors import CheckpointError
from semask.models.segmenter import SeMaskFPN, SeMaskFPNConfig

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


def meta_shapes(cfg: SeMaskFPNConfig) -> dict[str, torch.Size]:
    """State-dict shapes of ``SeMaskFPN(cfg)``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = SeMaskFPN(cfg)
    return {k: v.shape for k, v in model.state_dict().items()}


@dataclass
class KeyReport:
    """Outcome of matching a converted state dict against a model.

    Attributes:
        unmapped: checkpoint keys with no model counterpart.
        missing: required model keys the checkpoint does not provide.
        mismatched: ``"key: checkpoint (..) vs model (..)"`` for shape mismatches.
        not_loaded: optional model keys the checkpoint does not provide (they keep their init).
    """

    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)

    def raise_if_bad(self, what: str) -> None:
        """Raises CheckpointError listing every unmapped, missing and mismatched key (``what`` names the source)."""
        parts = [
            f"{len(keys)} {label}:\n  " + "\n  ".join(keys)
            for label, keys in (
                ("unmapped checkpoint keys", self.unmapped),
                ("missing model keys", self.missing),
                ("shape mismatches", self.mismatched),
            )
            if keys
        ]
        if parts:
            raise CheckpointError(f"{what} does not fit the model:\n" + "\n".join(parts))


def compare_keys(
    sd: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    required: Callable[[str], bool] = lambda key: True,
) -> KeyReport:
    """Match ``sd`` against model shapes ``expected``; model keys failing ``required`` may be absent."""
    report = KeyReport()
    for key, value in sd.items():
        if key not in expected:
            report.unmapped.append(key)
        elif value.shape != expected[key]:
            report.mismatched.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key])}"
            )
    for key in expected:
        if key not in sd:
            (report.missing if required(key) else report.not_loaded).append(key)
    return report


def check_requested(cfg: object, **requested: int | None) -> None:
    """Raise CheckpointError when a setting given by the user (not None) differs from the one found in the
    weights, e.g. ``check_requested(cfg, num_classes=19, window_size=None)``."""
    for name, given in requested.items():
        found = getattr(cfg, name)
        if given is not None and given != found:
            raise CheckpointError(f"{name}={given} was requested but the checkpoint has {name}={found}")
