"""What the qdrant: (server, local mode) and qdrant-edge: sinks share, whatever client they call.

Each engine keeps its own client calls in its module (qdrant.py, edge.py); this module holds the
parts written once: the options as plain data (the index `Shape`, compared on every reuse), the
mapping of options to HNSW / quantization / vector parameters, the payload-index rule, the scroll
loop over chunk ids, turning points into hits, and the shape of error translation.

Options shape the stored index, so they are applied when a collection is created and compared on
every later open: a mismatch is an error (`SinkError`), never silently ignored, because the
collection would go on being built the old way. Options left unset (None) are not compared.
Payload indexes are additive: a missing one is created on reuse instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedpipe.config import QdrantOptions
from embedpipe.durable import holder_of
from embedpipe.errors import SinkError
from embedpipe.sinks.base import Hit
from embedpipe.sinks.filters import METADATA, RANGES, All, AnyOf, Expr, Not
from embedpipe.sinks.shards import chunk_from_payload, hit_from_payload
from embedpipe.types import Embedded, point_id

# The options that shape the stored index, normalised: on_disk, hnsw_m, hnsw_ef_construct,
# quantization, shard_number, replication_factor.
Shape = dict[str, Any]
# How reconcile names a point without embedpipe's chunk id (another tool wrote it): by its id.
FOREIGN_POINT = "point:"
SHARDING = ("shard_number", "replication_factor")  # a server's; one Edge shard has neither
MIN_SCROLL_PAGE = 256


def wanted_shape(options: QdrantOptions, *, sharded: bool = True) -> Shape:
    """What the configuration asks for (without the sharding keys unless `sharded`)."""
    shape = {
        "on_disk": options.on_disk,
        "hnsw_m": options.hnsw.m,
        "hnsw_ef_construct": options.hnsw.ef_construct,
        "quantization": options.quantization,
        "shard_number": options.shard_number,
        "replication_factor": options.replication_factor,
    }
    return shape if sharded else {k: v for k, v in shape.items() if k not in SHARDING}


def check_shape(have: Shape, want: Shape, collection: str, where: str) -> None:
    """Raise when a reused collection was built with other options than the configured ones.

    Keys the configuration leaves unset, or that the store does not report (None), are skipped.
    """
    diffs = [
        f"{key}={have[key]!r} (configured: {value!r})"
        for key, value in want.items()
        if value is not None and have.get(key) is not None and have[key] != value
    ]
    if diffs:
        raise SinkError(
            f"collection '{collection}' at {where} was created with {', '.join(diffs)}: options "
            "apply when a collection is created, so set them back, or use another --collection "
            "(or delete this one) to build it with the new ones"
        )


@dataclass(frozen=True)
class VectorTypes:
    """One engine's constructors for what `vector_params` builds from the options."""

    hnsw: Callable[[int | None, int | None], Any]  # (m, ef_construct), either may be None
    int8: Callable[[], Any]
    binary: Callable[[], Any]
    vectors: Callable[[int, bool, Any, Any], Any]  # (dim, on_disk, hnsw, quantization)


def vector_params(options: QdrantOptions, dim: int, types: VectorTypes) -> Any:
    """The cosine vector parameters for `options` in one engine's types: HNSW only when m or
    ef_construct is set, quantization only when asked (int8 or binary, kept in RAM)."""
    hnsw = None
    if options.hnsw.m is not None or options.hnsw.ef_construct is not None:
        hnsw = types.hnsw(options.hnsw.m, options.hnsw.ef_construct)
    quantize = {"int8": types.int8, "binary": types.binary}.get(options.quantization)
    return types.vectors(dim, options.on_disk, hnsw, None if quantize is None else quantize())


def ensure_payload_indexes(
    wanted: Iterable[str], have: Callable[[], Iterable[str]], create: Callable[[str], None]
) -> None:
    """Create the keyword indexes of `wanted` fields that `have()` does not list."""
    wanted = list(wanted)
    if wanted:
        present = set(have())
        for field in wanted:
            if field not in present:
                create(field)


def scroll_chunk_ids(
    page: Callable[[Any, int], tuple[Sequence[Any], Any]], write_batch: int
) -> Iterator[str]:
    """Every point's chunk id, a page at a time: `page(offset, limit)` returns (points, next
    offset), the next offset None after the last page."""
    offset: Any = None
    while True:
        points, offset = page(offset, max(write_batch, MIN_SCROLL_PAGE))
        yield from ((p.payload or {}).get("chunk_id") or f"{FOREIGN_POINT}{p.id}" for p in points)
        if offset is None:
            return


@dataclass(frozen=True)
class FilterTypes:
    """One engine's constructors for a payload filter."""

    filter: Callable[..., Any]  # (must=[...]), (should=[...]) or (must_not=[...])
    field: Callable[[str, Any], Any]  # (key, match)
    value: Callable[[Any], Any]  # match one value
    any: Callable[[list[Any]], Any]  # match any of several strings, or of several integers
    numbers: Callable[[str, dict[str, Any]], Any]  # (key, {"gte": 3, ...}): a numeric range
    dates: Callable[[str, dict[str, Any]], Any]  # (key, {"lt": "2024-..Z"}): a datetime range
    is_empty: Callable[[str], Any]  # the field is missing, null or []


