"""The library's front door: run(), backfill(), encode(), query(), open_index(), export(),
delete_documents(), status(), reconcile(), evaluate(), promote() and rollback(); as_config()
turns what a caller passes into a RunConfig. One model cache for the process."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from embedpipe.config import ModelConfig, RunConfig, flat_overrides, load_config
from embedpipe.documents import given
from embedpipe.encoding.lazy import LazyEncoder
from embedpipe.encoding.models import DEFAULT_MODEL_NAME
from embedpipe.errors import ConfigError, EmbedpipeError
from embedpipe.index import Index
from embedpipe.metrics import write_textfile
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Hit, Sink
from embedpipe.sinks.filters import parse_where as parse_where  # for the CLI's --where
from embedpipe.sinks.registry import require_sparse
from embedpipe.sinks.sparse import check_mode, sparse_kind
from embedpipe.state.ledger import LEDGER_FILE, Ledger, Target, state_dir_for, target_key
from embedpipe.state.permissions import state_permissions
from embedpipe.types import RunReport

if TYPE_CHECKING:  # a query process never imports the pipeline (~0.25 s)
    from embedpipe.runs.pipeline import Progress

ConfigArg: TypeAlias = RunConfig | str | Path | None  # what every function takes as `config`


def run(
    config: RunConfig | str | Path,
    *,
    source: Iterable[Any] | None = None,
    sink: Sink | None = None,
    progress: Progress | None = None,
    dry_run: bool = False,
    force: bool = False,
    stop: threading.Event | None = None,
    raise_on_failure: bool = True,
    origin: str | None = None,
    vectors: Mapping[str, tuple[str, np.ndarray]] | None = None,
) -> RunReport:
    """Run a configured pipeline; the report (`config.report`) and the Prometheus textfile
    (`config.metrics`, not for dry runs) are written whatever the outcome.

    The source and the sink are opened before the model loads, so a wrong path or URI is a
    ConfigError at once. While the pipeline runs, new directories get `config.state_mode` and new
    files the same minus the execute bits (state/permissions.py); the report and the textfile are written
    after, with the process's own umask, for whoever reads them.

    `origin` names where the documents came from when not from the configured source (the
    framework adapters pass LIBRARY: a full-mode run leaves such documents alone); `vectors`:
    vectors the caller already has from this index's model (chunk id -> (text, vector)),
    written as they are instead of being encoded again.
    """
    from embedpipe.runs.pipeline import Pipeline
    from embedpipe.runs.preflight import RecordCount, check_first_records
    from embedpipe.sources import open_source

    began = time.monotonic()
    config = as_config(config)
    source = open_source(config.source) if source is None else given(source)
    sink = open_sink(config.sink) if sink is None else sink
    check_first_records(source, config.repeated_error_limit)  # a wrong field: stop before the model
    count = RecordCount(source) if progress is not None else None
    if count is not None and progress is not None:
        progress = count.telling(progress)  # the report's docs_total, once counted
        progress(count.loading(sink.uri, config.sink.collection))
    # The model loads only when a chunk needs embedding (an unchanged re-run never loads it).
    encoder = LazyEncoder(config.model, lambda: _shared_encoder(config.model.model_dump_json()))
    encoder.given = vectors or {}
    pipe = Pipeline(
        config,
        source=source,
        sink=sink,
        encoder=encoder,
        progress=progress,
        force=force,
        began=began,
        load_encoder=lambda cfg: _shared_encoder(cfg.model_dump_json()),
        origin=origin,
    )
    if stop is not None:
        pipe.stop = stop
    try:
        with state_permissions(state_dir_for(sink.uri, config.state), config.state_mode_bits):
            return pipe.run(dry_run=dry_run)
    except ConfigError:
        raise
    except (EmbedpipeError, KeyboardInterrupt):
        if raise_on_failure or pipe.report is None:
            raise
        return pipe.report
    finally:
        if count is not None:
            count.stop()
        if config.report and pipe.report is not None:
            pipe.report.write(config.report)
        if config.metrics and not dry_run:
            write_textfile(config.metrics, pipe.report, collection=config.sink.collection)


def backfill(
    source: str | Iterable[Any],
    sink: str | Sink | None = None,
    *,
    config: ConfigArg = None,
    dry_run: bool = False,
    force: bool = False,
    **options: Any,
) -> RunReport:
    """Embed a corpus into a sink and return the run report.

    `source` is a URI (directory, .jsonl, .parquet, hf:PATH) or any iterable of Documents, dicts
    (`{"id", "text", "metadata"}`), `(id, text)` tuples or strings;
    `sink` a URI (qdrant:PATH, qdrant+http://HOST:PORT, faiss:DIR) or a Sink object. Other
    options are the CLI's flag names: model=, precision=, max_batch_tokens=, collection=, ...
    `force` allows a delete wave above `max_delete_fraction`; `dry_run` only counts.
    """
    uri = source if isinstance(source, str) else None
    sink_uri = sink if isinstance(sink, str) else None
    cfg = as_config(config, {"source": uri, "sink": sink_uri, **options})
    return run(
        cfg,
        source=None if isinstance(source, str) else source,
        sink=None if sink is None or isinstance(sink, str) else sink,
        dry_run=dry_run,
        force=force,
    )


_loading = threading.Lock()


def _shared_encoder(model_config: str) -> Any:
    """`_encoder_for`, one load at a time: threads asking for a model at once load it once."""
    with _loading:
        return _encoder_for(model_config)


@functools.lru_cache(maxsize=4)
def _encoder_for(model_config: str) -> Any:
    """The one model cache: a loaded encoder per model settings (ModelConfig as JSON) for the
    life of the process, shared by `run`, `encode` and `query`, so a program (or a test suite)
    loads and calibrates each model once. Where a torch-loaded encoder recorded how to run the
    same settings on its cached OpenVINO export, that runs without torch (`embedpipe.encoding.torchless`).
    Call it through `_shared_encoder`."""
    from embedpipe.encoding.encoder import Encoder, exported_encoder

    cfg = ModelConfig.model_validate_json(model_config)
    return exported_encoder(cfg) or Encoder(cfg)


def encode(
    texts: Sequence[str],
    *,
    model: str | None = None,
    precision: str = "fp32",
    device: str = "auto",
    truncate_dim: int | None = None,
    batch_size: int = 64,
    normalize: bool = True,
    prompt: str = "",
) -> np.ndarray:
    """Float32 vectors (n, dim) for texts, L2-normalised unless `normalize=False` (then as the
    model gives them: one ending in a Normalize module still normalises); the model is loaded
    once and cached. `prompt` goes before every text (e.g. "query: " for E5), texts are
    encoded `batch_size` at a time, and `truncate_dim` keeps the first N dims, re-normalised
    (for Matryoshka-trained models).
    """
    cfg = ModelConfig(
        name=model,
        precision=precision,
        device=device,
        truncate_dim=truncate_dim,
        normalize=normalize,
    )
    encoder = _shared_encoder(cfg.model_dump_json())
    texts = list(texts)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: encode at least one text at a time")
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    parts = [
        encoder.encode_texts(texts[i : i + batch_size], prefix=prompt)
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts)


def query(
    text: str,
    *,
    k: int = 5,
    filter: Mapping[str, Any] | None = None,
    query_prefix: str | None = None,
    config: ConfigArg = None,
    mode: str = "dense",
    alpha: float | None = None,
    **options: Any,
) -> list[Hit]:
    """Top-k hits for `text` from a sink, encoded with the model and the query prompt the index
    was built with (`query_prefix` overrides the prompt), among the chunks `filter` passes:
    `{"doc_id": "a.md", "metadata.pkg": ["numpy", "scipy"]}` (keys AND, a list is any of).

    `mode`: dense (default), sparse (BM25) or hybrid (both, fused by reciprocal rank; `alpha`
    weighs them, 1 = dense only, 0 = sparse only); sparse and hybrid need an index built with
    sparse vectors (`sparse="bm25"`) on a sink that keeps them (Qdrant Edge, Qdrant)."""
    _check_k(k)
    check_mode(mode)
    if mode != "dense":  # before the index opens: a sink without sparse vectors is refused first
        require_sparse(as_config(config, options).sink.uri, f"--mode {mode}")
    with open_index(config, query_prefix=query_prefix, **options) as index:
        return index.search(text, k, filter, mode=mode, alpha=alpha)


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1 (got {k}): the number of hits to return")


def _known_state(sink_uri: str, cfg: RunConfig) -> Path:
    """The state directory of an index a run has written; a ConfigError, creating nothing,
    when it holds no ledger (a mistyped --sink or --state)."""
    state = state_dir_for(sink_uri, cfg.state)
    if not (state / LEDGER_FILE).is_file():
        raise ConfigError(
            f"No embedpipe index at {sink_uri} (no ledger in {state}): check --sink, "
            "--collection and --state"
        )
    return state


def open_index(
    config: ConfigArg = None, *, query_prefix: str | None = None, **options: Any
) -> Index:
    """An index to search (and add to) with the model, prompts and settings it was built with,
    from a sink URI and a collection alone: `open_index(sink="faiss:./idx", collection="docs")`.
    Close it (or use `with`) to release its read snapshot; it never blocks a run."""
    cfg = as_config(config, options)
    return Index(
        cfg, lambda model: _shared_encoder(model.model_dump_json()), query_prefix=query_prefix
    )


def export(
    config: ConfigArg = None,
    *,
    to: str,
    to_collection: str | None = None,
    to_state: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
    layout: str | None = None,
    **options: Any,
) -> RunReport:
    """Copy the live generation of the configured sink and collection to the sink `to` (as
    `to_collection`, default the same name) without re-encoding: same point ids, payloads,
    vectors and manifest, and the destination's ledger (beside it, or in `to_state`) written so
    incremental runs go on against it. Resumable; a repeated export copies what changed.
    `layout` (a Qdrant or Postgres destination): "langchain" or "llama-index" adds the keys that
    framework's stock QdrantVectorStore reads to every payload, or the views its stock
    PGVectorStore reads; default the configured sink.qdrant.layout / sink.postgres.layout."""
    from embedpipe.runs.export import export as copy

    source = as_config(config, options)
    data = source.model_dump()
    data["sink"].update(uri=to, collection=to_collection or source.sink.collection)
    if layout is not None:
        kind = "postgres" if to.lower().startswith("postgres") else "qdrant"
        data["sink"][kind]["layout"] = layout
    try:
        dest = RunConfig.model_validate({**data, "state": to_state})
    except ValueError as exc:
        raise ConfigError(f"Invalid export destination: {exc}") from exc
    return copy(source, dest, progress=progress, force=force)


def delete_documents(doc_ids: Sequence[str], config: ConfigArg = None, **options: Any) -> int:
    """Delete whole documents (every chunk) from the configured index and its ledger, as a run
    does (sink first); returns how many chunks went. Ids the index lacks are fine."""
    with open_index(config, **options) as index:
        return index.delete_documents(doc_ids)


def as_config(config: ConfigArg, options: Mapping[str, Any] | None = None) -> RunConfig:
    """One config argument for every function: a RunConfig, a YAML path, or None (defaults, the
    environment); `options` (the CLI's flag names) override it."""
    overrides = flat_overrides(**(options or {}))
    if isinstance(config, RunConfig):
        if not overrides:
            return config
        return RunConfig.model_validate(_merged(config.model_dump(), overrides))
    return load_config(config, overrides)


def _merged(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if nested else value
    return out


def status(config: RunConfig | None = None) -> list[dict[str, Any]]:
    """What the ledger next to the configured sink holds, per collection."""
    cfg = config or RunConfig()
    path = state_dir_for(cfg.sink.uri, cfg.state) / "ledger.sqlite"
    if not path.exists():
        return []
    ledger = Ledger(path)
    try:
        rows = ledger.status()
    finally:
        ledger.close()
    for row in [*rows, *(g for r in rows for g in r.get("generations", []))]:
        row["model_name"] = row.get("model") or f"{DEFAULT_MODEL_NAME} (packaged)"
    for row in rows:
        _served(cfg, row)
    return rows


def _served(cfg: RunConfig, row: dict[str, Any]) -> None:
    """Add what the sink itself serves to a status row of the configured sink (`served`, a
    fingerprint or its prefix), and whether the ledger's live pointer names another generation
    (`served_differs`: a switch or run killed after the sink's swap; the next run, switch or
    `reconcile --repair` makes the ledger follow the sink)."""
    collection = str(row["target"]).rpartition("|")[2]
    if target_key(cfg.sink.uri, collection) != row["target"]:
        return  # another sink's index in a shared ledger
    row["served"], row["served_differs"] = None, False
    try:
        sink = open_sink(cfg.sink.model_copy(update={"collection": collection}))
        try:
            served = sink.live_fingerprint()
            row["sparse"] = sparse_kind(sink.manifest()) if served is not None else None
        finally:
            sink.abort()
    except (EmbedpipeError, OSError) as exc:
        row["served_error"] = str(exc)
        return
    row["served"] = served
    row["served_differs"] = served is not None and not str(row["fingerprint"]).startswith(served)


def reconcile(config: RunConfig, *, repair: bool = False) -> dict[str, Any]:
    """Compare the ledger with the sink, generation by generation (live and staged); with
    `repair`, make them agree without ever building, swapping in or dropping a generation.

    `missing`: the ledger says embedded, the sink lacks them (repair: forget them in the ledger
    and, when the config names a source, re-embed them with a run). `orphaned`: in the sink,
    unknown to the ledger (repair: delete them from the sink). `relink`: the sink serves another
    generation than the ledger's live pointer names (a crash mid-swap; repair: relink the ledger).
    """
    from embedpipe.durable import StateLock
    from embedpipe.runs.reconcile import reconcile as compare

    sink = open_sink(config.sink)
    key = target_key(sink.uri, config.sink.collection)
    state = _known_state(sink.uri, config)
    lock = StateLock(state) if repair else contextlib.nullcontext()
    with lock:
        ledger = Ledger(state / "ledger.sqlite")
        try:
            result = compare(sink, ledger, key, repair=repair)
        finally:
            sink.abort()
            ledger.close()
    missing = any(g["missing"] for g in result["generations"])
    if result["repaired"] and missing and config.source.uri:
        result["run"] = run(config).to_dict()
    return result


def evaluate(
    config: RunConfig | None = None,
    *,
    queries: str | Path,
    k: int = 10,
    generation: str = "live",
    mode: str | Sequence[str] = "dense",
    **options: Any,
) -> dict[str, Any]:
    """recall@k, MRR@k and nDCG@k of one generation (live, staged, previous or a fingerprint) on
    a JSONL queries file, each query encoded with that generation's own model; `per_query` holds
    each query's ranks of its relevant documents and `errors` the lines that were skipped.

    `mode`: dense, sparse or hybrid (or auto, as the quality gate: hybrid when the generation
    keeps sparse vectors); several modes score the same generation side by side: the result
    then holds the first's scores and `modes` {mode: its metrics}."""
    from embedpipe.promotion.gate import built_manifest, query_model, score_generation
    from embedpipe.promotion.quality import answerable, known_documents, load_queries
    from embedpipe.promotion.switch import generation as named

    cfg = config or load_config(None, flat_overrides(**options))
    _check_k(k)
    modes = [mode] if isinstance(mode, str) else list(mode)
    for m in modes:
        if m != "auto":
            check_mode(m)
    found, errors = load_queries(queries)
    sink = open_sink(cfg.sink)
    ledger = Ledger.in_dir(_known_state(sink.uri, cfg))
    try:
        key = target_key(sink.uri, cfg.sink.collection)
        gen = named(ledger, key, generation)
        known = known_documents(ledger, Target(key, gen["fingerprint"]))
        found, unknown = answerable(found, str(queries), known)
        errors += unknown
    finally:
        ledger.close()
    try:  # the generation's own model and prompts; a configured query prompt overrides its own
        built = built_manifest(sink, gen["fingerprint"])
        encoder: Any = None
        if modes != ["sparse"]:  # BM25 alone needs no model
            encoder = _shared_encoder(query_model(cfg.model, gen, built).model_dump_json())
        prefix = cfg.model.query_prefix or None
        scores = {
            m: score_generation(
                sink, gen["fingerprint"], encoder, k, found, query_prefix=prefix, mode=m
            )
            for m in modes
        }
    finally:
        sink.abort()
    described = {key: gen[key] for key in ("fingerprint", "state", "model", "chunking")}
    errs = [dataclasses.asdict(e) for e in errors]
    first = scores[modes[0]].to_dict(per_query=True)
    by_mode = {m: s.metrics() for m, s in scores.items()}
    return {"generation": described, **first, "mode": modes[0], "modes": by_mode, "errors": errs}


def promote(
    config: RunConfig | None = None,
    *,
    generation: str = "staged",
    to: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Make a staged (or kept previous) generation live regardless of the promotion rule and
    the quality gate (`to`: a fingerprint prefix, as `generation`); the one it replaces is kept
    as previous (see `rollback`). A generation already live is left as it is, so a promote
    killed after its swap is finished, not repeated, by running it again."""
    return _switch(config, to or generation, options)


def rollback(
    config: RunConfig | None = None, *, to: str | None = None, **options: Any
) -> dict[str, Any]:
    """Make the previous generation (or the one `to`, a fingerprint prefix, names) live again;
    the one it replaces becomes previous, and no run promotes it again on its own (`promote`
    or a run with `force` does). Running a rollback that was killed after its swap again
    finishes it instead of switching back."""
    return _switch(config, to or "previous", options)


def _switch(config: RunConfig | None, which: str, options: dict[str, Any]) -> dict[str, Any]:
    from embedpipe.durable import StateLock
    from embedpipe.promotion.switch import switch

    cfg = config or load_config(None, flat_overrides(**options))
    sink = open_sink(cfg.sink)
    state = _known_state(sink.uri, cfg)
    with StateLock(state):
        ledger = Ledger.in_dir(state)
        try:
            key = target_key(sink.uri, cfg.sink.collection)
            return switch(sink, ledger, key, which, cfg.promote.keep_previous)
        finally:
            ledger.close()
            sink.abort()
