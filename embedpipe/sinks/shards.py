"""What sinks keep per chunk, and an append-only Parquet store of chunks with their vectors.

The payload fields are shared by every sink. `ShardStore` is the FAISS and Parquet sinks' source
of truth: each write is one shard file, each delete one tombstone file, both numbered from one
sequence so replaying them in order (last write wins, a later tombstone removes) gives the live
chunks. Several processes may append to one store at once (same machine or a shared filesystem):
a file claims its sequence number with a hard link, which fails when another writer took it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedpipe.durable import TMP_SUFFIX, atomic_write, durable_write, fsync_dir
from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit
from embedpipe.types import Chunk, Embedded, int_id

# What a stored chunk is read back as (export): its payload and its vector.
POINT_COLUMNS = [
    "chunk_id",
    "doc_id",
    "chunk_index",
    "text",
    "content_hash",
    "start",
    "end",
    "metadata",
    "vector",
]
POINTS_PER_BATCH = 1024
SHARD_RE = re.compile(r"^(shard|tomb)-(\d{8})\.parquet$")
DICTIONARY_COLUMNS = ["doc_id", "metadata"]


# LangChain's layout (sinks/layouts.py): the text under `page_content`, and these chunk fields
# added to `metadata`, which embedpipe's readers take back out.
LANGCHAIN_TEXT = "page_content"  # langchain_qdrant's default content_payload_key
ADDED = ("doc_id", "chunk_index", "chunk_id", "start", "end")


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The fields a sink keeps next to a chunk's vector, so a search can show what it found."""
    return {
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.index,
        "text": chunk.text,
        "content_hash": chunk.content_hash,
        "start": chunk.start,
        "end": chunk.end,
        "metadata": chunk.metadata,
        "chunk_id": chunk.id,
    }


def paired_vectors(embedded: Embedded) -> np.ndarray:
    """The vectors as float32, refusing a batch whose chunks and vectors do not pair up."""
    vectors = np.asarray(embedded.vectors, dtype=np.float32)
    if len(vectors) != len(embedded.chunks):
        raise SinkError(
            f"{len(embedded.chunks)} chunks but {len(vectors)} vectors: they must pair up"
        )
    return vectors


def hit_from_payload(
    score: float, payload: dict[str, Any], vector: np.ndarray | None = None
) -> Hit:
    """A search Hit from a stored payload (metadata as a dict or as a JSON string)."""
    metadata = payload.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    metadata = user_metadata(payload, metadata)
    return Hit(
        score=float(score),
        chunk_id=str(payload.get("chunk_id", "")),
        doc_id=str(payload.get("doc_id", "")),
        chunk_index=int(payload.get("chunk_index", 0)),
        text=str(payload.get("text", "")),
        metadata=metadata,
        vector=vector,
        start=int(payload.get("start") or 0),
        end=int(payload.get("end") or 0),
    )


def chunk_from_payload(payload: dict[str, Any]) -> Chunk | None:
    """The chunk a stored payload describes (no token ids: it is not encoded again); None for a
    point another tool wrote, without embedpipe's chunk id."""
    chunk_id = payload.get("chunk_id")
    if not chunk_id:
        return None
    metadata = payload.get("metadata") or {}
    doc_id = str(payload.get("doc_id", ""))
    return Chunk(
        doc_id=doc_id,
        index=int(payload.get("chunk_index", str(chunk_id).rpartition("#")[2] or 0)),
        text=str(payload.get("text", "")),
        token_ids=[],
        start=int(payload.get("start") or 0),
        end=int(payload.get("end") or 0),
        content_hash=str(payload.get("content_hash", "")),
        metadata=user_metadata(
            payload, json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
        ),
    )


