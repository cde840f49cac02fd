"""The Ray engine's cluster side: parsing tasks, the prepare and encode actors, and the row
layouts they exchange with the driver (see engines/ray.py for the plan)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from embedpipe.config import BatchingConfig, ChunkingConfig, ModelConfig
from embedpipe.sinks.base import RemoteWriter
from embedpipe.types import EMPTY, Chunk, Document, Embedded, RecordError

if TYPE_CHECKING:
    from embedpipe.encoding.chunking import Chunker

DOC, CHUNK, ERROR = "doc", "chunk", "error"
# Read tasks reserve no CPU: the actors hold the cluster's CPUs (a prepare actor waits for the
# reads, so reads that waited for a CPU could wait forever); Ray Data's backpressure bounds them.
READ_CPUS = 0

# A parsed record: a document or the reason it is not one.
PARSED = pa.schema(
    [
        ("kind", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("metadata", pa.string()),
        ("source", pa.string()),
        ("record", pa.string()),
        ("message", pa.string()),
    ]
)
# A prepared row: a document (with its hash and chunk count), one of its chunks, or an error.
PREPARED = pa.schema(
    [
        *PARSED,
        ("doc_hash", pa.string()),
        ("n_chunks", pa.int64()),
        ("unchanged", pa.bool_()),
        ("chunk_index", pa.int64()),
        ("token_ids", pa.list_(pa.int32())),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("content_hash", pa.string()),
    ]
)
KEYS = [
    "kind",
    "doc_id",
    "source",
    "record",
    "message",
    "doc_hash",
    "n_chunks",
    "unchanged",
    "chunk_index",
    "content_hash",
]


# -- actors -------------------------------------------------------------------------------


class PrepareStage:
    """CPU actor: parsed records -> documents with hashes -> chunks with hashes.

    Emits, in order, per record: an `error` row, or a `doc` row (its hash and chunk count)
    followed by its `chunk` rows. A document whose hash is as last fully embedded is not
    chunked (`unchanged`, with the chunk count it had).
    """

    def __init__(
        self,
        model: dict[str, Any],
        chunking: dict[str, Any],
        fingerprint: str,
        max_seq_length: int,
        unchanged: Any,
    ) -> None:
        import ray

        self.model, self.chunking = ModelConfig(**model), ChunkingConfig(**chunking)
        self.max_seq_length = max_seq_length
        self.fingerprint = fingerprint
        self.unchanged: dict[str, tuple[str, int]] = (
            unchanged if isinstance(unchanged, dict) else ray.get(unchanged)
        )

    @functools.cached_property
    def chunker(self) -> Chunker:
        """Loaded for the first document that needs chunking: an actor that sees only unchanged
        documents never imports transformers (and torch)."""
        from transformers import AutoTokenizer

        from embedpipe.encoding.chunking import Chunker
        from embedpipe.encoding.models import resolve_model_path

        path = resolve_model_path(self.model.name)[1]
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return Chunker.for_run(tokenizer, self.chunking, self.model, self.max_seq_length)

    def __call__(self, table: pa.Table) -> pa.Table:
        from embedpipe.hashing import content_hash

        out: dict[str, list[Any]] = {name: [] for name in PREPARED.names}
        for row in table.to_pylist():
            if row["kind"] == ERROR:
                _row(out, row)
                continue
            if not row["text"].strip():  # an empty document is a bad record, as locally
                _row(
                    out,
                    {**row, "kind": ERROR, "text": "", "record": row["doc_id"], "message": EMPTY},
                )
                continue
            doc_hash = content_hash(self.fingerprint, row["text"])
            last = self.unchanged.get(row["doc_id"])
            if last is not None and last[0] == doc_hash:
                _row(
                    out,
                    {**row, "text": "", "metadata": "{}"},
                    doc_hash=doc_hash,
                    n_chunks=last[1],
                    unchanged=True,
                )
                continue
            doc = Document(id=row["doc_id"], text=row["text"], metadata=json.loads(row["metadata"]))
            chunks = list(self.chunker.chunk_many([doc]))
            _row(
                out, {**row, "text": "", "metadata": "{}"}, doc_hash=doc_hash, n_chunks=len(chunks)
            )
            for c in chunks:
                _row(
                    out,
                    {
                        "kind": CHUNK,
                        "doc_id": c.doc_id,
                        "text": c.text,
                        "metadata": row["metadata"],
                        "source": row["source"],
                    },
                    chunk_index=c.index,
                    token_ids=c.token_ids,
                    start=c.start,
                    end=c.end,
                    content_hash=content_hash(self.fingerprint, c.text),
                )
        return pa.table(out, schema=PREPARED)


class EncodeStage:
    """Encoder actor: one model load, the same length bucketing and token budget as locally;
    writes the sink itself when given a writer (then returns no vectors)."""

    def __init__(
        self,
        model: dict[str, Any],
        batching: dict[str, Any],
        threads: float,
        writer: RemoteWriter | None,
    ) -> None:
        import torch

        from embedpipe.encoding.batching import token_budget
        from embedpipe.encoding.encoder import Encoder

        torch.set_num_threads(max(1, int(threads)))
        self.encoder = Encoder(ModelConfig(**model))
        self.batching = BatchingConfig(**batching)  # only the keys set: an unset budget is auto
        self.budget = token_budget(self.batching, self.encoder.batch_token_budget)
        self.writer = writer
        self.label = f"{self.encoder.device}/{self.encoder.precision}"

    def __call__(self, table: pa.Table) -> pa.Table:
        from embedpipe.encoding.batching import packed

        batch = table.to_pydict()
        chunks = chunks_of(batch)
        n = len(chunks)
        vectors = np.zeros((n, self.encoder.dim), dtype=np.float32)
        real, padded = [0] * n, [0] * n
        sizes: list[list[int]] = [[] for _ in range(n)]
        position = {id(c): i for i, c in enumerate(chunks)}
        for one in packed(chunks, self.batching, self.budget, self.encoder.pad_id):
            at = [position[id(c)] for c in one.chunks]
            vectors[at] = self.encoder.encode_batch(one)
            real[at[0]], padded[at[0]] = one.real_tokens, one.padded_tokens
            sizes[at[0]] = one.attention_mask.sum(axis=1).tolist()
        out = table.drop_columns(["token_ids"]).append_column(
            "real_tokens", pa.array(real, pa.int64())
        )
        out = out.append_column("padded_tokens", pa.array(padded, pa.int64()))
        out = out.append_column("sizes", pa.array(sizes, pa.list_(pa.int64())))
        out = out.append_column("tokens", pa.array([c.token_count for c in chunks], pa.int64()))
        out = out.append_column("encoder", pa.array([self.label] * n, pa.string()))
        if self.writer is not None:
            self.writer.write(Embedded(chunks, vectors))
            return out.drop_columns(["text", "metadata"])
        flat = pa.array(vectors.reshape(-1))
        return out.append_column(
            "vector", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
        )


# -- parsing tasks (one per block of raw input) ---------------------------------------------------


def parse_parquet_rows(table: pa.Table, fields: Any) -> pa.Table:
    """Records read by read_parquet -> parsed rows (named later by the driver)."""
    from embedpipe.sources.records import column_rows, to_document

    return _parsed(
        to_document(r, fields, source="", record="") for r in column_rows(table.to_pydict())
    )


def parse_jsonl_files(table: pa.Table, fields: Any, names: dict[str, str]) -> pa.Table:
    """Raw JSONL files -> parsed rows, each error naming its file and line as locally."""
    from embedpipe.sources.jsonl import open_bytes, parse_jsonl

    items: list[Document | RecordError] = []
    for path, data, error in _files_of(table):
        name = names.get(path, path)
        if error is not None:  # as the local reader names an object it cannot fetch
            items.append(RecordError(name, "line 1", f"cannot read further: {error}"))
            continue
        items.extend(parse_jsonl(open_bytes(name, data), fields, name))
    return _parsed(items)


def parse_document_files(table: pa.Table, root: str, names: dict[str, str]) -> pa.Table:
    """Raw document files -> parsed rows, ids relative to the source root as locally."""
    from embedpipe.sources.files import file_document

    return _parsed(
        file_document(root, names.get(path, path), data)
        if error is None
        else RecordError(root, names.get(path, path), f"cannot read object: {error}")
        for path, data, error in _files_of(table)
    )


def _fetched(table: pa.Table, filesystem: Any) -> pa.Table:
    """A block of bucket paths -> (path, bytes, error) rows: each object's body, or why not."""
    from embedpipe.sources.storage import fetch

    paths: list[str] = table.column("path").to_pylist()
    data: list[bytes] = []
    errors: list[str | None] = []
    for path in paths:
        try:
            data.append(fetch(filesystem, path))
            errors.append(None)
        except OSError as exc:
            data.append(b"")
            errors.append(str(exc))
    return pa.table(
        {
            "path": paths,
            "bytes": pa.array(data, pa.binary()),
            "error": pa.array(errors, pa.string()),
        }
    )


