#!/usr/bin/env bash
# Set up, then run the whole check: ruff, mypy, pytest (Ray tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
EMBEDPIPE_EXTRAS=ray ./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check embedpipe tests scripts
.venv/bin/ruff format --check embedpipe tests scripts
.venv/bin/mypy
.venv/bin/pytest -q --durations=10 "$@"
