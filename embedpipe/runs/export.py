"""`embedpipe export`: copy a generation's vectors and payloads to another sink without re-encoding.

Qdrant Edge to a Qdrant server or `qdrant:PATH` (where LangChain and LlamaIndex read it, with
their stock `QdrantVectorStore` too when the destination's `sink.qdrant.layout` is theirs), or to
Postgres (their stock `PGVectorStore` reads it through views when `sink.postgres.layout` is theirs),
anything to Parquet, FAISS to and from Qdrant: the destination gets the same point ids,
payloads and vectors, its manifest (model, prompts, settings) and its own ledger under the same
fingerprint, so an incremental run with the source's configuration against the destination
embeds nothing. The copy is a run into the destination (runs/encoderless.py): each batch is pending ->
written -> done, so an interrupted export resumes where it stopped, and a repeated one copies
only what changed and deletes what the source no longer has (everything, when the layout asked
for is not the one the destination was written in). The destination's new files and folders get
the state's permissions (`state_mode`, fsmode).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from embedpipe.config import RunConfig, SparseConfig
from embedpipe.errors import ConfigError, SinkError
from embedpipe.index import MANIFEST_KEYS, ledger_live
from embedpipe.runs.commit import Encoded
from embedpipe.runs.encoderless import Progress, direct_run
from embedpipe.sinks import capabilities_for, open_sink
from embedpipe.sinks.base import Sink
from embedpipe.sinks.sparse import settings_of
from embedpipe.state.ledger import Ledger, state_dir_for, target_key
from embedpipe.state.permissions import state_permissions
from embedpipe.types import RunReport

FULL_FINGERPRINT = 32  # hex digits of an xxh3-128 fingerprint; sinks may name a prefix


def export(
    source: RunConfig, dest: RunConfig, *, progress: Progress | None = None, force: bool = False
) -> RunReport:
    """Copy the live generation of `source`'s sink and collection into `dest`'s; the report
    counts the chunks copied (`chunks_embedded`), left as they were and deleted."""
    same_sink = source.sink.uri == dest.sink.uri or _same_local_sink(source, dest)
    if same_sink and source.sink.collection == dest.sink.collection:
        raise ConfigError("export needs another --to sink or --to-collection than its source")
    if not same_sink:
        _refuse_overlap(source, dest)
    layout = dest.sink.qdrant.layout
    if layout != "embedpipe" and _framework_kind(dest) is None:
        raise ConfigError(
            f"export --layout {layout} writes Qdrant payloads or Postgres views: export --to "
            f"qdrant:PATH (or a Qdrant server) or postgresql://..., not {dest.sink.uri}"
        )
    with state_permissions(state_dir_for(dest.sink.uri, dest.state), dest.state_mode_bits):
        return _copy(source, dest, progress=progress, force=force)


def _copy(
    source: RunConfig, dest: RunConfig, *, progress: Progress | None, force: bool
) -> RunReport:
    """The copy itself (see export)."""
    src = open_sink(source.sink)
    try:
        manifest = _source_manifest(src, source)
        fingerprint, dim = manifest["fingerprint"], int(manifest["dim"])
        dest, dropped = _with_sparse(dest, manifest)
        sink = open_sink(dest.sink)
        layout, relayout = _layout(dest, sink)
        report = RunReport(
            model=str(manifest.get("model") or ""),
            fingerprint=fingerprint,
            sink=sink.uri,
            source=f"{src.uri}|{source.sink.collection}",
            collection=dest.sink.collection,
            mode="export",
        )
        with direct_run(
            sink,
            dest,
            fingerprint,
            dim=dim,
            model=manifest.get("model"),
            report=report,
            force=force,
            progress=progress,
        ) as run:
            sink.describe({**manifest, **({"layout": layout} if layout else {})})
            run.phase("writing")
            # Another Qdrant layout: every payload is written again (the same point ids are
            # overwritten). A Postgres layout is views, moved when the run closes the sink.
            held = {} if relayout else run.ledger.done_hashes(run.target)
            seen: set[str] = set()
            for batch in src.points(fingerprint):
                seen.update(c.id for c in batch.chunks)
                fresh = [i for i, c in enumerate(batch.chunks) if held.get(c.id) != c.content_hash]
                report.chunks_total += len(batch.chunks)
                report.chunks_skipped += len(batch.chunks) - len(fresh)
                if fresh:
                    chunks = [batch.chunks[i] for i in fresh]
                    run.commit(run.ledger, Encoded(chunks, 0, batch.vectors[np.asarray(fresh)]))
                report.chunks_planned = report.chunks_total
                if progress is not None:
                    progress(report)
            report.planning_done = True
            stale = sorted(set(held) - seen)
            if stale:
                run.phase("deleting")
            run.delete(stale, max_fraction=1.0, force=True)
    finally:
        src.abort()
    if dropped:
        report.notes.append(
            f"the sparse (BM25) vectors were not copied: {sink.uri} keeps none (dense queries only)"
        )
    report.notes.append(
        f"exported generation {fingerprint[:12]} of {src.uri}|{source.sink.collection}: "
        f"{report.chunks_embedded} chunks copied, {report.chunks_skipped} already there, "
        f"{report.chunks_deleted} deleted"
    )
    return report


def _framework_kind(cfg: RunConfig) -> str | None:
    """Which kind of sink `cfg` writes framework layouts into: qdrant, postgres, or None."""
    scheme = cfg.sink.uri.partition(":")[0].lower()
    return next((kind for kind in ("qdrant", "postgres") if scheme.startswith(kind)), None)


def _layout(dest: RunConfig, sink: Sink) -> tuple[str | None, bool]:
    """The layout asked of the destination (None: keep its own) and whether every payload must be
    written again for it (a Qdrant collection in another layout)."""
    if _framework_kind(dest) == "postgres":
        return dest.sink.postgres.layout, False
    layout = dest.sink.qdrant.layout
    return layout, sink.manifest().get("layout", "embedpipe") != layout


def _with_sparse(dest: RunConfig, manifest: dict[str, Any]) -> tuple[RunConfig, bool]:
    """The destination config writing the sparse vectors the source generation keeps (a BM25
    vector is a function of the chunk text and these settings, so the copy computes the same
    ones), and whether they had to be left out (a sink that keeps none: its manifest then
    says so too)."""
    settings = manifest.get("settings") or {}
    sparse = settings_of(settings)
    caps = capabilities_for(dest.sink.uri)
    dropped = sparse is not None and (caps is None or not caps.sparse)
    if dropped:
        manifest["settings"] = {k: v for k, v in settings.items() if k != "sparse"}
    kept = SparseConfig() if dropped or sparse is None else sparse  # the copy's, not the config's
    sink = dest.sink.model_copy(update={"sparse": kept})
    return dest.model_copy(update={"sink": sink}), dropped


def _local_path(cfg: RunConfig) -> Path | None:
    """Where a local sink's files are, links resolved; None for a server."""
    caps = capabilities_for(cfg.sink.uri)
    location = cfg.sink.uri.partition(":")[2]
    if caps is None or not caps.local_path or not location:
        return None
    return Path(os.path.realpath(Path(location).expanduser()))


