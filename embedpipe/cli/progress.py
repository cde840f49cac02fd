"""Progress on the work, on the operator's stderr: a live bar when it is a terminal, plain lines
(one every few seconds at most) when it is not (cron logs), nothing when asked to be quiet.

The bar advances on tokens embedded (written and acknowledged by the sink), or on chunks where
tokens are not counted (the Ray engine, a dry run). Its total is the work the planner admitted,
extrapolated from how much of the source it has read (files from the walk, Parquet rows, JSON
Lines lines) until it has read all of it, when the total becomes exact: the bar reaches its
total only when the last batch is written. The phase (loading model, embedding, writing,
deleting, building index, swapping) stands first, documents read/skipped/failed beside the bar.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from embedpipe.types import RunReport

Mode = Literal["bar", "lines", "off"]
BAR_REFRESH = 0.25  # seconds between repaints of the bar (elapsed time and ETA keep moving)
BATCH_REPAINT = 0.1  # a batch repaints the bar when the last repaint is at least this old
HEARTBEAT = 60.0  # plain lines: one at least this often, even when nothing moved


@dataclass(frozen=True)
class Work:
    """Where a run stands, as the operator reads it."""

    phase: str
    unit: str  # "tokens" or "chunks"
    done: int
    total: int | None  # None while unknown (no record read yet, or the source has no count)
    docs_read: int
    docs_skipped: int
    docs_failed: int
    rate: float | None  # units per second since embedding began
    eta: float | None  # seconds left, at that rate

    @property
    def count(self) -> str:
        """'1,234/5,678 tokens', '1,234 tokens' while the total is unknown, '' before any."""
        if self.total is None and not self.done:
            return ""
        of = f"/{self.total:,}" if self.total is not None else ""
        return f"{self.done:,}{of} {self.unit}"

    @property
    def docs(self) -> str:
        return f"docs {self.docs_read:,} read, {self.docs_skipped:,} skipped, {self.docs_failed:,} failed"

    @property
    def speed(self) -> str:
        return f"{self.rate:,.0f} {self.unit}/s" if self.rate else ""

    def line(self, elapsed: float) -> str:
        """One plain line: phase, count and share, documents, speed, elapsed and ETA."""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        parts = [f"embedpipe: {self.phase} {self.count}{share}".rstrip(), self.docs]
        parts += [self.speed] if self.speed else []
        parts.append(f"elapsed {clock(elapsed)}")
        if self.eta is not None and self.done < (self.total or 0):
            parts.append(f"ETA {clock(self.eta)}")
        return " · ".join(parts)


def estimate(r: RunReport, now: float | None = None) -> Work:
    """Where run `r` stands: done and total in tokens (chunks where tokens are not counted)."""
    now = time.time() if now is None else now
    by_tokens = bool(r.tokens_planned) and not r.dry_run
    done = r.tokens_embedded if by_tokens else r.chunks_embedded
    planned = r.tokens_planned if by_tokens else r.chunks_planned
    total = planned_total(r, planned)
    if total is not None:
        total = max(total, done)
    began = entered(r, "embedding")
    spent = now - r.started_at - began if began is not None else 0.0
    rate = done / spent if done and spent > 0 else None
    eta = (total - done) / rate if rate and total is not None else None
    unit = "tokens" if by_tokens else "chunks"
    return Work(r.phase, unit, done, total, r.docs_read, r.docs_skipped, r.docs_failed, rate, eta)


def planned_total(r: RunReport, planned: int) -> int | None:
    """The whole run's work: exact once the planner has read the whole source; before, what it
    admitted scaled by the share of the source's records it has read (and always more than it
    admitted, so the bar cannot be full while reading goes on)."""
    if r.planning_done:
        return planned
    read = r.docs_read + r.docs_failed
    if not r.docs_total or not read:
        return None
    return max(math.ceil(planned * r.docs_total / read), planned + 1)


def entered(r: RunReport, phase: str) -> float | None:
    """Seconds after `r.started_at` when the run entered `phase`, None if it has not."""
    return next((float(at) for name, at in r.phases if name == phase), None)


def clock(seconds: float) -> str:
    """'H:MM:SS'."""
    minutes, sec = divmod(max(int(seconds), 0), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{sec:02d}"


class RunProgress:
    """The progress of one run on `console` (stderr): use as a context manager around the run
    and pass `update` as its progress callback. `every`: seconds between plain lines."""

    def __init__(self, console: Console, mode: Mode, every: float = 10.0) -> None:
        self.console, self.mode, self.every = console, mode, every
        self.report: RunReport | None = None
        self.phase = ""  # the phase last told
        self.painted = 0.0  # when a callback last repainted the bar
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="embedpipe-progress", daemon=True)
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.printed: tuple[object, ...] = ()
        self.printed_at = 0.0

    def update(self, report: RunReport) -> None:
        """The progress callback: keep the latest report; repaint the bar at a phase change (a
        short phase is shown too) and after a batch, at most every BATCH_REPAINT seconds (fast
        batches are not all drawn); the ticker repaints it between batches."""
        changed = report.phase != self.phase  # the report is one object, changed in place
        self.report, self.phase = report, report.phase
        now = time.monotonic()
        if self.mode == "bar" and (changed or now - self.painted >= BATCH_REPAINT):
            self.painted = now
            self._paint(refresh=True)

    def __enter__(self) -> RunProgress:
        if self.mode == "bar":
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[docs]}"),
                TextColumn("{task.fields[speed]}"),
                TextColumn("{task.fields[clock]}"),
                console=self.console,
                transient=True,
                auto_refresh=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(
                "starting", total=None, count="", docs="", speed="", clock=""
            )
        if self.mode != "off":
            self.ticker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopped.set()
        if self.ticker.is_alive():
            self.ticker.join()
        if self.bar is not None:
            self.bar.stop()

    def _tick(self) -> None:
        wait = BAR_REFRESH if self.mode == "bar" else self.every
        while not self.stopped.wait(wait):
            if self.mode == "bar":
                self._paint(refresh=True)
            else:
                self._print_line()

    def _paint(self, *, refresh: bool) -> None:
        if self.bar is None or self.task is None:
            return
        elapsed = time.monotonic() - self.started
        if self.report is None:
            self.bar.update(self.task, clock=clock(elapsed), refresh=refresh)
            return
        w = estimate(self.report)
        left = f" · ETA {clock(w.eta)}" if w.eta is not None and w.done < (w.total or 0) else ""
        self.bar.update(
            self.task,
            description=w.phase,
            completed=w.done,
            total=w.total,
            count=w.count,
            docs=w.docs,
            speed=w.speed,
            clock=f"{clock(elapsed)}{left}",
            refresh=refresh,
        )

    def _print_line(self) -> None:
        if self.report is None:
            return
        w = estimate(self.report)
        now = time.monotonic()
        key = (w.phase, w.done, w.total, w.docs_read, w.docs_skipped, w.docs_failed)
        if key == self.printed and now - self.printed_at < HEARTBEAT:
            return
        self.printed, self.printed_at = key, now
        line = escape(w.line(now - self.started))
        self.console.print(line, highlight=False, soft_wrap=True)