def _files_of(table: pa.Table) -> Iterator[tuple[str, bytes, str | None]]:
    """(path, raw bytes, why it could not be read) of each file in a block read by `read_raw`."""
    errors = table.column("error").to_pylist() if "error" in table.column_names else None
    paths, data = table.column("path").to_pylist(), table.column("bytes").to_pylist()
    yield from zip(paths, data, errors or [None] * len(paths), strict=True)


def _parsed(items: Iterable[Document | RecordError]) -> pa.Table:
    out: dict[str, list[Any]] = {name: [] for name in PARSED.names}
    for item in items:
        if isinstance(item, RecordError):
            _row(
                out,
                {
                    "kind": ERROR,
                    "metadata": "{}",
                    "source": item.source,
                    "record": item.record,
                    "message": item.reason,
                },
            )
        else:
            meta = json.dumps(item.metadata, ensure_ascii=False, default=str)
            _row(
                out,
                {
                    "kind": DOC,
                    "doc_id": item.id,
                    "text": item.text,
                    "metadata": meta,
                    "source": item.source,
                },
            )
    return pa.table(out, schema=PARSED)


def shipped(items: list[Document | RecordError], block_docs: int) -> Any:
    """A wave of a source only the driver can read, as parsed blocks in the object store."""
    import ray

    table = _parsed(items)
    blocks = [ray.put(table.slice(i, block_docs)) for i in range(0, max(len(table), 1), block_docs)]
    return ray.data.from_arrow_refs(blocks)  # type: ignore[arg-type]


