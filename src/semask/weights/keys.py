"""Matching weights to a model: the key report of converters, strict loading, and a model's expected shapes."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from semask.errors import CheckpointError
from semask.models import ModelConfig, build_model


@dataclass
class KeyReport:
    """Outcome of matching a state dict against a model.

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


def meta_shapes(cfg: ModelConfig) -> dict[str, torch.Size]:
    """State-dict shapes of the model of ``cfg``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {k: v.shape for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` strictly (every key, every shape).

    Args:
        source: what the weights are, for the message (e.g. the file name).

    Raises:
        CheckpointError: one line naming ``source`` with the number of missing, unexpected and mismatched keys
            and the first of each (the classifier first, as it shows a class-count mismatch).
    """
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