def native_filter(expr: Expr | None, types: FilterTypes) -> Any:
    """The expression as one engine's filter (None for none): All as `must`, AnyOf as `should`,
    Not and `nin` as `must_not`; within an `in`, each type (string, integer, boolean) matched
    as itself; ranges as Range / DatetimeRange."""
    if expr is None:
        return None
    condition = _native(expr, types)
    return condition if isinstance(expr, All | AnyOf | Not) else types.filter(must=[condition])


def _native(expr: Expr, types: FilterTypes) -> Any:
    if isinstance(expr, All):
        return types.filter(must=[_native(p, types) for p in expr.parts])
    if isinstance(expr, AnyOf):
        return types.filter(should=[_native(p, types) for p in expr.parts])
    if isinstance(expr, Not):
        return types.filter(must_not=[_native(expr.part, types)])
    if expr.op in RANGES:
        if expr.is_date:
            return types.dates(expr.key, {expr.op: expr.bound})
        return types.numbers(expr.key, {expr.op: expr.bound})
    options = []
    for kind, values in expr.by_type().items():
        if len(values) == 1 or kind is bool:  # MatchAny takes strings or integers only
            options += [types.field(expr.key, types.value(v)) for v in values]
        else:
            options.append(types.field(expr.key, types.any(values)))
    matched = options[0] if len(options) == 1 else types.filter(should=options)
    # `nin` as NOT(in), not MatchExcept: a list holding one excluded value is excluded too.
    return types.filter(must_not=[matched]) if expr.op == "nin" else matched


def has_field(key: str, first: Callable[[Any], Sequence[Any]], types: FilterTypes) -> bool:
    """Whether any point has a value at `key`: `first(filter)` scrolls one point that passes."""
    return len(first(types.filter(must_not=[types.is_empty(key)]))) > 0


def metadata_fields(scroll: Callable[[Any, int], tuple[Sequence[Any], Any]]) -> set[str]:
    """The metadata paths (metadata.X) the points have, read by scrolling their payloads."""
    names: set[str] = set()
    offset: Any = None
    while True:
        points, offset = scroll(offset, 1024)
        for p in points:
            meta = (p.payload or {}).get("metadata")
            if isinstance(meta, dict):
                names.update(METADATA + str(k) for k, v in meta.items() if v is not None)
        if offset is None:
            return names


def point_ref(chunk_id: str) -> str | int:
    """The point a chunk id names: the UUIDv5 of the id, or, for `point:ID` (a point another tool
    wrote, as `chunk_ids` reports it), that point id itself."""
    if not chunk_id.startswith(FOREIGN_POINT):
        return point_id(chunk_id)
    raw = chunk_id[len(FOREIGN_POINT) :]
    return int(raw) if raw.isdigit() else raw


def scroll_points(
    page: Callable[[Any, int], tuple[Sequence[Any], Any]], write_batch: int
) -> Iterator[Embedded]:
    """Every point with embedpipe's chunk id, as chunks with their vectors, a page at a time:
    `page(offset, limit)` returns (points with payload and vector, next offset)."""
    offset: Any = None
    while True:
        points, offset = page(offset, max(write_batch, MIN_SCROLL_PAGE))
        pairs = [(c, dense(p.vector)) for p in points if (c := chunk_from_payload(p.payload or {}))]
        if pairs:
            vectors = np.asarray([v for _, v in pairs], dtype=np.float32)
            yield Embedded([c for c, _ in pairs], vectors)
        if offset is None:
            return


def dense(vector: Any) -> Any:
    """A point's dense vector: the unnamed one of a point that also has sparse vectors (those
    are a function of the text: a copy computes them again, see sparse.py)."""
    return vector[""] if isinstance(vector, dict) else vector


def query_vector(vector: np.ndarray) -> list[float]:
    """One query vector as the flat list of floats the clients take."""
    floats: list[float] = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
    return floats


def hits(points: Iterable[Any], *, with_vectors: bool = False) -> list[Hit]:
    """Scored points with a chunk payload as search hits (with their vectors, when asked)."""
    if not with_vectors:
        return [hit_from_payload(p.score, p.payload or {}) for p in points]
    return [
        hit_from_payload(p.score, p.payload or {}, np.asarray(dense(p.vector), dtype=np.float32))
        for p in points
    ]


@contextmanager
def translated(
    action: str, translate: Callable[[str, Exception], SinkError | None]
) -> Iterator[None]:
    """Run a client call, raising `translate(action, exc)` from what it raises (SinkErrors pass
    through; an exception `translate` answers None for propagates as it is)."""
    try:
        yield
    except SinkError:
        raise
    except Exception as exc:
        error = translate(action, exc)
        if error is None:
            raise
        raise error from exc


def busy_hint(what: str, folder: Path | None) -> str:
    """Why a folder a library locks is busy, naming who holds it (see durable.note_holder)."""
    who = "another process" if folder is None else holder_of(folder)
    if who.startswith("this process"):
        return (
            f"{who} has the {what} open already, through another sink object: open the index "
            "with embedpipe.open_index (every store and query in a process share it), or close "
            "the other one first"
        )
    return f"the {what} is open in {who} (an embedpipe run or reader); wait for it or stop it"
