"""The same pipeline on Ray Data: reading, chunking, encoding (and some sink writes) on a cluster.

Each wave of the source runs in two passes, so the driver makes every exactly-once decision
without ever holding document text:

1. prepare (cluster): Ray's readers read the wave's files in parallel (`read_parquet`, raw
   bytes of JSONL and document files; a source only embedpipe can read is read on the driver
   and shipped), the project's own parsers turn records into documents or named errors, and
   CPU actors hash them, chunk them with the project's `Chunker` and hash the chunks. A
   document whose hash the ledger holds as fully embedded is not chunked at all. The wave is
   materialized in the object store, in source order.
2. the driver reads back only the keys (ids, hashes, errors) in source order and applies the
   local engine's rules: errors are counted, the first occurrence of an id wins, chunks the
   ledger holds with the same hash are dropped before they reach a GPU.
3. encode (cluster): the accepted chunk rows go to an actor pool (one model load per actor,
   `num_gpus` each) that packs them with the same length bucketing and token budget. Sinks that
   take concurrent writers (a Qdrant server) are written by the actors, after the driver marked
   the chunks pending; the others are written by the driver from the vectors streamed back.
   Either way the driver commits the ledger batch by batch, so a killed job resumes.

While a wave encodes, the next one is prepared.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import logging
import os
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embedpipe.config import ChunkingConfig, ModelConfig, RayConfig
from embedpipe.errors import ConfigError, SinkError
from embedpipe.ledger import DONE, PENDING, Ledger
from embedpipe.pipeline import _END, Interrupted, RemoteBatch, Run, _put, _Worker, crash_point
from embedpipe.sinks import LOCAL_SCHEMES
from embedpipe.sinks.base import RemoteWriter, Sink
from embedpipe.sources.base import Files, Source
from embedpipe.types import Chunk, Document, Embedded, RecordError

log = logging.getLogger(__name__)

DOC, CHUNK, ERROR = "doc", "chunk", "error"
NATIVE = ("parquet", "jsonl", "dir")  # sources Ray reads itself; the rest are read on the driver

# A parsed record: a document or the reason it is not one.
PARSED = pa.schema(
    [("kind", pa.string()), ("doc_id", pa.string()), ("text", pa.string()), ("metadata", pa.string()),
     ("source", pa.string()), ("record", pa.string()), ("message", pa.string())]
)  # fmt: skip
# A prepared row: a document (with its hash and chunk count), one of its chunks, or an error.
PREPARED = pa.schema(
    [*PARSED, ("doc_hash", pa.string()), ("n_chunks", pa.int64()), ("unchanged", pa.bool_()),
     ("chunk_index", pa.int64()), ("token_ids", pa.list_(pa.int32())), ("start", pa.int64()),
     ("end", pa.int64()), ("content_hash", pa.string())]
)  # fmt: skip
KEYS = ["kind", "doc_id", "source", "record", "message", "doc_hash", "n_chunks", "unchanged",
        "chunk_index", "content_hash"]  # fmt: skip


@dataclass
class Wave:
    """What the driver needs to name the records of one wave of files."""

    names: tuple[str, ...] = ()  # the wave's files, as the local reader names them
    rows: tuple[int, ...] = ()  # Parquet: rows per file (records carry no file name)
    root: str = ""  # dir: the source root, the `source` of its errors


class RayRun(Run):
    """A Run whose reading, chunking and encoding happen on Ray Data; the driver decides,
    commits and (for single-process sinks) writes."""

    def _stream(self, source: Iterable[Document | RecordError], planner: Ledger) -> None:
        import ray

        _connect(self.cfg.ray)
        self.remote = (
            None if self.dry_run else remote_writer_for(self.sink, self.cfg.ray.write_from)
        )
        if not self.dry_run:
            by = "the encoder actors" if self.remote is not None else "the driver"
            self.report.notes.append(f"ray: sink written by {by}")
        unchanged = ray.put(
            {doc: (digest, n) for doc, digest, n in planner.unchanged_docs(self.target)}
        )
        write_q: queue.Queue[Any] = queue.Queue(maxsize=4)
        write = _Worker("writer", lambda: self._write(write_q))
        write.start()
        try:
            for refs, wave in _prefetched(self._waves(source, unchanged)):
                accepted = self._accept(refs, wave, planner)
                if (
                    accepted
                    and not self.dry_run
                    and not self._encode_wave(accepted, write_q, write)
                ):
                    break
                crash_point("ray-wave")
                if self.pipe.stop.is_set():
                    break
        finally:
            _put(write_q, _END, write)
            write.join()
        write.reraise()
        if self.pipe.stop.is_set():
            raise Interrupted(
                "stopped on request after committing the batch in flight; re-run to resume"
            )

    # -- pass 1: read, parse, chunk on the cluster ------------------------------------------

    def _waves(self, source: Iterable[Document | RecordError], unchanged: Any) -> Iterator[Any]:
        """(dataset of prepared rows, Wave) per wave: files read by Ray, else shipped documents."""
        files = source.files if isinstance(source, Source) else None
        if isinstance(source, Source) and files is not None and source.kind in NATIVE:
            waves = list(_file_waves(files.sizes, self.cfg.ray.wave_mb * 2**20))
            reader = "read_parquet" if source.kind == "parquet" else "binary files"
            self.report.notes.append(f"ray: {len(files.paths)} {source.kind} files read by Ray ({reader}) in {len(waves)} waves")  # fmt: skip
            for lo, hi in waves:
                ds, wave = self._read_files(source.kind, files, lo, hi)
                yield self._prepare(ds, unchanged), wave
            return
        self.report.notes.append("ray: source read on the driver and shipped in waves")
        items = iter(source)
        while docs := list(itertools.islice(items, self.cfg.ray.wave_docs)):
            yield self._prepare(_shipped(docs, self.cfg.ray.block_docs), unchanged), Wave()

    def _read_files(self, kind: str, files: Files, lo: int, hi: int) -> tuple[Any, Wave]:
        import ray

        paths, names = list(files.paths[lo:hi]), files.names[lo:hi]
        by_path = dict(zip(paths, names, strict=True))
        if kind == "parquet":
            ds = ray.data.read_parquet(paths, columns=list(files.columns), file_extensions=None)
            parse = functools.partial(_parse_rows, fields=files.fields)
            wave = Wave(names, files.rows[lo:hi])
        elif kind == "jsonl":
            ds, wave = _read_raw(paths), Wave(names)
            parse = functools.partial(_parse_jsonl, fields=files.fields, names=by_path)
        else:
            ds, wave = _read_raw(paths), Wave(names, root=files.root)
            parse = functools.partial(_parse_files, root=files.root, names=by_path)
        return ds.map_batches(parse, batch_size=None, batch_format="pyarrow"), wave

    def _prepare(self, parsed: Any, unchanged: Any) -> Any:
        stage = {
            "model": self.cfg.model.model_dump(),
            "chunking": self.cfg.chunking.model_dump(),
            "fingerprint": self.target.fingerprint,
            "max_seq_length": self.encoder.max_seq_length,
            "unchanged": unchanged,
        }
        return parsed.map_batches(
            PrepareStage, fn_constructor_kwargs=stage, compute=_pool(self.cfg.ray.chunk_workers),
            batch_size=self.cfg.ray.block_docs, batch_format="pyarrow", num_cpus=1,
        )  # fmt: skip

    # -- the driver's decisions -------------------------------------------------------------

    def _accept(self, refs: list[Any], wave: Wave, planner: Ledger) -> list[tuple[Any, np.ndarray]]:
        """Apply the local rules to a prepared wave, in source order; the rows to encode.

        Returns (block, accepted row numbers) per block with chunk rows left to encode; with
        actor-written sinks those chunks are marked pending first.
        """
        import ray

        report = self.report
        ordinal, names_seen = 0, set()
        bounds = np.cumsum(wave.rows) if wave.rows else None
        accepted: list[tuple[Any, np.ndarray]] = []
        pending: list[Chunk] = []
        current: str | None = None  # the document whose chunk rows come next, None = dropped
        known: dict[int, tuple[str, int]] = {}
        key_refs = [_keys.remote(ref) for ref in refs]
        for ref, key_ref in zip(refs, key_refs, strict=True):
            keys = ray.get(key_ref).to_pydict()
            rows: list[int] = []
            for i, kind in enumerate(keys["kind"]):
                if kind == CHUNK:
                    index, digest = keys["chunk_index"][i], keys["content_hash"][i]
                    if keys["doc_id"][i] != current:
                        continue
                    if known.get(index) == (digest, DONE):
                        report.chunks_skipped += 1
                        continue
                    rows.append(i)
                    if self.remote is not None:
                        pending.append(Chunk(keys["doc_id"][i], index, "", [], 0, 0, digest))
                    continue
                source, record = keys["source"][i], keys["record"][i]
                if bounds is not None:  # Parquet rows are named by their place in their file
                    f = int(np.searchsorted(bounds, ordinal, side="right"))
                    source, record = wave.names[f], f"row {ordinal - (bounds[f - 1] if f else 0)}"
                ordinal += 1
                current = None
                if kind == ERROR:
                    names_seen.add(record)
                    self._failed(RecordError(source, record, keys["message"][i]), planner)
                    continue
                doc_id, n = keys["doc_id"][i], keys["n_chunks"][i]
                names_seen.add(doc_id)
                if not self._first(doc_id, source, keys["doc_hash"][i], planner):
                    continue
                if keys["unchanged"][i]:
                    self._unchanged(doc_id, n, planner)
                    continue
                current, known = doc_id, planner.doc_chunks(self.target, doc_id)
                planner.set_doc_chunks(doc_id, n)
                report.chunks_total += n
            if rows:
                accepted.append((ref, np.asarray(rows, dtype=np.int64)))
        for name in wave.names if wave.root else ():  # a listed file Ray did not find
            if name not in names_seen:
                error = RecordError(wave.root, name, "cannot read file: it vanished during the run")
                self._failed(error, planner)
        n_accepted = sum(len(rows) for _, rows in accepted)
        if self.dry_run:
            report.chunks_embedded += n_accepted
        elif pending:
            planner.mark(self.target, self.run_id, pending, PENDING)
        return accepted

    # -- pass 2: encode (and write) on the cluster -------------------------------------------

    def _encode_wave(
        self, accepted: list[tuple[Any, np.ndarray]], write_q: queue.Queue[Any], write: _Worker
    ) -> bool:
        """Encode a wave's accepted chunks; False when the run must stop."""
        import ray

        cfg, b = self.cfg.ray, self.cfg.batching
        blocks = [_take.remote(ref, rows) for ref, rows in accepted]
        stage = {
            "model": self.cfg.model.model_dump(),
            "batching": b.model_dump(),
            "auto_budget": "max_batch_tokens" not in b.model_fields_set,
            "threads": cfg.num_cpus,
            "writer": self.remote,
        }
        ds = ray.data.from_arrow_refs(blocks).map_batches(
            EncodeStage, fn_constructor_kwargs=stage, compute=_pool(cfg.encoders),
            num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus, batch_size=None, batch_format="pyarrow",
        )  # fmt: skip
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            assert isinstance(table, pa.Table)
            batch = table.to_pydict()
            vectors = _vectors(table.column("vector")) if "vector" in batch else None
            item = RemoteBatch(_chunks(batch), sum(batch["tokens"]), vectors)
            self._count_batch(batch)
            if not _put(write_q, item, write):
                return False
            if self.pipe.progress:
                self.pipe.progress(self.report)
            if self.pipe.stop.is_set():
                return False
        return True

    def _count_batch(self, batch: dict[str, list[Any]]) -> None:
        report = self.report
        for label in set(batch["encoder"]):  # what the actors ran on, not the driver's model
            device, _, precision = label.partition("/")
            if (device, precision) != (report.device, report.precision):
                report.device, report.precision = device, precision
                report.notes.append(f"ray: encoder actors ran on {device} ({precision})")
        for real, padded, sizes in zip(batch["real_tokens"], batch["padded_tokens"], batch["sizes"], strict=True):  # fmt: skip
            if sizes:  # the first chunk of each packed batch carries the batch's figures
                report.batches += 1
                report.real_tokens += real
                report.padded_tokens += padded
                report.add_batch(np.asarray(sizes, dtype=np.int64))


