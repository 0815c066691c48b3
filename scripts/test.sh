#!/usr/bin/env bash
# Set up (CPU torch first, then the package with its dev extras) and run ruff + the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[dev]"
ruff format --check .
ruff check .
python3 -m pytest -q -p no:cacheprovider "$@"
