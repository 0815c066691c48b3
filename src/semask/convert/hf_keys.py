"""Two-way key maps between semask and Hugging Face ``transformers`` state dicts (used by :mod:`semask.convert.hf`).

A map is a list of ``(semask template, transformers template)`` prefix pairs; ``{a}`` in a template is an index
(digits) carried over to the other side, the rest of the key is kept. The first pair whose template matches the
start of a key wins, so specific pairs come first. Fused attention projections are named ``X.qkv_proj.{weight,
bias}`` on the transformers side of a map: :func:`fuse_qkv` concatenates transformers' separate
``X.{q,k,v}_proj`` (rows q, k, v, as ``nn.MultiheadAttention.in_proj_weight`` and the official Swin ``qkv``) and
:func:`split_qkv` splits them back.
"""

import re
from collections.abc import Sequence

import torch

Pair = tuple[str, str]

_PLACEHOLDER = re.compile(r"\{(\w)\}")
_SPLIT = re.compile(r"^(.*)\.(q|k|v)_proj\.(weight|bias)$")
_FUSED = re.compile(r"^(.*)\.qkv_proj\.(weight|bias)$")


def _regex(template: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(template)
    return re.compile(
        "^" + "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d+)" for i, p in enumerate(parts))
    )


class KeyMap:
    """A two-way prefix map (see the module docstring).

    Args:
        pairs: ``(semask template, transformers template)`` pairs, specific ones first.
    """

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)
        self._regex = [(_regex(ours), _regex(theirs)) for ours, theirs in self.pairs]

    def _map(self, key: str, side: int) -> str | None:
        for pair, regexes in zip(self.pairs, self._regex, strict=True):
            if m := regexes[side].match(key):
                return pair[1 - side].format(**m.groupdict()) + key[m.end() :]
        return None

    def to_hf(self, key: str) -> str | None:
        """The transformers key of a semask key, None when no pair matches."""
        return self._map(key, 0)

    def from_hf(self, key: str) -> str | None:
        """The semask key of a transformers key, None when no pair matches."""
        return self._map(key, 1)


def rename_all(sd: dict[str, torch.Tensor], rules: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply every regex ``(pattern, replacement)`` in order to every key (one-way aliases and dialects)."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def fuse_qkv(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every complete ``X.{q,k,v}_proj.P`` triple by ``X.qkv_proj.P`` = cat([q, k, v]) (rows)."""
    out = dict(sd)
    for key in [k for k in sd if (m := _SPLIT.match(k)) and m[2] == "q"]:
        m = _SPLIT.match(key)
        parts = [f"{m[1]}.{p}_proj.{m[3]}" for p in "qkv"]
        if all(p in out for p in parts):
            out[f"{m[1]}.qkv_proj.{m[3]}"] = torch.cat([out.pop(p) for p in parts])
    return out


def split_qkv(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``X.qkv_proj.P`` (3C rows) by ``X.{q,k,v}_proj.P`` (C rows each, contiguous)."""
    out = {}
    for key, value in sd.items():
        if m := _FUSED.match(key):
            for name, part in zip("qkv", value.chunk(3), strict=True):
                out[f"{m[1]}.{name}_proj.{m[2]}"] = part.contiguous()
        else:
            out[key] = value
    return out
