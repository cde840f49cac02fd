"""An index as a reader sees it: a sink, and what its live generation was built with.

A run records in its generation's manifest the model, the passage and query prompts, and the
model and chunking settings that shape the vectors (`built_with`). A reader (`query`, `eval`, the
LangChain and LlamaIndex adapters) opens an `Index` on a sink URI and a collection alone: it
encodes queries with the index's own model and query prompt, and adds documents with the
settings that keep the fingerprint, so they land in place. Indexes built before manifests held
this fall back to what the ledger knows (the model and the dimension).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from embedpipe.config import ModelConfig, RunConfig
from embedpipe.errors import ClosedIndexError, ConfigError, SinkError, StaleReadError
from embedpipe.mmr import mmr_order
from embedpipe.runs.encoderless import delete_named
from embedpipe.sinks import shared as serving
from embedpipe.sinks.base import Hit, ReadView, Sink, close_served, served
from embedpipe.sinks.registry import require_sparse
from embedpipe.sinks.sparse import (
    Bm25Encoder,
    Mode,
    Retrieval,
    SparseVector,
    check_alpha,
    check_mode,
    settings_of,
)
from embedpipe.state.ledger import (
    LEDGER_FILE,
    Ledger,
    Named,
    Target,
    chunk_ids_named,
    state_dir_for,
    target_key,
)

# The model settings that change the vectors, kept in the manifest so writes keep the fingerprint.
MODEL_SETTINGS = (
    "name",
    "normalize",
    "prefix",
    "query_prefix",
    "max_seq_length",
    "truncate_dim",
    "quantization",
)

# What `built_with` records; a copy of an index (export) carries these and nothing of the sink's own.
MANIFEST_KEYS = ("model", "dim", "prompts", "settings", "fingerprint", "dense_fingerprint")
MADE_REMEMBERED = 100_000  # passage vectors `made_here` recognises (16 bytes each)
CHUNKS_PER_LOOKUP = 1000  # chunk ids per filtered lookup (`Index.chunks`)
EncoderFor = Callable[
    [ModelConfig], Any
]  # an embedpipe.encoding.encoder.Encoder for model settings
# Read views one query takes at most when the generation of each is dropped under it (a sink
# that reads a generation by name: Postgres after a promotion that keeps none).
VIEW_TRIES = 3
T = TypeVar("T")


def built_with(config: RunConfig, dim: int) -> dict[str, Any]:
    """What a run records in its generation's manifest (`Sink.describe`)."""
    settings = {
        "model": config.model.model_dump(include=set(MODEL_SETTINGS)),
        "chunking": config.chunking.model_dump(),
    }
    if config.sink.sparse.on:  # what sparse and hybrid queries are encoded with
        settings["sparse"] = config.sink.sparse.model_dump()
    return {
        "model": config.model.name,
        "dim": dim,
        "prompts": {"passage": config.model.prefix, "query": config.model.query_prefix},
        "settings": settings,
    }


@dataclass(frozen=True)
class BuiltWith:
    """What the live generation was built with, as far as the sink (or the ledger) knows."""

    model: str | None = None
    dim: int | None = None
    passage_prompt: str = ""
    query_prompt: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def read(
        cls, sink: Sink, config: RunConfig, manifest: Mapping[str, Any] | None = None
    ) -> BuiltWith:
        """From the sink's manifest (or the one given: a read view's), else the ledger next to
        it, else nothing."""
        manifest = dict(sink.manifest() if manifest is None else manifest)
        if manifest.get("settings"):
            prompts = manifest.get("prompts") or {}
            return cls(
                manifest.get("model"),
                _int(manifest.get("dim")),
                str(prompts.get("passage") or ""),
                str(prompts.get("query") or ""),
                manifest["settings"],
            )
        live = ledger_live(sink.uri, config)
        dim = manifest.get("dim") or (live or {}).get("dim")
        return cls((live or {}).get("model"), _int(dim))


