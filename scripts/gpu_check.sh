#!/usr/bin/env bash
# GPU check for embedpipe: parity (fp16/bf16 vs fp32 sentence-transformers, cosine >= 0.999) and
# tokens/s of our encoder path vs SentenceTransformer.encode fp16 at its default batch size.
# Needs only torch, sentence-transformers, transformers, numpy and xxhash (no pydantic, faiss,
# qdrant-client, datasets or the packaged model); takes well under 5 minutes on a GPU.
#   scripts/gpu_check.sh                  # on the GPU machine; writes $OUT/gpu_check.json if OUT is set
#   scripts/gpu_check.sh --device cpu --quick --simulate-bare   # rehearsal on a CPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && [ -z "${OUT:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true; fi
args=("$@")
[ -n "${OUT:-}" ] && args+=(--json "$OUT/gpu_check.json")
exec timeout 290 "$PY" scripts/gpu_check.py "${args[@]}"
