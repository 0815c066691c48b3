"""Shared test helpers: where the read-only parity fixtures live (``SEMASK_FIXTURES``, default
``<repo>/../shared/fixtures``), a fixture that skips, saying why, when they are absent, and the full-size
detectron2 key manifests."""

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES_ROOT = Path(os.environ.get("SEMASK_FIXTURES", REPO.parent / "shared" / "fixtures"))


def _fixture_path(*parts: str) -> Path:
    path = FIXTURES_ROOT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"parity fixture {path} not found (set SEMASK_FIXTURES to the shared fixtures folder)")
    return path


@pytest.fixture(scope="session")
def fixture_path() -> Callable[..., Path]:
    """``fixture_path("semask_fpn", "x.json")`` -> the path under the fixtures root, or skip the test."""
    return _fixture_path


@pytest.fixture(scope="session")
def manifests(fixture_path) -> dict:
    """``official_d2_checkpoint_keys.json``: keys, shapes and parameter counts of the full-size official models."""
    return json.loads(fixture_path("semask_d2", "official_d2_checkpoint_keys.json").read_text())
