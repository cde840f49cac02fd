"""What is learnt about a source before the model loads: whether its first records fail alike
(a wrong text field shows in the first few records, so the run stops there instead of after the
model loaded), and how many records it holds (the total the progress bar extrapolates from).
"""

from __future__ import annotations

import gzip
import io
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator

from embedpipe.errors import SourceError
from embedpipe.sources.base import Source
from embedpipe.types import Document, RecordError, RunReport

BLOCK = 1 << 20  # bytes read at a time when counting lines


def check_first_records(source: Iterable[Document | RecordError], limit: int) -> None:
    """SourceError when each of the first `limit` records of a re-readable source failed for the
    same reason. A source that cannot be read twice (a generator) is not looked at."""
    if limit <= 0 or not isinstance(source, Source) or source.objects:
        return  # a bucket's objects are fetched only once the ledger says which changed
    items: Iterator[Document | RecordError] = iter(source)
    try:
        first = list(itertools.islice(items, limit))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # the reader's files are closed now, not when collected
    if len(first) < limit or not all(isinstance(item, RecordError) for item in first):
        return
    reasons = {item.reason for item in first if isinstance(item, RecordError)}
    if len(reasons) == 1:
        raise SourceError(repeated_failure(reasons.pop(), limit, source.uri))


def repeated_failure(reason: str, limit: int, where: str) -> str:
    """One line for a reason every one of the first `limit` records gave."""
    said = "no record has " + reason[3:] if reason.startswith("no ") else f"every record: {reason}"
    return (
        f"{said}: the first {limit} records of {where} all failed this way, so the run stopped "
        "before loading the model; fix the source settings (--text-field, --text-template, "
        "--id-field) or set repeated_error_limit: 0 to read on"
    )


class RecordCount:
    """The number of records of a source, for the progress total: known at once when the source
    knows it (files from the walk, Parquet rows from the footers, a dataset's length); counted on
    a background thread for JSON Lines (its lines, gunzipped when compressed), None until then."""

    def __init__(self, source: object) -> None:
        self.total: int | None = getattr(source, "total", None)
        self.done = threading.Event()
        files = getattr(source, "files", None)
        if self.total is None and getattr(source, "kind", "") == "jsonl" and files is not None:
            paths = list(files.paths)
            threading.Thread(
                target=self._count, args=(paths,), name="embedpipe-count", daemon=True
            ).start()
        else:
            self.done.set()

    def stop(self) -> None:
        """Stop counting (the run is over)."""
        self.done.set()

    def telling(self, progress: Callable[[RunReport], None]) -> Callable[[RunReport], None]:
        """`progress`, with the report's `docs_total` filled in once the count is known."""

        def tell(report: RunReport) -> None:
            if report.docs_total is None:
                report.docs_total = self.total
            progress(report)

        return tell

    def loading(self, sink: str, collection: str) -> RunReport:
        """What the progress callback is told while the model loads (the run has no report yet)."""
        report = RunReport(sink=sink, collection=collection, docs_total=self.total)
        report.enter("loading model")
        return report

    def _count(self, paths: list[str]) -> None:
        total = 0
        for path in paths:
            try:
                with _open(path) as stream:
                    total += _lines(stream, self.done)
            except (OSError, EOFError, gzip.BadGzipFile):
                return  # the run names the file; the bar does without a total
        if not self.done.is_set():
            self.total = total
            self.done.set()


def _open(path: str) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _lines(stream: io.BufferedIOBase, stop: threading.Event) -> int:
    """Lines in a binary stream (a last line without a newline counts), until `stop` is set."""
    count, last = 0, b"\n"
    while not stop.is_set() and (block := stream.read(BLOCK)):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")