def remote_writer_for(sink: Sink, write_from: str) -> RemoteWriter | None:
    """The writer the encoder actors use, or None when the driver writes the sink.

    `auto`: the actors write a sink reached over the network (a Qdrant server); sinks in a local
    path are written by the driver (a path on the driver may not exist on the workers).
    `actors`: the actors write any sink that hands out a writer, an error for the others.
    """
    make = getattr(sink, "remote_writer", None)
    if write_from == "driver" or (
        write_from == "auto" and sink.uri.partition(":")[0] in LOCAL_SCHEMES
    ):
        return None
    if make is None:
        if write_from == "actors":
            raise ConfigError(
                f"ray.write_from=actors: the sink {sink.uri} takes no concurrent writers;"
                " use write_from=driver"
            )
        return None
    try:
        writer: RemoteWriter = make()
    except SinkError as exc:  # e.g. Qdrant local mode: one process only
        raise ConfigError(f"ray.write_from=actors: {exc}") from exc
    return writer


# -- cluster stages -------------------------------------------------------------------------------


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
        from transformers import AutoTokenizer

        from embedpipe.chunking import Chunker
        from embedpipe.encoder import resolve_model_path

        cfg, chunk_cfg = ModelConfig(**model), ChunkingConfig(**chunking)
        tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(cfg.name)[1]))
        self.chunker = Chunker(tokenizer, chunk_tokens=chunk_cfg.chunk_tokens, overlap_tokens=chunk_cfg.overlap_tokens,
                               max_seq_length=max_seq_length, prefix=cfg.prefix)  # fmt: skip
        self.fingerprint = fingerprint
        self.unchanged: dict[str, tuple[str, int]] = (
            unchanged if isinstance(unchanged, dict) else ray.get(unchanged)
        )

    def __call__(self, table: pa.Table) -> pa.Table:
        from embedpipe.hashing import content_hash

        out: dict[str, list[Any]] = {name: [] for name in PREPARED.names}
        for row in table.to_pylist():
            if row["kind"] == ERROR:
                _row(out, row)
                continue
            doc_hash = content_hash(self.fingerprint, row["text"])
            last = self.unchanged.get(row["doc_id"])
            if last is not None and last[0] == doc_hash:
                _row(out, {**row, "text": "", "metadata": "{}"}, doc_hash=doc_hash, n_chunks=last[1], unchanged=True)  # fmt: skip
                continue
            doc = Document(id=row["doc_id"], text=row["text"], metadata=json.loads(row["metadata"]))
            chunks = list(self.chunker.chunk_many([doc]))
            _row(out, {**row, "text": "", "metadata": "{}"}, doc_hash=doc_hash, n_chunks=len(chunks))  # fmt: skip
            for c in chunks:
                _row(
                    out,
                    {"kind": CHUNK, "doc_id": c.doc_id, "text": c.text, "metadata": row["metadata"],
                     "source": row["source"]},
                    chunk_index=c.index, token_ids=c.token_ids, start=c.start, end=c.end,
                    content_hash=content_hash(self.fingerprint, c.text),
                )  # fmt: skip
        return pa.table(out, schema=PREPARED)


