#!/usr/bin/env bash
# Set up, build a small real corpus (Python stdlib docs), backfill it into Qdrant Edge with the
# packaged offline model, and query it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1
DEMO=.embedpipe/demo
rm -rf "$DEMO"
.venv/bin/python scripts/corpus.py docs "$DEMO/corpus" --modules 8
.venv/bin/embedpipe backfill "$DEMO/corpus" --sink "qdrant-edge:$DEMO/qdrant-edge" --collection demo --report "$DEMO/report.json"
.venv/bin/embedpipe query "How do I parse command-line options?" --sink "qdrant-edge:$DEMO/qdrant-edge" --collection demo -k 3
.venv/bin/embedpipe query "serialize a Python object to JSON" --sink "qdrant-edge:$DEMO/qdrant-edge" --collection demo -k 3
echo "Re-running the same backfill embeds nothing new:"
.venv/bin/embedpipe backfill "$DEMO/corpus" --sink "qdrant-edge:$DEMO/qdrant-edge" --collection demo
