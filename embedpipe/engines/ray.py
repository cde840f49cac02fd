"""The same pipeline on Ray Data: chunking and encoding spread over a cluster's CPUs and GPUs.

The driver keeps everything that must be exactly-once: it reads the source (so bad records and
duplicate ids are handled as on the local engine), owns the ledger, and writes the sink from
the vectors streamed back, committing the ledger batch by batch; a killed job resumes where it
stopped. The cluster runs the project's own stages: `Chunker` + `content_hash` in CPU actors,
which drop chunks the ledger already holds before they reach an encoder, then `batches` +
`Encoder` in an actor pool (one model load per actor, `num_gpus` each on GPU clusters).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from embedpipe.config import ChunkingConfig, ModelConfig, RayConfig
from embedpipe.ledger import Ledger
from embedpipe.pipeline import _END, Interrupted, Run, _put, _Worker, crash_point
from embedpipe.types import Chunk, Document, Embedded, RecordError

log = logging.getLogger(__name__)

DOC, CHUNK = "doc", "chunk"


class RayRun(Run):
    """A Run whose chunking and encoding happen on Ray Data; the driver plans, writes and commits."""

    def _stream(self, source: Iterable[Document | RecordError], planner: Ledger) -> None:
        import ray

        cfg = self.cfg.ray
        _connect(cfg)
        known = ray.put(dict(_known_hashes(planner, self.target)))
        write_q: queue.Queue[Any] = queue.Queue(maxsize=4)
        write = _Worker("writer", lambda: self._write(write_q))
        write.start()
        try:
            docs = self._accepted_docs(source, planner)
            while wave := list(itertools.islice(docs, cfg.wave_docs)):
                if not self._wave(wave, known, planner, write_q, write):
                    break
        finally:
            _put(write_q, _END, write)
            write.join()
        write.reraise()
        if self.pipe.stop.is_set():
            raise Interrupted(
                "stopped on request after committing the batch in flight; re-run to resume"
            )

    def _wave(
        self,
        docs: list[Document],
        known: Any,
        planner: Ledger,
        write_q: queue.Queue[Any],
        write: _Worker,
    ) -> bool:
        """Ship one wave of documents through the cluster; False when the run must stop."""
        for batch in self._dataset(docs, known).iter_batches(batch_format="numpy", batch_size=None):
            kinds = batch["kind"]
            self._count_docs(batch, kinds == DOC, planner)
            rows = np.flatnonzero(kinds == CHUNK)
            if not len(rows) or self.dry_run:
                continue
            embedded = Embedded(
                _chunks(batch, rows),
                np.ascontiguousarray(np.stack(batch["vector"][rows]), dtype=np.float32),
            )
            self._count_batch(batch, rows)
            if not _put(write_q, embedded, write):
                return False
            if self.pipe.progress:
                self.pipe.progress(self.report)
            if self.pipe.stop.is_set():
                return False
        crash_point("ray-wave")
        return True

    def _dataset(self, docs: list[Document], known: Any) -> Any:
        import pyarrow as pa
        import ray

        cfg = self.cfg.ray
        table = pa.table(
            {
                "doc_id": [d.id for d in docs],
                "text": [d.text for d in docs],
                "metadata": [json.dumps(d.metadata, ensure_ascii=False, default=str) for d in docs],
            }
        )
        blocks: list[Any] = [
            ray.put(table.slice(i, cfg.block_docs)) for i in range(0, len(docs), cfg.block_docs)
        ]
        stage = {
            "model": self.cfg.model.model_dump(),
            "chunking": self.cfg.chunking.model_dump(),
            "fingerprint": self.target.fingerprint,
            "max_seq_length": self.encoder.max_seq_length,
        }
        b = self.cfg.batching
        ds = ray.data.from_arrow_refs(blocks).map_batches(
            ChunkStage, fn_constructor_kwargs={**stage, "known": known}, concurrency=cfg.chunk_workers,
            batch_size=None, batch_format="pyarrow", num_cpus=1,
        )  # fmt: skip
        if self.dry_run:
            return ds
        return ds.map_batches(
            EncodeStage, fn_constructor_kwargs={"model": stage["model"], "batching": b.model_dump(), "threads": cfg.num_cpus},
            concurrency=cfg.encoders, num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus, batch_size=None, batch_format="numpy",
        )  # fmt: skip

    def _count_docs(self, batch: dict[str, np.ndarray], docs: np.ndarray, planner: Ledger) -> None:
        report = self.report
        for i in np.flatnonzero(docs):
            planner.set_doc_chunks(str(batch["doc_id"][i]), int(batch["n_chunks"][i]))
            report.chunks_total += int(batch["n_chunks"][i])
            report.chunks_skipped += int(batch["n_skipped"][i])
            if self.dry_run:
                report.chunks_embedded += int(batch["n_chunks"][i]) - int(batch["n_skipped"][i])

    def _count_batch(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> None:
        self.report.batches += 1
        self.report.real_tokens += int(np.sum(batch["real_tokens"][rows]))
        self.report.padded_tokens += int(np.sum(batch["padded_tokens"][rows]))
        self.report.add_batch(
            np.fromiter((len(t) for t in batch["token_ids"][rows]), dtype=np.int64)
        )


class ChunkStage:
    """CPU actor: documents -> chunks with content hashes, minus those the ledger holds.

    Emits one `doc` row per document (its chunk count, for stale deletes on the driver) and one
    `chunk` row per chunk that needs encoding.
    """

    def __init__(
        self,
        model: dict[str, Any],
        chunking: dict[str, Any],
        fingerprint: str,
        max_seq_length: int,
        known: Any,
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
        self.known: dict[str, str] = known if isinstance(known, dict) else ray.get(known)

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        from embedpipe.hashing import content_hash

        rows = table.to_pydict()
        docs = [
            Document(id=i, text=t, metadata=json.loads(m))
            for i, t, m in zip(rows["doc_id"], rows["text"], rows["metadata"], strict=True)
        ]
        out: dict[str, list[Any]] = {k: [] for k in ("kind", "doc_id", "chunk_index", "text", "token_ids", "start", "end", "content_hash", "metadata", "n_chunks", "n_skipped")}  # fmt: skip
        for doc_id, group in itertools.groupby(
            self.chunker.chunk_many(docs), key=lambda c: c.doc_id
        ):
            chunks = list(group)
            skipped = 0
            for c in chunks:
                c.content_hash = content_hash(self.fingerprint, c.text)
                if self.known.get(c.id) == c.content_hash:
                    skipped += 1
                    continue
                _append(
                    out,
                    CHUNK,
                    c.doc_id,
                    c.index,
                    c.text,
                    c.token_ids,
                    c.start,
                    c.end,
                    c.content_hash,
                    json.dumps(c.metadata, ensure_ascii=False, default=str),
                    0,
                    0,
                )
            _append(out, DOC, doc_id, -1, "", [], 0, 0, "", "{}", len(chunks), skipped)
        return pa.table(out)


class EncodeStage:
    """Encoder actor: one model load, the same length bucketing and token budget as locally."""

    def __init__(self, model: dict[str, Any], batching: dict[str, Any], threads: float) -> None:
        import torch

        from embedpipe.encoder import Encoder

        torch.set_num_threads(max(1, int(threads)))
        self.encoder = Encoder(ModelConfig(**model))
        self.batching = batching

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from embedpipe.batching import batches

        n = len(batch["kind"])
        vectors = np.zeros((n, self.encoder.dim), dtype=np.float32)
        real, padded = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        rows = np.flatnonzero(batch["kind"] == CHUNK)
        chunks = _chunks(batch, rows)
        position = {id(c): int(r) for c, r in zip(chunks, rows, strict=True)}
        b = self.batching
        for packed in batches(chunks, max_batch_tokens=b["max_batch_tokens"], window=b["window"],
                              max_batch_size=b["max_batch_size"], pad_id=self.encoder.pad_id):  # fmt: skip
            at = [position[id(c)] for c in packed.chunks]
            vectors[at] = self.encoder.encode_batch(packed)
            real[at[0]], padded[at[0]] = packed.real_tokens, packed.padded_tokens
        return {**batch, "vector": vectors, "real_tokens": real, "padded_tokens": padded}


def _append(out: dict[str, list[Any]], *values: Any) -> None:
    for column, value in zip(out, values, strict=True):
        out[column].append(value)


def _chunks(batch: dict[str, np.ndarray], rows: np.ndarray) -> list[Chunk]:
    """Chunk objects back from the columns of a Ray batch."""
    return [
        Chunk(
            doc_id=str(batch["doc_id"][i]),
            index=int(batch["chunk_index"][i]),
            text=str(batch["text"][i]),
            token_ids=np.asarray(batch["token_ids"][i], dtype=np.int64).tolist(),
            start=int(batch["start"][i]),
            end=int(batch["end"][i]),
            content_hash=str(batch["content_hash"][i]),
            metadata=json.loads(str(batch["metadata"][i])),
        )
        for i in rows
    ]


def _known_hashes(planner: Ledger, target: Any) -> Iterator[tuple[str, str]]:
    """(chunk id, content hash) of every chunk the ledger holds as done for this target."""
    yield from planner.db.execute(
        "SELECT chunk_id, content_hash FROM chunks WHERE target = ? AND fingerprint = ? AND state = 1",
        (target.key, target.fingerprint),
    )


def _connect(cfg: RayConfig) -> None:
    """Join the cluster at `address` ('auto' = the running one), or start a local instance."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address=cfg.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