class EncodeStage:
    """Encoder actor: one model load, the same length bucketing and token budget as locally;
    writes the sink itself when given a writer (then returns no vectors)."""

    def __init__(
        self,
        model: dict[str, Any],
        batching: dict[str, Any],
        auto_budget: bool,
        threads: float,
        writer: RemoteWriter | None,
    ) -> None:
        import torch

        from embedpipe.encoder import Encoder

        torch.set_num_threads(max(1, int(threads)))
        self.encoder = Encoder(ModelConfig(**model))
        self.batching = batching
        self.budget = batching["max_batch_tokens"]
        if auto_budget:
            self.budget = self.encoder.batch_token_budget(self.budget)
        self.writer = writer
        self.label = f"{self.encoder.device}/{self.encoder.precision}"

    def __call__(self, table: pa.Table) -> pa.Table:
        from embedpipe.batching import batches

        batch = table.to_pydict()
        chunks = _chunks(batch)
        n = len(chunks)
        vectors = np.zeros((n, self.encoder.dim), dtype=np.float32)
        real, padded = [0] * n, [0] * n
        sizes: list[list[int]] = [[] for _ in range(n)]
        position = {id(c): i for i, c in enumerate(chunks)}
        b = self.batching
        for packed in batches(chunks, max_batch_tokens=self.budget, window=b["window"],
                              max_batch_size=b["max_batch_size"], pad_id=self.encoder.pad_id):  # fmt: skip
            at = [position[id(c)] for c in packed.chunks]
            vectors[at] = self.encoder.encode_batch(packed)
            real[at[0]], padded[at[0]] = packed.real_tokens, packed.padded_tokens
            sizes[at[0]] = packed.attention_mask.sum(axis=1).tolist()
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


