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
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from embedpipe.config import RayConfig
from embedpipe.engines.base import RunContext
from embedpipe.engines.ray_stages import (
    CHUNK,
    ERROR,
    READ_CPUS,
    EncodeStage,
    PrepareStage,
    chunks_of,
    keys_of,
    parse_document_files,
    parse_jsonl_files,
    parse_parquet_rows,
    read_raw,
    shipped,
    take,
)
from embedpipe.errors import ConfigError, SinkError
from embedpipe.faults import crash_point
from embedpipe.runs.commit import Encoded
from embedpipe.sinks.base import RemoteWriter, Sink
from embedpipe.sinks.shards import vectors_of
from embedpipe.sources.base import Files, Source
from embedpipe.types import Chunk, Document, RecordError

log = logging.getLogger(__name__)

NATIVE = ("parquet", "jsonl", "dir")  # sources Ray reads itself; the rest are read on the driver


@dataclass
class Wave:
    """What the driver needs to name the records of one wave of files."""

    names: tuple[str, ...] = ()  # the wave's files, as the local reader names them
    rows: tuple[int, ...] = ()  # Parquet: rows per file (records carry no file name)
    root: str = ""  # dir: the source root, the `source` of its errors


@dataclass
class Cursor:
    """The driver's place in a wave's key rows, which it reads in source order."""

    wave: Wave
    ordinal: int = 0  # records (documents and errors) so far
    current: str | None = None  # the document whose chunk rows come next; None = drop them
    known: dict[int, tuple[str, int]] = field(default_factory=dict)  # its chunks in the ledger
    seen: set[str] = field(default_factory=set)  # file names met (dir: to spot vanished files)

    def __post_init__(self) -> None:
        self.bounds = np.cumsum(self.wave.rows)  # Parquet: where each file's rows end

    def name(self, row: dict[str, Any]) -> tuple[str, str]:
        """(source, record) of the next record; Parquet rows are named by their place in their file."""
        source, record = row["source"], row["record"]
        if self.wave.rows:
            f = int(np.searchsorted(self.bounds, self.ordinal, side="right"))
            start = int(self.bounds[f - 1]) if f else 0
            source, record = self.wave.names[f], f"row {self.ordinal - start}"
        self.ordinal += 1
        return source, record


class RayEngine:
    """Reading, chunking and encoding on Ray Data; the driver decides (the same planner as
    locally), commits and, for single-process sinks, writes."""

    def stream(self, run: RunContext, source: Iterable[Document | RecordError]) -> None:
        _RayStream(run).stream(source)


