"""Prometheus textfile (`--metrics FILE`) for node_exporter's textfile collector.

One gauge per figure of the last run, labelled by collection. Several jobs may share one file:
each run replaces only its own collection's samples. A failed run sets `embedpipe_run_success`
to 0 and keeps `embedpipe_last_success_timestamp_seconds` from the previous file, so an alert
on `time() - embedpipe_last_success_timestamp_seconds > 2 * 86400` fires when nights fail.
The file is replaced atomically (temporary file + rename), so the collector never reads half.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from embedpipe.durable import atomic_write, take_lock
from embedpipe.errors import LockedError
from embedpipe.types import RunReport

LAST_SUCCESS = "embedpipe_last_success_timestamp_seconds"

Getter = Callable[[RunReport], float]
# name -> (help, value from the report); all gauges: they describe the last run, not a total.
GAUGES: dict[str, tuple[str, Getter]] = {
    "embedpipe_chunks_embedded": ("Chunks embedded by the last run.", lambda r: r.chunks_embedded),
    "embedpipe_chunks_skipped": (
        "Chunks the last run skipped as already embedded.",
        lambda r: r.chunks_skipped,
    ),
    "embedpipe_chunks_deleted": ("Stale chunks the last run deleted.", lambda r: r.chunks_deleted),
    "embedpipe_chunks_lost": (
        "Chunks the ledger listed as embedded that the sink had lost, found by the last run.",
        lambda r: r.chunks_lost,
    ),
    "embedpipe_docs_read": ("Documents the last run read.", lambda r: r.docs_read),
    "embedpipe_errors": (
        "Records the last run skipped as unreadable or invalid.",
        lambda r: len(r.errors),
    ),
    "embedpipe_tokens_per_second": (
        "Tokens embedded per second over the last run.",
        lambda r: round(r.tokens_per_second, 1),
    ),
    "embedpipe_run_duration_seconds": ("Wall time of the last run.", lambda r: round(r.seconds, 3)),
}
STATUS: dict[str, str] = {
    "embedpipe_run_success": "1 if the last run finished, 0 if it failed or was interrupted.",
    "embedpipe_last_run_timestamp_seconds": "Unix time the last run ended.",
    LAST_SUCCESS: "Unix time the last successful run ended.",
}
_SAMPLE = re.compile(
    r'^(?P<name>embedpipe_[a-z_]+)\{collection="(?P<label>(?:[^"\\]|\\.)*)"\} (?P<value>\S+)$'
)


def write_textfile(
    path: str | Path, report: RunReport | None, *, collection: str, now: float | None = None
) -> None:
    """Write the metrics of a run (`report` None: it failed before it began) into `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        samples = read_samples(target)
        fresh = run_samples(report, collection, samples, time.time() if now is None else now)
        others = {key: v for key, v in samples.items() if key[1] != collection}
        text = render(others | fresh)
        atomic_write(target, lambda f: f.write(text.encode()))  # *.prom.tmp: never collected


def run_samples(
    report: RunReport | None,
    collection: str,
    previous: dict[tuple[str, str], float],
    now: float,
) -> dict[tuple[str, str], float]:
    """This collection's samples for one run; the last success time carries over a failure.
    Without a report (the run failed before it began) only the status samples are written."""
    ok = report is not None and report.outcome == "done"
    out = {(name, collection): getter(report) for name, (_, getter) in GAUGES.items() if report}
    out[("embedpipe_run_success", collection)] = 1.0 if ok else 0.0
    out[("embedpipe_last_run_timestamp_seconds", collection)] = round(now, 3)
    if ok:
        out[(LAST_SUCCESS, collection)] = round(now, 3)
    elif (LAST_SUCCESS, collection) in previous:
        out[(LAST_SUCCESS, collection)] = previous[(LAST_SUCCESS, collection)]
    return out


def read_samples(path: Path) -> dict[tuple[str, str], float]:
    """The embedpipe samples of an existing textfile, {(metric, collection): value}."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    out: dict[tuple[str, str], float] = {}
    known = set(GAUGES) | set(STATUS)
    for line in lines:
        m = _SAMPLE.match(line)
        if m and m["name"] in known:
            with contextlib.suppress(ValueError):
                out[(m["name"], _unescape(m["label"]))] = float(m["value"])
    return out


def render(samples: dict[tuple[str, str], float]) -> str:
    """The text exposition format: HELP and TYPE, then one sample per collection, sorted."""
    helps = {name: text for name, (text, _) in GAUGES.items()} | STATUS
    lines: list[str] = []
    for name, text in helps.items():
        rows = sorted((label, v) for (n, label), v in samples.items() if n == name)
        if not rows:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{collection="{_escape(label)}"}} {_number(v)}' for label, v in rows]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(label: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], label)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise jobs sharing one file, so neither drops the other's collection."""
    fd = take_lock(target.with_name(f".{target.name}.lock"), LockedError, wait=True)
    try:
        yield
    finally:
        os.close(fd)  # closing drops the flock
