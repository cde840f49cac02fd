"""What an engine is given for one run, and the one method it implements."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from embedpipe.config import RunConfig
from embedpipe.encoding.lazy import AnyEncoder
from embedpipe.runs.commit import Committer, WriterThread
from embedpipe.runs.planning import Planner
from embedpipe.sinks.base import Sink
from embedpipe.types import Document, RecordError, RunReport

Progress = Callable[[RunReport], None]


@dataclass
class RunContext:
    """One run, as an engine sees it: the configured stages, the rules, and the way out."""

    config: RunConfig
    encoder: AnyEncoder
    sink: Sink
    report: RunReport
    planner: Planner  # accept/skip documents and chunks, in source order
    committer: Committer  # pending marks for writes made elsewhere
    writer: WriterThread  # where encoded batches go, to be written and committed in order
    dry_run: bool
    stop: threading.Event
    progress: Progress | None = None

    def tick(self) -> bool:
        """After a batch: report progress; False when the run was asked to stop."""
        if self.progress is not None:
            self.progress(self.report)
        return not self.stop.is_set()


class Engine(Protocol):
    """Reads the source, chunks, plans, encodes and hands batches to `run.writer`."""

    def stream(self, run: RunContext, source: Iterable[Document | RecordError]) -> None:
        """Process the whole source, or stop early (after the batch in flight) once
        `run.tick()` says so. Every decision goes through `run.planner`; in a dry run,
        count what would be embedded in `run.report.chunks_embedded` instead of encoding."""
        ...