def user_metadata(payload: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """A chunk's source metadata from a stored payload's `metadata`: in LangChain's layout
    without the chunk fields that layout added (a source's metadata never holds them)."""
    if LANGCHAIN_TEXT not in payload:
        return metadata
    return {k: v for k, v in metadata.items() if k not in ADDED}


def table_points(table: pa.Table) -> Iterator[Embedded]:
    """A table of POINT_COLUMNS as batches of chunks with their vectors."""
    for lo in range(0, table.num_rows, POINTS_PER_BATCH):
        part = table.slice(lo, POINTS_PER_BATCH)
        rows = part.select(POINT_COLUMNS[:-1]).to_pylist()
        chunks = [c for c in map(chunk_from_payload, rows) if c is not None]
        yield Embedded(chunks, vectors_of(part))


def shard_schema(dim: int) -> pa.Schema:
    """Columns of a write shard: the payload, the FAISS id and the vector."""
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("faiss_id", pa.int64()),
            ("doc_id", pa.string()),
            ("chunk_index", pa.int64()),
            ("text", pa.string()),
            ("content_hash", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("metadata", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def chunk_table(chunks: Sequence[Chunk], vectors: np.ndarray, ids: np.ndarray) -> pa.Table:
    """Chunks, their (n, dim) float32 vectors and int64 ids as one shard table."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    columns: dict[str, Any] = {
        "chunk_id": [c.id for c in chunks],
        "faiss_id": pa.array(ids, pa.int64()),
        "doc_id": [c.doc_id for c in chunks],
        "chunk_index": [c.index for c in chunks],
        "text": [c.text for c in chunks],
        "content_hash": [c.content_hash for c in chunks],
        "start": [c.start for c in chunks],
        "end": [c.end for c in chunks],
        "metadata": [json.dumps(c.metadata, ensure_ascii=False, default=str) for c in chunks],
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    }
    return pa.table(columns, schema=shard_schema(dim))


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `vector` column of a table as a (n, dim) float32 array, without a per-row loop."""
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return numpy_of(column.flatten()).astype(np.float32, copy=False).reshape(-1, dim)


def parquet_writer(table: pa.Table) -> Callable[[IO[bytes]], object]:
    """What writes `table` as Parquet into an open file."""
    # Dictionary-encoding float vectors costs ~15x the write time for nothing: only the
    # repetitive columns get it.
    return lambda f: pq.write_table(table, f, use_dictionary=DICTIONARY_COLUMNS)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically."""
    atomic_write(path, parquet_writer(table))


def numpy_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric column without nulls as a numpy array, read from its buffers: pyarrow's
    `to_numpy` converts through its pandas layer, whose first use imports pandas (about half a
    second of a query process's start-up). Other columns go through `to_numpy`."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    name = _FLOATS.get(str(column.type), str(column.type))
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    if not numeric or not chunks or any(c.null_count for c in chunks):
        return np.asarray(column.to_numpy())
    dtype = np.dtype(name)
    parts = [
        np.frombuffer(c.buffers()[1], dtype, count=len(c), offset=c.offset * dtype.itemsize)
        for c in chunks
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def arrow_indices(positions: np.ndarray) -> pa.Array:
    """Row positions as an int64 Arrow array for `take`, made from the buffer: `pa.array` on a
    numpy array imports pandas (see `numpy_of`)."""
    flat = np.ascontiguousarray(positions, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(flat), [None, pa.py_buffer(flat)])


_FLOATS = {"halffloat": "float16", "float": "float32", "double": "float64"}


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or a folder of `*.parquet` parts read in name order, without
    `pyarrow.dataset` (which `pq.read_table` imports, and with it pandas: about half a second of
    a query process's start-up)."""
    if not path.is_dir():
        return pq.ParquetFile(path).read(columns=columns)
    parts = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not parts:
        return pq.read_table(path, columns=columns)  # an empty folder: what pyarrow makes of it
    return pa.concat_tables([pq.ParquetFile(p).read(columns=columns) for p in parts])


class ShardStore:
    """An append-only folder of Parquet shards and tombstones; replay order is the file number.

    Appends (shards and tombstones) are safe from several processes at once. compact(), clear()
    and remove_temp() are not: only the driver calls them, while no other writer is active (a
    writer living on across a compaction could take a freed number below the compacted shard).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        # The last number this instance claimed: where the next claim starts looking, so a write
        # does not list the folder. Only a hint: another writer may have taken the next one.
        self._last_seq: int | None = None

    def files(self) -> list[tuple[int, str, Path]]:
        """(sequence, kind, path) of every shard and tombstone, in sequence order."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            m = SHARD_RE.match(path.name)
            if m:
                found.append((int(m.group(2)), m.group(1), path))
        return sorted(found)

    def remove_temp(self) -> None:
        """Drop half-written files a crashed writer left behind (they were never acknowledged).

        A live writer's temp file looks the same: call this only while no other process appends
        (the driver, in the sink's open(), before any remote writer starts).
        """
        if self.root.is_dir():
            for path in self.root.glob("*" + TMP_SUFFIX):
                path.unlink(missing_ok=True)

    def _last_claimed(self) -> int:
        """The highest sequence number in the folder (0 when empty)."""
        files = self.files()
        return files[-1][0] if files else 0

    def _add(self, kind: str, table: pa.Table) -> None:
        """Write `table` as the next `kind` file of the sequence; durable when this returns.

        The file is written and fsynced under a name no other process uses, then hard-linked
        to its numbered name: link() fails if another writer holds that number (where a rename
        would overwrite it), so the number is taken again after the folder's last one.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{kind}-{os.getpid()}-{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            durable_write(tmp, parquet_writer(table))
            seq = (self._last_claimed() if self._last_seq is None else self._last_seq) + 1
            while True:
                try:
                    os.link(tmp, self.root / f"{kind}-{seq:08d}.parquet")
                    break
                except FileExistsError:
                    seq = max(seq, self._last_claimed()) + 1
                except OSError as exc:  # EPERM/ENOTSUP: a filesystem without hard links
                    raise SinkError(
                        f"cannot link {tmp.name} into {self.root} ({exc.strerror or exc}): the "
                        "store needs a filesystem with hard links; put the sink on another one"
                    ) from exc
            self._last_seq = seq
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.root)

    def append(self, table: pa.Table) -> None:
        """Add one shard; it is durable when this returns."""
        self._add("shard", table)

    def append_embedded(self, embedded: Embedded, dim: int) -> None:
        """Add the chunks with their (n, dim) vectors as one shard; nothing for no chunks."""
        vectors = np.asarray(embedded.vectors, dtype=np.float32)
        if vectors.shape != (len(embedded.chunks), dim):
            raise SinkError(
                f"expected vectors of shape ({len(embedded.chunks)}, {dim}), got "
                f"{vectors.shape}: the encoder and the opened dimension disagree"
            )
        if embedded.chunks:
            ids = np.fromiter((int_id(c.id) for c in embedded.chunks), np.int64, len(vectors))
            self.append(chunk_table(embedded.chunks, vectors, ids))

    def tombstone(self, chunk_ids: Sequence[str]) -> None:
        """Mark chunks deleted from this point in the sequence on."""
        self._add("tomb", pa.table({"chunk_id": pa.array(list(chunk_ids), pa.string())}))

    def live(
        self,
        columns: list[str] | None = None,
        base: pa.Table | None = None,
        upto: int | None = None,
    ) -> pa.Table | None:
        """The live chunks (last write of each id, minus later tombstones); None when empty.

        `base`, when given, holds chunks written before every file of the store (sequence 0):
        the store's shards and tombstones are replayed on top of it. `upto`: replay only the
        files up to that sequence number (what an index was built from).
        """
        files = [f for f in self.files() if upto is None or f[0] <= upto]
        shards = [(seq, read_parquet(p, columns)) for seq, kind, p in files if kind == "shard"]
        if base is not None:
            shards.insert(0, (0, base))
        if not shards:
            return None
        tombs = [(seq, read_parquet(p)) for seq, kind, p in files if kind == "tomb"]
        table = pa.concat_tables([t for _, t in shards])
        seqs = np.repeat([s for s, _ in shards], [t.num_rows for _, t in shards])
        keep = _last_rows(table.column("chunk_id"))
        if tombs:
            keep = keep[_tomb_seqs(table.column("chunk_id").take(keep), tombs) < seqs[keep]]
        if len(keep) == table.num_rows:  # rows are unique and ordered: nothing to drop
            return table
        return table.take(pa.array(keep))

    def rows(self) -> int:
        """Rows of every shard from their footers, reading no data: a chunk written twice counts
        twice and tombstones are not subtracted (at least the live chunks, more until compact)."""
        return sum(pq.read_metadata(p).num_rows for _, kind, p in self.files() if kind == "shard")

    def clear(self) -> None:
        """Remove every shard and tombstone (once what they hold is kept elsewhere)."""
        # Shards before tombstones, so a crash in between never resurrects a chunk.
        for _, _, path in sorted(self.files(), key=lambda f: f[1] == "tomb"):
            path.unlink()
        if self.root.is_dir():
            fsync_dir(self.root)
        self._last_seq = None

    def compact(self, remove_old: bool = True) -> pa.Table | None:
        """Rewrite the store as one shard of the live chunks and return them (None when empty).

        Without `remove_old`, the files it replaces stay (replaying them under the new shard
        changes nothing) until `remove_before` the new shard's number: readers of an index built
        from them read them until the index built from the new shard is published.
        """
        files = self.files()
        table = self.live()
        if len(files) > 1 or (files and files[0][1] == "tomb"):
            if table is not None:
                self.append(table)
            if remove_old:
                self._remove(files)
        return table

    def remove_before(self, seq: int) -> None:
        """Remove the shards and tombstones numbered below `seq` (a compaction replaced them)."""
        self._remove([f for f in self.files() if f[0] < seq])

    def _remove(self, files: list[tuple[int, str, Path]]) -> None:
        if not files:
            return
        # Old shards go before old tombstones, so a crash in between never resurrects a chunk.
        for _, _, path in sorted(files, key=lambda f: f[1] == "tomb"):
            path.unlink(missing_ok=True)
        fsync_dir(self.root)


@dataclass
class ShardWriter:
    """A RemoteWriter that appends shards to a ShardStore folder from another process.

    `root` must be the same path for every process (absolute; a shared filesystem across
    machines). It holds no open file; pickling drops its store, so a sequence hint never travels.
    """

    root: Path
    dim: int
    _store: ShardStore | None = field(default=None, init=False, repr=False, compare=False)

    def write(self, embedded: Embedded) -> None:
        """Append the chunks as one shard; durable (acknowledged) when this returns."""
        if self._store is None:
            self._store = ShardStore(self.root)
        self._store.append_embedded(embedded, self.dim)

    def close(self) -> None:
        """Forget the store (there is nothing open to release); safe to call twice."""
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "dim": self.dim}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.dim, self._store = state["root"], state["dim"], None


def _last_rows(chunk_ids: pa.ChunkedArray) -> np.ndarray:
    """Row numbers of the last occurrence of each id, in row order."""
    ids = chunk_ids.to_numpy()
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    return np.sort(len(ids) - 1 - first_from_end)


def _tomb_seqs(chunk_ids: pa.ChunkedArray, tombs: list[tuple[int, pa.Table]]) -> np.ndarray:
    """For each id, the sequence number of its latest tombstone (-1 when never deleted)."""
    tomb_ids = pa.concat_tables([t for _, t in tombs]).column("chunk_id")
    tomb_seqs = np.repeat([s for s, _ in tombs], [t.num_rows for _, t in tombs])
    last = _last_rows(tomb_ids)  # tombstones are already in sequence order
    pos = pc.index_in(chunk_ids, value_set=tomb_ids.take(pa.array(last)).combine_chunks())
    pos_np = pos.fill_null(-1).to_numpy()
    return np.where(pos_np >= 0, tomb_seqs[last][pos_np], -1)