def _parse_rows(table: pa.Table, fields: Any) -> pa.Table:
    """Records read by read_parquet -> parsed rows (named later by the driver)."""
    from embedpipe.sources.records import column_rows, to_document

    return _parsed(
        to_document(r, fields, source="", record="") for r in column_rows(table.to_pydict())
    )


def _parse_jsonl(table: pa.Table, fields: Any, names: dict[str, str]) -> pa.Table:
    """Raw JSONL files -> parsed rows, each error naming its file and line as locally."""
    from embedpipe.sources.jsonl import open_bytes, parse_jsonl

    items: list[Document | RecordError] = []
    for path, data in _files_of(table):
        name = names.get(path, path)
        items.extend(parse_jsonl(open_bytes(name, data), fields, name))
    return _parsed(items)


def _parse_files(table: pa.Table, root: str, names: dict[str, str]) -> pa.Table:
    """Raw document files -> parsed rows, ids relative to the source root as locally."""
    from embedpipe.sources.files import file_document

    return _parsed(
        file_document(root, names.get(path, path), data) for path, data in _files_of(table)
    )


def _files_of(table: pa.Table) -> Iterator[tuple[str, bytes]]:
    """(path, raw bytes) of each file in a block read by `_read_raw`."""
    yield from zip(table.column("path").to_pylist(), table.column("bytes").to_pylist(), strict=True)