def _same_local_sink(source: RunConfig, dest: RunConfig) -> bool:
    """Whether two sink uris name one local sink (same kind, same folder however spelled)."""
    scheme = source.sink.uri.partition(":")[0].lower()
    path = _local_path(source)
    return (
        path is not None
        and scheme == dest.sink.uri.partition(":")[0].lower()
        and path == _local_path(dest)
    )


def _refuse_overlap(source: RunConfig, dest: RunConfig) -> None:
    """A ConfigError when the destination's folder (or its ledger's) is the source's folder,
    inside it or around it (symbolic links resolved), whatever the two schemes: the two would
    share generation folders and one's next run or drop would break the other."""
    src, dst = _local_path(source), _local_path(dest)
    src_state = _real(state_dir_for(source.sink.uri, source.state))
    dst_state = _real(state_dir_for(dest.sink.uri, dest.state))
    pairs = [
        (src, dst, "the source sink", "the destination"),
        (src, dst_state, "the source sink", "the destination's ledger"),
        (src_state, dst, "the source's ledger", "the destination"),
    ]
    for mine, theirs, what, other in pairs:
        if mine is None or theirs is None:
            continue
        if mine == theirs or mine in theirs.parents or theirs in mine.parents:
            raise ConfigError(
                f"export --to {dest.sink.uri}: {other} ({theirs}) overlaps {what} ({mine}); "
                "export into a folder outside the source sink and its state"
            )


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _source_manifest(src: Sink, cfg: RunConfig) -> dict[str, Any]:
    """What the source's live generation was built with, with its whole fingerprint and
    dimension (from the manifest, else the ledger next to the source)."""
    served = src.live_fingerprint()
    if served is None:
        raise SinkError(
            f"nothing to export: {src.uri} serves no collection '{cfg.sink.collection}' (run "
            "embedpipe into it first, or check --sink and --collection)"
        )
    stored = src.manifest()
    manifest = {key: stored[key] for key in MANIFEST_KEYS if stored.get(key) is not None}
    whole = str(manifest.get("fingerprint", ""))
    if not (whole.startswith(served) and len(whole) >= FULL_FINGERPRINT):
        known = _ledger_generation(src.uri, cfg, served)
        manifest.setdefault("dim", known.get("dim"))
        manifest.setdefault("model", known.get("model"))
        manifest["fingerprint"] = known["fingerprint"]
    if not manifest.get("dim"):
        live = ledger_live(src.uri, cfg) or {}
        manifest["dim"] = live.get("dim")
    if not manifest.get("dim"):
        raise SinkError(f"{src.uri} records no dimension for '{cfg.sink.collection}': re-run it")
    return manifest


def _ledger_generation(uri: str, cfg: RunConfig, served: str) -> dict[str, Any]:
    """The ledger's generation whose fingerprint starts with `served` (a Qdrant collection's
    name keeps only 12 characters of it)."""
    path = state_dir_for(uri, cfg.state) / "ledger.sqlite"
    if path.exists():
        ledger = Ledger(path)
        try:
            found = ledger.generation(target_key(uri, cfg.sink.collection), served)
        finally:
            ledger.close()
        if found is not None:
            return found
    if len(served) >= FULL_FINGERPRINT:
        return {"fingerprint": served}
    raise SinkError(
        f"the generation {served} of {uri}|{cfg.sink.collection} records no whole fingerprint "
        f"and no ledger at {path.parent} knows it: pass --state pointing at its ledger"
    )
