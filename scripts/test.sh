#!/usr/bin/env bash
# Set up (CPU torch first, then the package with its dev extras) and run ruff + the default test suite, then the
# host-dependent tests (marker cpu_paths) again with PyTorch forced to behave as on a CPU without AVX-512 and
# native bf16 (ATen, oneDNN and MKL limited to AVX2), so both CPU paths are proven on whichever machine runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[dev]"
# tests/test_serve.py drives Debian's Chromium headless (skipped, saying so, where it cannot be installed)
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 ||
        echo "note: could not install chromium; the browser test will skip"
fi
ruff format --check .
ruff check .
python3 -m pytest -q -p no:cacheprovider "$@"
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
    python3 -m pytest -q -p no:cacheprovider -m cpu_paths
