"""Qdrant collection options as plain data, shared by the qdrant: and qdrant-edge: sinks.

Options shape the stored index, so they are applied when a collection is created and compared on
every later open: a mismatch is an error (`SinkError`), never silently ignored, because the
collection would go on being built the old way. Options left unset (None) are not compared.
Payload indexes are additive: a missing one is created on reuse instead.
"""

from __future__ import annotations

from typing import Any

from embedpipe.config import QdrantOptions
from embedpipe.errors import SinkError

# The options that shape the stored index, normalised: on_disk, hnsw_m, hnsw_ef_construct,
# quantization, shard_number, replication_factor.
Shape = dict[str, Any]


def wanted_shape(options: QdrantOptions) -> Shape:
    """What the configuration asks for."""
    return {
        "on_disk": options.on_disk,
        "hnsw_m": options.hnsw.m,
        "hnsw_ef_construct": options.hnsw.ef_construct,
        "quantization": options.quantization,
        "shard_number": options.shard_number,
        "replication_factor": options.replication_factor,
    }


def check_shape(have: Shape, want: Shape, collection: str, where: str) -> None:
    """Raise when a reused collection was built with other options than the configured ones.

    Keys the configuration leaves unset, or that the store does not report (None), are skipped.
    """
    diffs = [
        f"{key}={have[key]!r} (configured: {value!r})"
        for key, value in want.items()
        if value is not None and have.get(key) is not None and have[key] != value
    ]
    if diffs:
        raise SinkError(
            f"collection '{collection}' at {where} was created with {', '.join(diffs)}: options "
            "apply when a collection is created, so set them back, or use another --collection "
            "(or delete this one) to build it with the new ones"
        )