def _parsed(items: Iterable[Document | RecordError]) -> pa.Table:
    out: dict[str, list[Any]] = {name: [] for name in PARSED.names}
    for item in items:
        if isinstance(item, RecordError):
            _append(out, ERROR, "", "", "{}", item.source, item.record, item.reason)
        else:
            meta = json.dumps(item.metadata, ensure_ascii=False, default=str)
            _append(out, DOC, item.id, item.text, meta, item.source, "", "")
    return pa.table(out, schema=PARSED)


def _shipped(items: list[Document | RecordError], block_docs: int) -> Any:
    """A wave of a source only the driver can read, as parsed blocks in the object store."""
    import ray

    table = _parsed(items)
    blocks = [ray.put(table.slice(i, block_docs)) for i in range(0, max(len(table), 1), block_docs)]
    return ray.data.from_arrow_refs(blocks)  # type: ignore[arg-type]


def _read_raw(paths: list[str]) -> Any:
    """Each file's raw bytes (gzip included: our parsers name a corrupt file instead of failing)."""
    import ray
    from ray.data._internal.datasource.binary_datasource import BinaryDatasource

    class RawBinary(BinaryDatasource):
        def resolve_compression(self, path: str, open_args: dict[str, Any]) -> str | None:
            return None

    return ray.data.read_datasource(RawBinary(paths, include_paths=True, ignore_missing_paths=True))


