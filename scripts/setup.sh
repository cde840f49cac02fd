#!/usr/bin/env bash
# Create (or refresh) .venv at the repository root with embedpipe and its dev tools.
# Safe to re-run. torch is installed first, pinned to the CPU wheel, so nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev${EMBEDPIPE_EXTRAS:+,$EMBEDPIPE_EXTRAS}]"
echo "embedpipe ready: .venv/bin/embedpipe"
