"""Run fingerprints and chunk content hashes."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import xxhash

from embedpipe.config import ChunkingConfig


def fingerprint(model_identity: Any, chunking: ChunkingConfig, **extra: Any) -> str:
    """Hash of everything that changes the vectors: model identity and chunking parameters.

    Precision and backend are deliberately left out: their effect is bounded by the parity check
    instead. int8 inference is not (it misses that bar): it comes in `extra`, with the encoder's
    other output options.
    """
    parts = {
        "model": asdict(model_identity),
        "chunking": chunking.model_dump(),
        **extra,
    }
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    return xxhash.xxh3_128_hexdigest(blob)


def content_hash(fp: str, text: str) -> str:
    """Hash of (fingerprint, chunk text): equal hashes mean an equal vector."""
    return xxhash.xxh3_128_hexdigest(fp.encode() + b"\0" + text.encode())
