"""A new generation that differs from the live one only in its sparse settings takes the live
one's dense vectors instead of encoding them again.

The sparse settings are part of what defines a generation (its fingerprint), but not of its
dense vectors: those depend on the model, its output options and the chunking alone, which the
*dense fingerprint* hashes (the fingerprint without the sparse settings; a run records it in the
generation's manifest). When a run opens a new generation whose dense fingerprint is the live
one's, it first copies the live generation's chunks with their dense vectors into it, through
the Committer's order (pending -> sink write -> done: a crash resumes where it stopped), and the
sink computes their sparse vectors as it writes them, with the new settings (sinks/sparse.py).
Each copied chunk is recorded under the new fingerprint with its new content hash, so the run's
planner then finds every unchanged chunk done and encodes only what the source changed; the
documents are carried over without their hashes (a document hash is made with the fingerprint),
so each is chunked again, not encoded. Turning sparse vectors on for an index built without them
is such a change too (its fingerprint is its dense fingerprint), and so is turning them off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from embedpipe.hashing import content_hash
from embedpipe.runs.commit import Committer, Encoded
from embedpipe.sinks.sparse import settings_of
from embedpipe.state.ledger import Target

DENSE_FINGERPRINT = "dense_fingerprint"  # the manifest key a run records it under


def dense_fingerprint_of(manifest: Mapping[str, Any]) -> str | None:
    """A generation's dense fingerprint, from its manifest: the one recorded, else (a generation
    built before it was recorded) its fingerprint when it keeps no sparse vectors, else None."""
    recorded = manifest.get(DENSE_FINGERPRINT)
    if recorded:
        return str(recorded)
    if manifest.get("fingerprint") and settings_of(manifest.get("settings") or {}) is None:
        return str(manifest["fingerprint"])
    return None


def donor(committer: Committer, dense_fingerprint: str) -> str | None:
    """The fingerprint of the live generation when the run's new generation can take its dense
    vectors (the same dense fingerprint, another fingerprint), else None. Call after
    `Committer.open_sink` (the ledger's live pointer re-derived from the sink)."""
    live = committer.ledger.live(committer.target.key)
    if live is None or live["fingerprint"] == committer.target.fingerprint:
        return None
    manifest = committer.sink.manifest()
    if manifest.get("fingerprint") != live["fingerprint"]:
        return None  # the sink does not say what the live generation was built with
    return live["fingerprint"] if dense_fingerprint_of(manifest) == dense_fingerprint else None


def copy_dense(committer: Committer, source: str) -> int:
    """Copy the chunks of generation `source` with their dense vectors into the run's generation
    (the sink computes their sparse vectors as it writes), each under its new content hash;
    chunks the run's generation holds as written already are left as they are (a resumed run,
    or a chunk a run encoded afresh). Returns how many were copied."""
    ledger, target = committer.ledger, committer.target
    held = set(ledger.done_hashes(target))
    ledger.carry_documents(Target(target.key, source), target)
    copied = 0
    for batch in committer.sink.points(source):
        keep = [i for i, c in enumerate(batch.chunks) if c.id not in held]
        if not keep:
            continue
        chunks = [
            dataclasses.replace(c, content_hash=content_hash(target.fingerprint, c.text))
            for c in (batch.chunks[i] for i in keep)
        ]
        committer.commit(ledger, Encoded(chunks, 0, batch.vectors[np.asarray(keep)]), copied=True)
        copied += len(chunks)
    return copied