# -- small helpers --------------------------------------------------------------------------------


def _append(out: dict[str, list[Any]], *values: Any) -> None:
    for column, value in zip(out, values, strict=True):
        out[column].append(value)


def _row(out: dict[str, list[Any]], base: dict[str, Any], **more: Any) -> None:
    """One PREPARED row from `base` (parsed columns) and `more`; missing columns are null."""
    values = {**base, **more}
    for name, column in out.items():
        column.append(values.get(name))


def _chunks(batch: dict[str, list[Any]]) -> list[Chunk]:
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


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks()
    return flat.flatten().to_numpy().astype(np.float32).reshape(len(flat), flat.type.list_size)


def _file_waves(sizes: tuple[int, ...], budget: float) -> Iterator[tuple[int, int]]:
    """[lo, hi) file ranges of about `budget` bytes each, at least one file per wave."""
    lo, total = 0, 0
    for i, size in enumerate(sizes):
        if i > lo and total + size > budget:
            yield lo, i
            lo, total = i, 0
        total += size
    if lo < len(sizes):
        yield lo, len(sizes)


def _prefetched(waves: Iterator[tuple[Any, Wave]]) -> Iterator[tuple[list[Any], Wave]]:
    """Materialize each wave's prepared rows one wave ahead: the next wave is read and chunked
    while the driver and the encoders work on this one."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embedpipe-prepare")
    try:
        ahead: tuple[concurrent.futures.Future[list[Any]], Wave] | None = None
        for ds, wave in waves:
            future = pool.submit(_materialized, ds)
            if ahead is not None:
                yield ahead[0].result(), ahead[1]
            ahead = (future, wave)
        if ahead is not None:
            yield ahead[0].result(), ahead[1]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _pool(size: int) -> Any:
    """A fixed pool of `size` actors (one model or tokenizer load each)."""
    import ray

    return ray.data.ActorPoolStrategy(size=size)


def _materialized(ds: Any) -> list[Any]:
    """Run a dataset to the end, its blocks kept in the object store, in order."""
    refs: list[Any] = ds.materialize().to_arrow_refs()
    return refs


def _remote(fn: Any) -> Any:
    """`fn` as a Ray task, declared lazily so importing this module does not import ray."""
    cache: dict[str, Any] = {}

    class Lazy:
        def remote(self, *args: Any) -> Any:
            if "task" not in cache:
                import ray

                cache["task"] = ray.remote(num_cpus=0.25)(fn)
            return cache["task"].remote(*args)

    return Lazy()


def _keys_of(block: pa.Table) -> pa.Table:
    return block.select(KEYS)


def _take_rows(block: pa.Table, rows: np.ndarray) -> pa.Table:
    return block.take(pa.array(rows)).drop_columns(["doc_hash", "n_chunks", "unchanged", "message", "record"])  # fmt: skip


_keys = _remote(_keys_of)
_take = _remote(_take_rows)


def _connect(cfg: RayConfig) -> None:
    """Join the cluster at `address` ('auto' = the running one), or start a local instance."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        ray.init(address=cfg.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # source order: the first of duplicate ids wins