def read_raw(paths: list[str], filesystem: Any = None) -> Any:
    """Each file's raw bytes (gzip included: our parsers name a corrupt file instead of failing).
    A bucket's objects (`filesystem` given) are fetched by the storage layer, with its retries,
    and one that cannot be had is a row with its reason (`error`), named by the parsers."""
    import ray

    if filesystem is not None:
        rows = ray.data.from_items([{"path": p} for p in paths])
        fetch = functools.partial(_fetched, filesystem=filesystem)
        return rows.map_batches(fetch, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS)
    from ray.data._internal.datasource.binary_datasource import BinaryDatasource

    class RawBinary(BinaryDatasource):
        def resolve_compression(self, path: str, open_args: dict[str, Any]) -> str | None:
            return None

    raw = RawBinary(paths, include_paths=True, ignore_missing_paths=True, filesystem=filesystem)
    return ray.data.read_datasource(raw, num_cpus=READ_CPUS)


# -- small helpers --------------------------------------------------------------------------------


def _row(out: dict[str, list[Any]], base: dict[str, Any], **more: Any) -> None:
    """One row of `out` (PARSED or PREPARED columns) from `base` and `more`; missing ones are null."""
    values = {**base, **more}
    for name, column in out.items():
        column.append(values.get(name))


def chunks_of(batch: dict[str, list[Any]]) -> list[Chunk]:
    """Chunk objects back from the columns of a Ray batch (text and ids when it has them)."""
    n = len(batch["doc_id"])
    texts = batch.get("text") or [""] * n
    metadata = batch.get("metadata") or ["{}"] * n
    token_ids = batch.get("token_ids") or [[]] * n
    starts, ends = batch.get("start") or [0] * n, batch.get("end") or [0] * n
    return [
        Chunk(
            doc_id=batch["doc_id"][i],
            index=batch["chunk_index"][i],
            text=texts[i],
            token_ids=token_ids[i],
            start=starts[i],
            end=ends[i],
            content_hash=batch["content_hash"][i],
            metadata=json.loads(metadata[i]),
        )
        for i in range(n)
    ]


def _remote(fn: Any) -> Any:
    """`fn` as a Ray task, declared lazily so importing this module does not import ray."""
    cache: dict[str, Any] = {}

    class Lazy:
        def remote(self, *args: Any) -> Any:
            if "task" not in cache:
                import ray

                cache["task"] = ray.remote(num_cpus=0)(fn)  # tiny; never waits behind actors
            return cache["task"].remote(*args)

    return Lazy()


def _keys_of(block: pa.Table) -> pa.Table:
    return block.select(KEYS)


def _take_rows(block: pa.Table, rows: np.ndarray) -> pa.Table:
    return block.take(pa.array(rows)).drop_columns(
        ["doc_hash", "n_chunks", "unchanged", "message", "record"]
    )


keys_of = _remote(_keys_of)
take = _remote(_take_rows)