def ledger_live(uri: str, config: RunConfig) -> dict[str, Any] | None:
    """The ledger's live generation of the configured collection (None without a ledger)."""
    path = state_dir_for(uri, config.state) / "ledger.sqlite"
    if not path.exists():
        return None
    ledger = Ledger(path)
    try:
        return ledger.live(target_key(uri, config.sink.collection))
    finally:
        ledger.close()


class Index:
    """A sink opened for reading, searched with the model and query prompt it was built with.

    `query_prefix` overrides the stored query prompt (as a non-empty `model.query_prefix` in the
    config does); `config.model.name` overrides the stored model. Release it with close() (or
    use it as a context manager); it never blocks a run (see docs/architecture.md).
    """

    def __init__(
        self,
        config: RunConfig,
        encoder_for: EncoderFor,
        *,
        sink: Sink | None = None,
        query_prefix: str | None = None,
    ) -> None:
        """Over `sink` (the caller's, released by close()), else over this process's shared
        sink for `config.sink` (see `embedpipe.sinks.shared`)."""
        self.config = config
        self._shared: serving.SharedSink | None = None
        if sink is None:
            self._shared = serving.share(config.sink)
            sink, self._lock = self._shared.sink, self._shared.lock
        else:
            self._lock = threading.RLock()
        self._sink = sink
        self._closed = False
        self.query_prefix = query_prefix
        self._encoder_for = encoder_for
        self._built: BuiltWith | None = None
        # What each generation a read view served was built with, by fingerprint: a query
        # encodes with the model of the generation it searches, across a promotion too.
        self._served: dict[str, BuiltWith] = {}
        self._made: OrderedDict[bytes, None] = OrderedDict()  # digests of passage vectors made
        self._made_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The index in words: its sink URI and collection."""
        return f"{self._sink.uri} (collection '{self.config.sink.collection}')"

    @property
    def sink(self) -> Sink:
        """The sink underneath; use it holding `locked()` when other threads may query."""
        self._check_open()
        return self._sink

    @contextmanager
    def locked(self) -> Iterator[Sink]:
        """The sink, held for this thread alone (every index sharing it waits): for writes
        through it, and anything else that opens or releases its readers."""
        with self._lock:
            yield self.sink

    @property
    def built(self) -> BuiltWith:
        """What the live generation was built with (read once, until `refresh`)."""
        self._check_open()
        if self._built is None:
            with self.locked() as sink:
                try:
                    self._built = BuiltWith.read(sink, self.config)
                finally:
                    sink.abort()  # reading the manifest may hold a client or a folder lock
        return self._built

    def refresh(self) -> None:
        """Read the manifest again at the next use (after a run wrote into the index)."""
        self._built = None
        self._served = {}

    def _built_for(self, view: ReadView) -> BuiltWith:
        """What the generation a read view serves was built with."""
        if view.fingerprint is None or view.manifest is None:
            return self.built
        built = self._served.get(view.fingerprint)
        if built is None:
            built = BuiltWith.read(self.sink, self.config, view.manifest)
            self._served = {view.fingerprint: built}  # the newest only: an older one is done
        return built

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete every chunk of these documents from the live generation and its ledger;
        returns how many chunks went (ids the index lacks are fine)."""
        gone, _ = self.delete_named(Named(doc_ids), strict=False)
        return gone

    def delete_named(self, named: Named, *, strict: bool) -> tuple[int, list[str]]:
        """Delete the documents `named` names (see `direct.Named`) from the live generation
        and its ledger, as a run recorded in the ledger, under the state lock; (chunks deleted,
        ids that named nothing). `strict`: when some id names nothing, delete nothing."""
        live = self._live()
        with self.locked() as sink:
            sink.abort()  # a reader's client or shard would block the writer
            return delete_named(
                sink,
                self.config,
                named,
                fingerprint=live["fingerprint"],
                dim=int(live["dim"]),
                model=live["model"],
                strict=strict,
            )

    def chunks(self, named: Named, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The stored chunks of the documents `named` names (with `named.chunk_ids`, a chunk id
        names that chunk alone), among those `filter` passes; in the order named, each
        document's chunks in order. Scores mean nothing here."""
        live = self._live()
        target = Target(target_key(self.sink.uri, self.config.sink.collection), live["fingerprint"])
        ledger = Ledger(state_dir_for(self.sink.uri, self.config.state) / LEDGER_FILE)
        try:
            wanted = chunk_ids_named(ledger, target, named)
        finally:
            ledger.close()
        if not wanted:
            return []
        dim = int(live["dim"])
        probe = np.full(dim, 1.0 / np.sqrt(dim), dtype=np.float32)  # any vector: all are wanted
        found: dict[str, Hit] = {}
        for lo in range(0, len(wanted), CHUNKS_PER_LOOKUP):
            part = wanted[lo : lo + CHUNKS_PER_LOOKUP]
            where = {**(filter or {}), "chunk_id": part}
            found.update((h.chunk_id, h) for h in self.search_vector(probe, len(part), where))
        return [found[c] for c in wanted if c in found]

    def _live(self) -> dict[str, Any]:
        live = ledger_live(self.sink.uri, self.config)
        if live is None:
            raise SinkError(
                f"no ledger at {state_dir_for(self.sink.uri, self.config.state)} knows "
                f"'{self.config.sink.collection}' in {self.sink.uri}: nothing to delete from "
                "or read by id (pass state= where its ledger is)"
            )
        return live

    @property
    def query_prompt(self) -> str:
        """The text put before every query: the override, else the config's, else the stored."""
        return self._query_prompt(self.built)

    def _query_prompt(self, built: BuiltWith) -> str:
        if self.query_prefix is not None:
            return self.query_prefix
        return self.config.model.query_prefix or built.query_prompt

    def model_settings(self, built: BuiltWith | None = None) -> ModelConfig:
        """The model settings queries are encoded with: the index's model, normalisation and
        width (a Matryoshka index is queried truncated the same way), on the configured device,
        backend and threads, in the configured precision (fp32 for `auto`)."""
        built = built or self.built
        stored = dict(built.settings.get("model") or {})
        cfg = self.config.model
        return ModelConfig(
            name=cfg.name or built.model,
            device=cfg.device,
            backend=cfg.backend,
            threads=cfg.threads,
            precision="fp32" if cfg.precision == "auto" else cfg.precision,
            int8_min_cosine=cfg.int8_min_cosine,
            normalize=stored.get("normalize", cfg.normalize),
            max_seq_length=stored.get("max_seq_length", cfg.max_seq_length),
            # The run's own setting where the manifest keeps it (None: the model's width, as an
            # index built without truncation has); else the index's width.
            truncate_dim=stored.get("truncate_dim", built.dim or cfg.truncate_dim),
        )

    def encoder(self, built: BuiltWith | None = None) -> Any:
        """The (cached) encoder for `model_settings()`."""
        return self._encoder_for(self.model_settings(built))

    def embed_queries(self, texts: Sequence[str], built: BuiltWith | None = None) -> np.ndarray:
        """Query vectors (n, dim): the query prompt before each text (of the generation `built`
        describes, else the one served now)."""
        if built is None:
            with self.locked() as sink, served(sink) as view:
                built = self._built_for(view)
        vectors: np.ndarray = self.encoder(built).encode_texts(
            list(texts), prefix=self._query_prompt(built)
        )
        return vectors

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors (n, dim), as the index embeds its chunks: the passage prompt first.
        Each is remembered (a digest) so `made_here` knows it when it comes back to be stored."""
        vectors: np.ndarray = self.encoder().encode_texts(
            list(texts), prefix=self.built.passage_prompt
        )
        with self._made_lock:
            for vector in vectors:
                self._made[_digest(vector)] = None
            while len(self._made) > MADE_REMEMBERED:
                self._made.popitem(last=False)
        return vectors

    def made_here(self, vector: Sequence[float] | np.ndarray) -> bool:
        """Whether `embed_passages` of this index made exactly this vector (among the last
        MADE_REMEMBERED): a framework hands back such vectors to be stored, and they need no
        second encoding."""
        with self._made_lock:
            return _digest(np.asarray(vector, dtype=np.float32)) in self._made

    def search(
        self,
        text: str,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        mode: str = "dense",
        alpha: float | None = None,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """Top-k hits for a query text among the chunks `filter` passes, encoded with the model
        of the generation searched (one read view: a promotion never splits a query).

        `mode`: dense (the model's vector), sparse (BM25 over the chunks' sparse vectors; no
        model is loaded) or hybrid (both, fused by reciprocal rank; `alpha` weighs them: 1 =
        dense only, 0 = sparse only, None = equally). `vector`: the dense query vector, when the
        caller has it already (an adapter's own embedding)."""
        wanted, alpha = self._checked(mode, alpha)

        def read(view: ReadView) -> list[Hit]:
            if wanted == "dense":
                dense = self._query_for(view, text) if vector is None else vector
                with self._lock:
                    return view.search(dense, k, filter)
            retrieval = self._retrieval(view, text, wanted, alpha, vector, dense=wanted == "hybrid")
            with self._lock:
                assert view.retrieve is not None
                return view.retrieve(retrieval, k, filter)

        return self._viewed(read)

    def _viewed(self, read: Callable[[ReadView], T]) -> T:
        """`read` on a read view of the served index, held across it (the query meets the
        generation it was encoded for); again on a new view when the generation went before
        the view's search ran (StaleReadError), at most VIEW_TRIES views."""
        for tries in range(1, VIEW_TRIES + 1):
            try:
                with served(self.sink) as view:
                    return read(view)
            except StaleReadError:
                if tries == VIEW_TRIES:
                    raise
        raise AssertionError("unreachable")

    def _checked(self, mode: str, alpha: float | None) -> tuple[Mode, float | None]:
        """The retrieval mode and alpha asked for, checked; a sink that keeps no sparse vectors
        refuses sparse and hybrid before any work."""
        wanted, alpha = check_mode(mode), check_alpha(alpha)
        if wanted != "dense":
            require_sparse(self.sink.uri, f"--mode {wanted}")
        return wanted, alpha

    def _retrieval(
        self,
        view: ReadView,
        text: str,
        mode: Mode,
        alpha: float | None,
        vector: np.ndarray | None,
        *,
        dense: bool,
    ) -> Retrieval:
        """A sparse or hybrid query for the generation `view` serves: the BM25 vector with the
        settings it was built with, and (`dense`) the dense query vector (`vector`, else `text`
        encoded with its model; encoding holds no lock)."""
        with self._lock:
            built = self._built_for(view)
        sparse = self._sparse_query(built, view, text)
        if dense and vector is None:
            vector = self.embed_queries([text], built)[0]
        return Retrieval(mode, vector if dense else None, sparse, alpha, text)

    def has_sparse(self) -> bool:
        """Whether the live generation keeps sparse vectors (sparse and hybrid queries work)."""
        return settings_of(self.built.settings) is not None

    def _sparse_query(self, built: BuiltWith, view: ReadView, text: str) -> SparseVector:
        """The BM25 query vector, with the settings the generation searched was built with."""
        settings = settings_of(built.settings)
        if settings is None or view.retrieve is None:
            raise ConfigError(
                f"the index on {self.name} was built without sparse vectors, so sparse and "
                "hybrid queries are not possible: build it with --sparse bm25 (sink.sparse.kind: "
                "bm25), or query with --mode dense"
            )
        return Bm25Encoder(settings).query(text)

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 5,
        filter: Mapping[str, Any] | None = None,
        *,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top-k hits for a query vector among the chunks `filter` passes (`with_vectors`:
        each with its stored vector)."""
        with self._lock:
            return self._viewed(
                lambda view: view.search(vector, k, filter, with_vectors=with_vectors)
            )

    def mmr_search(
        self,
        text: str,
        k: int = 4,
        *,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        mode: str = "dense",
        alpha: float | None = None,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """`mmr_search_vector` for a query text, encoded with the model of the generation
        searched (one read view, as `search`).

        `mode` picks the `fetch_k` candidates: dense (the nearest chunks), sparse (the best by
        BM25) or hybrid (the best of both fused by reciprocal rank, `alpha` weighing them, as
        `search`); MMR then re-ranks them on the dense vectors in every mode (the query's, the
        model's, and the chunks' stored ones: what similarity means between chunks), as Qdrant's
        MMR over a prefetch does. Each hit keeps its score from the candidates' retrieval.
        `vector`: the dense query vector, when the caller has it already."""
        _check_lambda(lambda_mult)
        wanted, alpha = self._checked(mode, alpha)
        fetch = max(k, fetch_k)

        def read(view: ReadView) -> tuple[np.ndarray, list[Hit]]:
            if wanted == "dense":
                query = self._query_for(view, text) if vector is None else vector
                with self._lock:
                    return query, view.search(query, fetch, filter, with_vectors=True)
            retrieval = self._retrieval(view, text, wanted, alpha, vector, dense=True)
            assert retrieval.dense is not None
            with self._lock:
                assert view.retrieve is not None
                hits = view.retrieve(retrieval, fetch, filter, with_vectors=True)
            return retrieval.dense, hits

        query, hits = self._viewed(read)
        return _mmr(query, hits, k, lambda_mult)

    def mmr_search_vector(
        self,
        vector: np.ndarray,
        k: int = 4,
        *,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """k hits chosen by maximal marginal relevance (embedpipe.mmr) among the `fetch_k`
        (at least k) nearest chunks `filter` passes, re-ranked by their stored vectors; each
        hit's score is its similarity to the query. Works on every sink. The candidates come
        from one read view, under the index's lock; the re-ranking holds no lock."""
        _check_lambda(lambda_mult)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        hits = self.search_vector(vector, max(k, fetch_k), filter, with_vectors=True)
        return _mmr(vector, hits, k, lambda_mult)

    def _query_for(self, view: ReadView, text: str) -> np.ndarray:
        """The query vector of `text` for the generation `view` serves (encoding holds no
        lock)."""
        with self._lock:
            built = self._built_for(view)
        vector: np.ndarray = self.embed_queries([text], built)[0]
        return vector

    def write_config(self) -> RunConfig:
        """The configuration that adds documents to this index in place: the index's model,
        prompts and chunking (its fingerprint), the reader's sink, state and devices."""
        stored = self.built.settings
        if not stored:
            return self.config.model_copy(deep=True)
        model = {**self.config.model.model_dump(), **(stored.get("model") or {})}
        if self.config.model.name:
            model["name"] = self.config.model.name
        data = self.config.model_dump()
        data.update(model=model, chunking=stored.get("chunking") or data["chunking"])
        data["sink"]["sparse"] = stored.get("sparse") or {"kind": "none"}
        return RunConfig.model_validate(data)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the sink (files, locks, clients and read snapshots it holds for reading) once
        no other open index of this process shares it. Final: using the index afterwards raises;
        closing again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._shared is not None:
            serving.release(self._shared)
        else:
            with self._lock:
                self._sink.abort()
                close_served(self._sink)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedIndexError(
                f"the index on {self.name} was closed: open it again (embedpipe.open_index, or "
                "a new store) to query it"
            )

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_lambda(lambda_mult: float) -> None:
    if not 0.0 <= lambda_mult <= 1.0:
        raise ValueError(f"lambda_mult={lambda_mult}: MMR takes a number from 0 to 1")


def _mmr(query: np.ndarray, hits: list[Hit], k: int, lambda_mult: float) -> list[Hit]:
    """The candidates `hits` (with their vectors) re-ranked by MMR, up to k, without vectors."""
    if not hits:
        return []
    stored = np.stack([np.asarray(h.vector, dtype=np.float32) for h in hits])
    return [
        dataclasses.replace(hits[i], vector=None)
        for i in mmr_order(np.asarray(query, dtype=np.float32).reshape(-1), stored, k, lambda_mult)
    ]


def _digest(vector: np.ndarray) -> bytes:
    return hashlib.blake2b(
        np.ascontiguousarray(vector, dtype=np.float32).tobytes(), digest_size=16
    ).digest()


def _int(value: Any) -> int | None:
    return int(value) if value else None
