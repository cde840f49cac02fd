"""The library's front door: backfill(), run(), encode(), query(), status()."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedpipe.config import ModelConfig, RunConfig, flat_overrides, load_config
from embedpipe.errors import ConfigError, EmbedpipeError
from embedpipe.fsmode import state_permissions
from embedpipe.ledger import Ledger, state_dir_for, target_key
from embedpipe.metrics import write_textfile
from embedpipe.models import DEFAULT_MODEL_NAME
from embedpipe.pipeline import Pipeline, Progress
from embedpipe.preflight import RecordCount, check_first_records
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Hit, Sink
from embedpipe.sources import open_source
from embedpipe.types import Document, RecordError, RunReport


def run(
    config: RunConfig,
    *,
    source: Iterable[Document | RecordError] | None = None,
    sink: Sink | None = None,
    progress: Progress | None = None,
    dry_run: bool = False,
    force: bool = False,
    stop: threading.Event | None = None,
    raise_on_failure: bool = True,
) -> RunReport:
    """Run a configured pipeline; the report (`config.report`) and the Prometheus textfile
    (`config.metrics`, not for dry runs) are written whatever the outcome.

    The source and the sink are opened before the model loads, so a wrong path or URI is a
    ConfigError at once. While the pipeline runs, new directories get `config.state_mode` and new
    files the same minus the execute bits (fsmode); the report and the textfile are written
    after, with the process's own umask, for whoever reads them.
    """
    began = time.monotonic()
    source = open_source(config.source) if source is None else source
    sink = open_sink(config.sink) if sink is None else sink
    check_first_records(source, config.repeated_error_limit)  # a wrong field: stop before the model
    count = RecordCount(source) if progress is not None else None
    if count is not None and progress is not None:
        progress = count.telling(progress)  # the report's docs_total, once counted
        progress(count.loading(sink.uri, config.sink.collection))
    encoder = _encoder_for(config.model.model_dump_json())
    pipe = Pipeline(
        config, source=source, sink=sink, encoder=encoder, progress=progress, force=force,
        began=began, load_encoder=lambda cfg: _encoder_for(cfg.model_dump_json()),
    )  # fmt: skip
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
    source: str | Iterable[Document | RecordError],
    sink: str | Sink | None = None,
    *,
    config: str | Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    **options: Any,
) -> RunReport:
    """Embed a corpus into a sink and return the run report.

    `source` is a URI (directory, .jsonl, .parquet, hf:PATH) or any iterable of Documents;
    `sink` a URI (qdrant:PATH, qdrant+http://HOST:PORT, faiss:DIR) or a Sink object. Other
    options are the CLI's flag names: model=, precision=, max_batch_tokens=, collection=, ...
    `force` allows a delete wave above `max_delete_fraction`; `dry_run` only counts.
    """
    uri = source if isinstance(source, str) else None
    sink_uri = sink if isinstance(sink, str) else None
    cfg = load_config(config, flat_overrides(source=uri, sink=sink_uri, **options))
    return run(
        cfg,
        source=None if isinstance(source, str) else source,
        sink=None if sink is None or isinstance(sink, str) else sink,
        dry_run=dry_run,
        force=force,
    )


@functools.lru_cache(maxsize=4)
def _encoder_for(model_config: str) -> Any:
    """The one model cache: a loaded encoder per model settings (ModelConfig as JSON) for the
    life of the process, shared by `run`, `encode` and `query`, so a program (or a test suite)
    loads and calibrates each model once."""
    from embedpipe.encoder import Encoder

    return Encoder(ModelConfig.model_validate_json(model_config))


def _encoder(model: str | None, precision: str, device: str, truncate_dim: int | None) -> Any:
    """The cached encoder for the settings `encode` and `query` take; the others default."""
    cfg = ModelConfig(name=model, precision=precision, device=device, truncate_dim=truncate_dim)
    return _encoder_for(cfg.model_dump_json())


def encode(
    texts: Sequence[str],
    *,
    model: str | None = None,
    precision: str = "fp32",
    device: str = "auto",
    truncate_dim: int | None = None,
) -> np.ndarray:
    """L2-normalised float32 vectors (n, dim) for texts; the model is loaded once and cached.

    `truncate_dim` keeps the first N dims, re-normalised (for Matryoshka-trained models).
    """
    return _encoder(model, precision, device, truncate_dim).encode_texts(list(texts))


def query(text: str, *, k: int = 5, config: RunConfig | None = None, **options: Any) -> list[Hit]:
    """Top-k hits for `text` from a sink, encoded with the model the index was built with."""
    cfg = config or load_config(None, flat_overrides(**options))
    live = _live(cfg)
    if cfg.model.name is None and live and live.get("model"):
        cfg.model.name = live["model"]
    # The index's own width: a Matryoshka index is queried truncated the same way.
    dim = int(live["dim"]) if live and live.get("dim") else cfg.model.truncate_dim
    vector = _encoder(cfg.model.name, "fp32", cfg.model.device, dim).encode_texts(
        [text], prefix=cfg.model.query_prefix
    )
    sink = open_sink(cfg.sink)
    try:
        return sink.search(vector[0], k)
    finally:
        sink.abort()


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
    return rows


def _live(cfg: RunConfig) -> dict[str, Any] | None:
    path = state_dir_for(cfg.sink.uri, cfg.state) / "ledger.sqlite"
    if not path.exists():
        return None
    ledger = Ledger(path)
    try:
        return ledger.live(target_key(cfg.sink.uri, cfg.sink.collection))
    finally:
        ledger.close()


def reconcile(config: RunConfig, *, repair: bool = False) -> dict[str, Any]:
    """Compare the ledger with the sink, generation by generation (live and staged); with
    `repair`, make them agree without ever building, swapping in or dropping a generation.

    `missing`: the ledger says embedded, the sink lacks them (repair: forget them in the ledger
    and, when the config names a source, re-embed them with a run). `orphaned`: in the sink,
    unknown to the ledger (repair: delete them from the sink). `relink`: the sink serves another
    generation than the ledger's live pointer names (a crash mid-swap; repair: relink the ledger).
    """
    from embedpipe.durable import StateLock
    from embedpipe.reconcile import reconcile as compare

    sink = open_sink(config.sink)
    key = target_key(sink.uri, config.sink.collection)
    state = state_dir_for(sink.uri, config.state)
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
    config: RunConfig | None = None, *, queries: str | Path, k: int = 10, generation: str = "live",
    **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """recall@k, MRR@k and nDCG@k of one generation (live, staged, previous or a fingerprint) on
    a JSONL queries file, each query encoded with that generation's own model; `per_query` holds
    each query's ranks of its relevant documents and `errors` the lines that were skipped."""
    from embedpipe.evaluation import load_queries
    from embedpipe.gate import query_model, score_generation
    from embedpipe.switch import generation as named

    cfg = config or load_config(None, flat_overrides(**options))
    found, errors = load_queries(queries)
    sink = open_sink(cfg.sink)
    ledger = Ledger.in_dir(state_dir_for(sink.uri, cfg.state))
    try:
        gen = named(ledger, target_key(sink.uri, cfg.sink.collection), generation)
    finally:
        ledger.close()
    encoder = _encoder_for(query_model(cfg.model, gen).model_dump_json())
    try:
        scores = score_generation(sink, gen["fingerprint"], encoder, cfg, k, found)
    finally:
        sink.abort()
    described = {key: gen[key] for key in ("fingerprint", "state", "model", "chunking")}
    errs = [dataclasses.asdict(e) for e in errors]
    return {"generation": described, **scores.to_dict(per_query=True), "errors": errs}


def promote(
    config: RunConfig | None = None, *, generation: str = "staged", **options: Any
) -> dict[str, Any]:
    """Make a staged (or kept previous) generation live regardless of the promotion rule and
    the quality gate; the one it replaces is kept as previous (see `rollback`)."""
    return _switch(config, generation, options)


def rollback(config: RunConfig | None = None, **options: Any) -> dict[str, Any]:
    """Make the previous generation live again; the one it replaces becomes previous."""
    return _switch(config, "previous", options)


def _switch(config: RunConfig | None, which: str, options: dict[str, Any]) -> dict[str, Any]:
    from embedpipe.durable import StateLock
    from embedpipe.switch import switch

    cfg = config or load_config(None, flat_overrides(**options))
    sink = open_sink(cfg.sink)
    state = state_dir_for(sink.uri, cfg.state)
    with StateLock(state):
        ledger = Ledger.in_dir(state)
        try:
            key = target_key(sink.uri, cfg.sink.collection)
            return switch(sink, ledger, key, which, cfg.promote.keep_previous)
        finally:
            ledger.close()
            sink.abort()
