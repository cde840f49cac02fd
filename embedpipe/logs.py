"""Structured logging: `--log-format json` writes one JSON object per event on stderr.

Events are ordinary stdlib log records carrying an `event` name and a `fields` dict:

    event(log, "record_error", "skipped a record", source=..., record=..., reason=...)

The JSON formatter turns each into `{"ts", "level", "logger", "event", "message", **fields}`;
the text formatter prints the message only. Library users keep their own logging setup and can
attach `JsonFormatter` to any handler.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Literal

from embedpipe.types import RecordError, RunReport

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


def event(
    logger: logging.Logger, name: str, message: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one named event with structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"event": name, "fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, event, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(fmt: LogFormat = "text") -> None:
    """Route logging to stderr in `fmt`. JSON shows embedpipe's INFO events (run start/end, record
    errors, retries, deletes); text keeps the terminal quiet (warnings only: the summary says the rest).
    """
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):  # ours, and basicConfig's console handler: one stderr writer
        if isinstance(old, _StderrHandler) or _is_console(old):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("embedpipe").setLevel(logging.INFO if fmt == "json" else logging.WARNING)


def _is_console(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and handler.stream in (
        sys.stderr,
        sys.__stderr__,
        sys.stdout,
        sys.__stdout__,
    )


def json_enabled() -> bool:
    """Whether configure("json") is in effect (the CLI then prints no tables on stderr)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def run_started(logger: logging.Logger, report: RunReport) -> None:
    """The run_start event: what is embedded where, with which model."""
    event(
        logger,
        "run_start",
        f"run started: {report.source} -> {report.sink} / {report.collection}",
        collection=report.collection,
        source=report.source,
        sink=report.sink,
        model=report.model,
        fingerprint=report.fingerprint,
        mode=report.mode,
        dry_run=report.dry_run,
        device=report.device,
        precision=report.precision,
    )


def run_ended(logger: logging.Logger, report: RunReport) -> None:
    """The run_end event: the run report's figures (level error unless the run finished)."""
    ok = report.outcome in ("done", "dry-run")
    event(
        logger,
        "run_end",
        f"run {report.outcome} in {report.seconds:.1f}s: "
        f"{report.chunks_embedded} embedded, {report.chunks_skipped} skipped, "
        f"{report.chunks_deleted} deleted, {len(report.errors)} record errors",
        level=logging.INFO if ok else logging.ERROR,
        collection=report.collection,
        outcome=report.outcome,
        seconds=round(report.seconds, 3),
        docs_read=report.docs_read,
        docs_failed=report.docs_failed,
        chunks_total=report.chunks_total,
        chunks_embedded=report.chunks_embedded,
        chunks_skipped=report.chunks_skipped,
        chunks_deleted=report.chunks_deleted,
        chunks_lost=report.chunks_lost,
        tokens_embedded=report.tokens_embedded,
        tokens_per_second=round(report.tokens_per_second, 1),
        padding_efficiency=round(report.padding_efficiency, 4),
        errors=len(report.errors),
        notes=list(report.notes),
    )


def record_error(logger: logging.Logger, error: RecordError) -> None:
    """The record_error event: one skipped file, line or row, and why."""
    event(
        logger,
        "record_error",
        f"skipped {error.source} :: {error.record}: {error.reason}",
        source=error.source,
        record=error.record,
        reason=error.reason,
    )
