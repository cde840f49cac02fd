"""The Sink protocol every destination implements, and the Hit a query returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedpipe.types import Embedded


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    score: float
    chunk_id: str
    doc_id: str
    chunk_index: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RemoteWriter(Protocol):
    """Writes one run's vectors into a sink's index from another process or machine.

    Made on the driver by `Sink.remote_writer()` and pickled to workers, so it holds no open
    client or file when pickled: it connects on its first write. Valid until the sink's close()
    or abort(); delete(), the swap and the ledger stay with the driver's sink.
    """

    def write(self, embedded: Embedded) -> None:
        """Store the vectors; returns once the sink acknowledged them. Idempotent by chunk id."""
        ...

    def close(self) -> None:
        """Release clients and files; safe to call twice."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where vectors go. Calls come in this order: open, (write | delete)*, close or abort.

    `open(dim, fingerprint)` attaches to the live index when its fingerprint matches (an
    incremental run writes in place) and otherwise starts (or resumes) a new physical index that
    only `close(promote=True)` makes live (atomic re-embed); `abort()` releases the sink without switching, keeping
    what was acknowledged so a later run with the same fingerprint resumes (the ledger may list
    those writes), and leaves the live index untouched. `write` returns only once the sink has
    acknowledged the vectors.

    Optional: a sink that accepts concurrent writers also has `remote_writer() -> RemoteWriter`.
    Called after `open()`, it returns a writer for the physical index this run writes (the new
    one during a re-embed, so the run stays atomic: `close()` here still makes it live). The
    caller (the Ray engine's driver) pickles it to other processes and keeps the ledger; a sink
    that cannot take writes from elsewhere lacks the method or raises SinkError saying why.
    """

    uri: str

    def open(self, dim: int, fingerprint: str) -> None: ...

    def write(self, embedded: Embedded) -> None: ...

    def delete(self, chunk_ids: Sequence[str]) -> None: ...

    def close(self, promote: bool = True) -> None:
        """Flush and build; a new generation goes live only when `promote` (else it stays
        staged: the next run with its fingerprint resumes it). Writes in place always publish."""
        ...

    def abort(self) -> None: ...

    def live_fingerprint(self) -> str | None:
        """The fingerprint (or a prefix of it) of the generation the public name serves, or None:
        what the ledger's live pointer is re-derived from after a crash."""
        ...

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s generation (none when the sink lacks it), else of
        the one being written, else of the live one. Never creates a generation."""
        ...

    def search(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """Top-k hits of the live index for one query vector."""
        ...
