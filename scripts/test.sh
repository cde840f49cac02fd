#!/usr/bin/env bash
# Set up, then run the whole check: ruff, mypy, pytest (Ray tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
EMBEDPIPE_EXTRAS=ray,openvino,langchain,llamaindex,postgres ./scripts/setup.sh
# The HTML report test opens the page in headless Chromium. Install it when missing, on CI or as
# root with apt (idempotent: skipped once present); elsewhere that one test skips with the reason.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && { [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "chromium could not be installed: the headless-browser test will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check embedpipe tests scripts
.venv/bin/ruff format --check embedpipe tests scripts
.venv/bin/mypy
# Two workers (EMBEDPIPE_TEST_WORKERS): much of a test's time is waiting (fsync, processes, Ray
# scheduling), not computing; --dist loadgroup with conftest's groups keeps each module's tests on
# one worker (its costly fixtures are built once), the Ray crash tests a group of their own.
.venv/bin/pytest -q -n "${EMBEDPIPE_TEST_WORKERS:-2}" --dist loadgroup --durations=15 "$@"