class _RayStream:
    """One run on Ray: the driver's side."""

    def __init__(self, run: RunContext) -> None:
        self.run, self.cfg, self.report = run, run.config, run.report
        self.planner, self.target = run.planner, run.planner.target

    def stream(self, source: Iterable[Document | RecordError]) -> None:
        import ray

        _connect(self.cfg.ray)
        self._size_chunk_actors()
        self.remote = (
            None if self.run.dry_run else remote_writer_for(self.run.sink, self.cfg.ray.write_from)
        )
        if not self.run.dry_run:
            by = "the encoder actors" if self.remote is not None else "the driver"
            self.report.notes.append(f"ray: sink written by {by}")
        # A hint for the chunking actors (an unchanged document is not chunked); the driver's
        # planner decides by the same ledger rule.
        ledger = self.planner.ledger
        unchanged = ray.put(
            {doc: (digest, n) for doc, digest, n in ledger.unchanged_docs(self.target)}
        )
        for refs, wave in _prefetched(self._waves(source, unchanged)):
            accepted = self._accept(refs, wave)
            if accepted and not self.run.dry_run and not self._encode_wave(accepted):
                break
            crash_point("ray-wave")
            if self.run.stop.is_set():
                break
        else:
            self.report.planning_done = True  # every wave was planned (and encoded)

    # -- pass 1: read, parse, chunk on the cluster ------------------------------------------

    def _waves(self, source: Iterable[Document | RecordError], unchanged: Any) -> Iterator[Any]:
        """(dataset of prepared rows, Wave) per wave: files read by Ray, else shipped documents."""
        files = source.files if isinstance(source, Source) else None
        if isinstance(source, Source) and files is not None and source.kind in NATIVE:
            waves = list(_file_waves(files.sizes, self.cfg.ray.wave_mb * 2**20))
            reader = "read_parquet" if source.kind == "parquet" else "binary files"
            self.report.notes.append(
                f"ray: {len(files.paths)} {source.kind} files read by Ray ({reader}) in {len(waves)} waves"
            )
            for error in files.skipped:  # listed but not to be read (a link out of the folder)
                self.planner.failed(error)
            for lo, hi in waves:
                ds, wave = self._read_files(source.kind, files, lo, hi)
                yield self._prepare(ds, unchanged), wave
            return
        self.report.notes.append("ray: source read on the driver and shipped in waves")
        items = iter(source)
        while docs := list(itertools.islice(items, self.cfg.ray.wave_docs)):
            yield self._prepare(shipped(docs, self.cfg.ray.block_docs), unchanged), Wave()

    def _read_files(self, kind: str, files: Files, lo: int, hi: int) -> tuple[Any, Wave]:
        import ray

        paths, names = list(files.paths[lo:hi]), files.names[lo:hi]
        by_path = dict(zip(paths, names, strict=True))
        if kind == "parquet":
            ds = ray.data.read_parquet(
                paths,
                columns=list(files.columns),
                file_extensions=None,
                num_cpus=READ_CPUS,
                filesystem=files.filesystem,
            )
            parse = functools.partial(parse_parquet_rows, fields=files.fields)
            wave = Wave(names, files.rows[lo:hi])
        elif kind == "jsonl":
            ds, wave = read_raw(paths, files.filesystem), Wave(names)
            parse = functools.partial(parse_jsonl_files, fields=files.fields, names=by_path)
        else:
            ds, wave = read_raw(paths, files.filesystem), Wave(names, root=files.root)
            parse = functools.partial(parse_document_files, root=files.root, names=by_path)
        parsed = ds.map_batches(parse, batch_size=None, batch_format="pyarrow", num_cpus=READ_CPUS)
        # Blocks of block_docs records (streaming, order kept), so the chunking actors share out
        # even a single big file: one read block would otherwise go to one actor.
        return parsed.repartition(target_num_rows_per_block=self.cfg.ray.block_docs), wave

    def _prepare(self, parsed: Any, unchanged: Any) -> Any:
        stage = {
            "model": self.cfg.model.model_dump(),
            "chunking": self.cfg.chunking.model_dump(),
            "fingerprint": self.target.fingerprint,
            "max_seq_length": self.run.encoder.max_seq_length,
            "unchanged": unchanged,
        }
        return parsed.map_batches(
            PrepareStage,
            fn_constructor_kwargs=stage,
            compute=_pool(self.cfg.ray.chunk_workers),
            batch_size=self.cfg.ray.block_docs,
            batch_format="pyarrow",
            num_cpus=self.chunk_cpus,
        )

    def _size_chunk_actors(self) -> None:
        """CPUs per chunking actor: 1, unless that leaves no CPU of the cluster for Ray Data's
        read tasks, which the actors wait for (measured: 2 actors x 1 CPU on 2 CPUs never start
        a Parquet read). Then the actors share what is left after one CPU."""
        import ray

        cpus, workers = float(ray.cluster_resources().get("CPU", 1)), self.cfg.ray.chunk_workers
        self.chunk_cpus = min(1.0, max(0.0, (cpus - 1) / workers))
        if self.chunk_cpus < 1:
            self.report.notes.append(
                f"ray: {workers} chunking actors at {self.chunk_cpus:.2f} CPU each: one of the "
                f"cluster's {cpus:g} CPUs stays free for Ray Data's readers"
            )

    # -- the driver's decisions -------------------------------------------------------------

    def _accept(self, refs: list[Any], wave: Wave) -> list[tuple[Any, np.ndarray]]:
        """Apply the local rules to a prepared wave, in source order: (block, row numbers to
        encode) per block that has any. For actor-written sinks those chunks are marked pending."""
        import ray

        cursor = Cursor(wave)
        accepted: list[tuple[Any, np.ndarray]] = []
        pending: list[Chunk] = []
        for ref, keys_ref in zip(refs, [keys_of.remote(ref) for ref in refs], strict=True):
            keys = ray.get(keys_ref).to_pylist()
            rows = [i for i, row in enumerate(keys) if self._decide(row, cursor)]
            if rows:
                accepted.append((ref, np.asarray(rows, dtype=np.int64)))
            if self.remote is not None:
                pending += [
                    Chunk(
                        keys[i]["doc_id"],
                        keys[i]["chunk_index"],
                        "",
                        [],
                        0,
                        0,
                        keys[i]["content_hash"],
                    )
                    for i in rows
                ]
        for name in wave.names if wave.root else ():  # a listed file Ray did not find
            if name not in cursor.seen:
                error = RecordError(wave.root, name, "cannot read file: it vanished during the run")
                self.planner.failed(error)
        if self.run.dry_run:
            self.report.chunks_embedded += sum(len(rows) for _, rows in accepted)
        elif pending:
            self.run.committer.pending(pending)
        return accepted

    def _decide(self, row: dict[str, Any], cursor: Cursor) -> bool:
        """One key row, in source order, by the planner's rules: True = encode this chunk."""
        if row["kind"] == CHUNK:  # False for the chunks of a duplicate or unchanged document
            return row["doc_id"] == cursor.current and self.planner.fresh(
                cursor.known, row["chunk_index"], row["content_hash"]
            )
        source, record = cursor.name(row)
        cursor.current = None  # a new record: the chunk rows of the last one are over
        if row["kind"] == ERROR:
            cursor.seen.add(record)
            self.planner.failed(RecordError(source, record, row["message"]))
            return False
        doc_id = row["doc_id"]
        cursor.seen.add(doc_id)
        if self.planner.admit(doc_id, source, row["doc_hash"]):
            cursor.current, cursor.known = doc_id, self.planner.known(doc_id)
            self.planner.chunked(doc_id, row["n_chunks"])
        return False

    # -- pass 2: encode (and write) on the cluster -------------------------------------------

    def _encode_wave(self, accepted: list[tuple[Any, np.ndarray]]) -> bool:
        """Encode a wave's accepted chunks; False when the run must stop."""
        import ray

        cfg, b = self.cfg.ray, self.cfg.batching
        blocks = [take.remote(ref, rows) for ref, rows in accepted]
        stage = {
            "model": self.cfg.model.model_dump(),
            "batching": b.model_dump(exclude_unset=True),  # unset keys stay unset (auto budget)
            "threads": cfg.num_cpus,
            "writer": self.remote,
        }
        ds = ray.data.from_arrow_refs(blocks).map_batches(
            EncodeStage,
            fn_constructor_kwargs=stage,
            compute=_pool(cfg.encoders),
            num_gpus=cfg.num_gpus,
            num_cpus=cfg.num_cpus,
            batch_size=None,
            batch_format="pyarrow",
        )
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            assert isinstance(table, pa.Table)
            vectors = None
            if "vector" in table.column_names:  # as one array, never as Python floats
                vectors, table = vectors_of(table), table.drop_columns(["vector"])
            batch = table.to_pydict()
            item = Encoded(chunks_of(batch), sum(batch["tokens"]), vectors)
            self._count_batch(batch)
            if not self.run.writer.put(item) or not self.run.tick():
                return False
        return True

    def _count_batch(self, batch: dict[str, list[Any]]) -> None:
        report = self.report
        for label in set(batch["encoder"]):  # what the actors ran on, not the driver's model
            device, _, precision = label.partition("/")
            if (device, precision) != (report.device, report.precision):
                report.device, report.precision = device, precision
                report.notes.append(f"ray: encoder actors ran on {device} ({precision})")
        for real, padded, sizes in zip(
            batch["real_tokens"], batch["padded_tokens"], batch["sizes"], strict=True
        ):
            if sizes:  # the first chunk of each packed batch carries the batch's figures
                report.count_batch(real, padded, np.asarray(sizes, dtype=np.int64))


def remote_writer_for(sink: Sink, write_from: str) -> RemoteWriter | None:
    """The writer the encoder actors use, or None when the driver writes the sink.

    `auto`: the actors write a sink reached over the network that takes concurrent writers (a
    Qdrant server); sinks in a local path are written by the driver (a path on the driver may not
    exist on the workers). `actors`: the actors write any sink that hands out a writer, and the
    others refuse with their reason.
    """
    caps = sink.capabilities
    if write_from == "driver" or (
        write_from == "auto" and (caps.local_path or not caps.concurrent_writers)
    ):
        return None
    try:
        return sink.remote_writer()
    except SinkError as exc:  # e.g. Qdrant local mode: one process only
        raise ConfigError(f"ray.write_from=actors: {exc}") from exc


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


def _connect(cfg: RayConfig) -> None:
    """Join the cluster at `address` ('auto' = the running one), or start a local instance."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        ray.init(
            address=cfg.address,
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # source order: the first of duplicate ids wins
