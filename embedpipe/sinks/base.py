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
class Sink(Protocol):
    """Where vectors go. Calls come in this order: open, (write | delete)*, close or abort.

    `open(dim, fingerprint)` attaches to the live index when its fingerprint matches (an
    incremental run writes in place) and otherwise starts a new physical index that only
    `close()` makes live (atomic re-embed); `abort()` releases the sink without switching, keeping
    what was acknowledged so a later run with the same fingerprint resumes (the ledger may list
    those writes), and leaves the live index untouched. `write` returns only once the sink has acknowledged the vectors.
    """

    uri: str

    def open(self, dim: int, fingerprint: str) -> None: ...

    def write(self, embedded: Embedded) -> None: ...

    def delete(self, chunk_ids: Sequence[str]) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def chunk_ids(self) -> Iterator[str]:
        """Every chunk id the index being written holds (the live one before a swap)."""
        ...

    def search(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """Top-k hits of the live index for one query vector."""
        ...
