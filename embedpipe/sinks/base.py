"""The Sink protocol every destination implements, what it can do (Capabilities), and the Hit a
query returns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedpipe.errors import SinkError
from embedpipe.types import Embedded


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a sink can do, declared as data: callers read it instead of probing for methods.

    - concurrent_writers: `remote_writer()` hands other processes a writer into the run.
    - rebuildable: `rebuild()` re-trains the live index from the vectors the sink keeps.
    - local_path: the sink lives in a local path, so its ledger goes next to it (PATH.state) and
      a path on the driver may not exist on other machines.
    - aliases: a public name moved in one step (a Qdrant alias, a symlink) serves one generation
      while the next is written beside it, so a re-embed goes live atomically or not at all.
    - sparse: BM25 sparse vectors beside the dense ones (`sink.sparse`), and `retrieve()` runs
      `sparse` and `hybrid` queries (see sparse.py).
    """

    concurrent_writers: bool = False
    rebuildable: bool = False
    local_path: bool = False
    aliases: bool = False
    sparse: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    score: float
    chunk_id: str
    doc_id: str
    chunk_index: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # The chunk's stored vector (float32, (dim,)), only when the search asked `with_vectors`.
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    start: int = 0  # the chunk's character span in its document's text
    end: int = 0


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
    only `close(promote=True)` makes live (atomic re-embed); `abort()` releases the sink without
    switching, keeping what was acknowledged so a later run with the same fingerprint resumes
    (the ledger may list those writes), and leaves the live index untouched. `write` returns only
    once the sink has acknowledged the vectors.

    `capabilities` says what else it can do; the methods it does not support raise SinkError
    saying why (`remote_writer` without concurrent_writers, `rebuild` unless rebuildable).
    """

    uri: str

    @property
    def capabilities(self) -> Capabilities:
        """What this sink can do (see Capabilities)."""
        ...

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

    def promote(self, fingerprint: str) -> None:
        """Make the complete generation built under `fingerprint` live, atomically; the one it
        replaces is kept for rollback (unless the sink does not keep_previous) until `drop`."""
        ...

    def drop(self, fingerprint: str) -> None:
        """Remove a generation that is not live; SinkError for the live one."""
        ...

    def pinned(self, fingerprint: str) -> Sink:
        """A read-only view whose search and chunk_ids read that generation as if it were live
        (to evaluate a staged or previous generation); release it with abort()."""
        ...

    def describe(self, fields: Mapping[str, Any]) -> None:
        """Record what the generation being written was built with (model, prompts, settings:
        `index.built_with`) in its manifest; called after open()."""
        ...

    def manifest(self) -> dict[str, Any]:
        """What the live generation was built with ({} when none is live or nothing was recorded)."""
        ...

    def chunk_ids(self, fingerprint: str | None = None) -> Iterator[str]:
        """Every chunk id of `fingerprint`'s generation (none when the sink lacks it), else of
        the one being written, else of the live one. Never creates a generation."""
        ...

    def count(self, fingerprint: str) -> int:
        """How many points `fingerprint`'s generation holds (0 when the sink lacks it), read
        cheaply (the engine's count, file footers), never by a scan: never fewer than its chunks,
        more only while a store keeps rewrites or deletes it has not compacted yet. A run checks
        what the ledger lists as done against it before trusting the ledger."""
        ...

    def points(self, fingerprint: str | None = None) -> Iterator[Embedded]:
        """Every chunk of `fingerprint`'s generation (else the one being written, else the live
        one) with its stored vector, in batches: what `export` copies without re-encoding.
        Points another tool wrote (without embedpipe's chunk id) are left out."""
        ...

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of the live index for one query vector, among the chunks that pass
        `filter` (payload path -> value or list of values; see filters.py): k hits whenever k
        chunks pass it. `with_vectors`: each hit carries its chunk's stored vector (what MMR
        re-ranks the candidates by)."""
        ...

    def remote_writer(self) -> RemoteWriter:
        """A writer for the physical index this run writes, for other processes (called after
        open(); the new index during a re-embed, so `close()` here still makes it live). The
        caller (the Ray engine's driver) pickles it to workers and keeps the ledger."""
        ...

    def rebuild(self) -> None:
        """Re-train and rebuild the live index from the vectors the sink keeps, outside a run."""
        ...


class ViewSearch(Protocol):
    """A read view's search: `Sink.search` on the generation the view holds."""

    def __call__(
        self,
        vector: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]: ...


class Retrieve(Protocol):
    """A read view's sparse or hybrid query: `Retriever.retrieve` on the generation the view
    holds."""

    def __call__(
        self,
        retrieval: Any,
        k: int,
        filter: Mapping[str, Any] | None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]: ...


@dataclass(frozen=True)
class ReadView:
    """One consistent read of the served index: the fingerprint and manifest of the generation
    it searches (None: the sink does not say; read `Sink.manifest()`), its search (with
    `with_vectors`, as `Sink.search`), and, on a sink with sparse vectors, its `retrieve`
    (sparse.Retrieval, k, filter, with_vectors), both of that generation even after a promotion
    moved the public name; StaleReadError when the generation is gone by then (take a new view)."""

    fingerprint: str | None
    manifest: Mapping[str, Any] | None
    search: ViewSearch
    retrieve: Retrieve | None = None


@runtime_checkable
class Retriever(Protocol):
    """A sink with sparse vectors (`Capabilities.sparse`): sparse and hybrid queries."""

    def retrieve(
        self,
        retrieval: Any,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits of the live index for a `sparse.Retrieval`, among the chunks `filter`
        passes (`with_vectors`: each with its chunk's stored dense vector, as `Sink.search`)."""
        ...


@runtime_checkable
class Serving(Protocol):
    """A sink whose readers follow the finished runs by themselves, never blocking a writer: each
    query reads one complete generation, the newest a run finished (see snapshots.py)."""

    def serving(self) -> AbstractContextManager[ReadView]:
        """The generation served now, held (not switched under it) until the block ends."""
        ...

    def close_served(self) -> None:
        """Release what serving holds (an open snapshot and its private copy)."""
        ...


def served(sink: Sink) -> AbstractContextManager[ReadView]:
    """A consistent read of what `sink` serves: its `serving()` view, or its plain search."""
    if isinstance(sink, Serving):
        return sink.serving()
    retrieve = sink.retrieve if isinstance(sink, Retriever) else None
    return nullcontext(ReadView(None, None, sink.search, retrieve))


def close_served(sink: Sink) -> None:
    """Release what a Serving sink holds for readers (nothing for another sink)."""
    if isinstance(sink, Serving):
        sink.close_served()


def not_open(name: str) -> SinkError:
    """The error for a call that needs a run before `open` started one."""
    return SinkError(f"the {name} sink is not open: call open(dim, fingerprint) first")


def no_remote_writer(uri: str) -> SinkError:
    """The error of `remote_writer` on a sink that takes no concurrent writers."""
    return SinkError(f"the sink {uri} takes no concurrent writers; use write_from=driver")


def not_rebuildable(uri: str) -> SinkError:
    """The error of `rebuild` on a sink that keeps no vectors to re-train from."""
    return SinkError(f"{uri} cannot be rebuilt: it keeps no vectors to re-train from")
