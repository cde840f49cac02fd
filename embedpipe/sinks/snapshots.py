"""Read snapshots: what a reader process opens of an engine that locks its folder, so that
queries and runs never block each other (Qdrant Edge, Qdrant local mode).

Qdrant Edge and qdrant-client's local mode let one process (one handle) open a shard or a
storage folder at a time, and Edge rewrites its segment files in place (checked: a hard-linked
copy of a shard changes under it while the writer goes on). So a reader never opens what a run
writes. When a run finishes (and at a promotion or a rollback), the writer copies the live
generation, closed and flushed, into an immutable snapshot folder and moves the read pointer to
it in one atomic rename:

    <sink dir>/.read/<collection>/CURRENT.json     {"snapshot": "snap-...", "fingerprint": ...}
    <sink dir>/.read/<collection>/snap-<time>-<hex>/ .lease, .ready, and the engine's files
    <sink dir>/.read/<collection>/reader-<pid>-<hex>/ .lease, a reader's private copy

A reader (`SnapshotReader`) opens a private copy of the snapshot the pointer names (the engines
write into what they open, even to read: Edge rewrites its config and locks its WAL), and before
a query, at most every `interval` seconds, looks whether the pointer moved (one stat); when it
did, it copies and opens the new snapshot, lets queries in flight finish on the old one, and
closes it. Copies are sparse (the engines preallocate files: a 4,000-chunk Edge shard is 136 MB
of file sizes and 18 MB of data).

Garbage: a reader holds a shared lock on a snapshot's `.lease` while it copies it, and an
exclusive one on its private copy's `.lease` while it lives. The writer, after publishing,
removes every snapshot but the current one and every private copy whose lease it can take
exclusively (no reader copying it; its reader has exited or closed it), removing `.ready`
first so that a reader that locks a lease just after knows the folder is going.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from embedpipe.durable import atomic_write, fsync_dir
from embedpipe.errors import SinkError
from embedpipe.faults import crash_point

log = logging.getLogger(__name__)

READ = ".read"
POINTER = "CURRENT.json"
LEASE = ".lease"
READY = ".ready"
SNAPSHOT_PREFIX = "snap-"
READER_PREFIX = "reader-"
REFRESH_INTERVAL = 1.0  # seconds between two looks at the read pointer
COPY_CHUNK = 1 << 24
# Held while a sink makes its SnapshotReader at the first query: two threads' first queries
# made one each before, and the one overwritten kept its private copy open until exit.
READER_MADE = threading.Lock()

T = TypeVar("T")


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy the file `src` to `dst` without filling its holes (the engines preallocate files)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
                    raise
                break
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            while start < end:
                data = fin.read(min(COPY_CHUNK, end - start))
                if not data:
                    break
                fout.write(data)
                start += len(data)
            offset = end
        fout.truncate(size)


def copy_tree(src: Path, dst: Path, skip: Callable[[Path], bool] = lambda p: False) -> None:
    """Copy a folder sparsely, leaving out what `skip` names (a lock file)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if skip(path):
            continue
        target = dst / path.name
        if path.is_dir():
            copy_tree(path, target, skip)
        else:
            copy_sparse(path, target)


def _try_lock(path: Path, kind: int) -> int | None:
    """An fd holding `kind` (LOCK_SH/LOCK_EX) on `path`, or None when it is held otherwise or
    gone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Snapshots:
    """The read snapshots of one collection in one sink folder, and its read pointer."""

    def __init__(self, directory: Path, collection: str) -> None:
        self.root = directory / READ / collection

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def current(self) -> dict[str, Any] | None:
        """What the read pointer says ({"snapshot", "fingerprint", "source", ...}), or None."""
        try:
            return dict(json.loads(self.pointer.read_text()))
        except FileNotFoundError:
            return None

    def is_current(self, source: str) -> bool:
        """Whether the pointer names a snapshot of `source` (what the live generation is now:
        its folder and when it was last built), so publishing again would copy the same."""
        current = self.current()
        return current is not None and current.get("source") == source

    def publish(self, fill: Callable[[Path], None], **fields: Any) -> Path:
        """Copy what readers should see into a new snapshot (`fill(folder)`), move the read
        pointer to it in one rename, and remove what no reader holds any more."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"{SNAPSHOT_PREFIX}{stamp}-{secrets.token_hex(4)}"
        tmp = self.root / f".{name}.tmp"
        fill(tmp)
        (tmp / LEASE).touch()
        (tmp / READY).touch()
        fsync_dir(tmp)
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)
        crash_point("snapshot")
        pointer = {"snapshot": name, "published": datetime.now(timezone.utc).isoformat(), **fields}
        text = json.dumps(pointer, indent=2) + "\n"
        atomic_write(self.pointer, lambda f: f.write(text.encode()))
        self.collect()
        return self.root / name

    def collect(self) -> None:
        """Remove the snapshots the pointer no longer names and the private copies of readers that
        are gone, unless a reader holds them; half-made snapshots of a crashed publisher too (the
        caller publishes under the sink's lock: no other publisher is at work)."""
        if not self.root.is_dir():
            return
        current = (self.current() or {}).get("snapshot")
        for path in self.root.iterdir():
            if path.name.endswith(".tmp") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and path.name != current:
                self._remove_unheld(path)

    def _remove_unheld(self, folder: Path) -> None:
        fd = _try_lock(folder / LEASE, fcntl.LOCK_EX)
        if fd is None and (folder / LEASE).exists():
            return  # a reader copies it or lives on it
        try:
            (folder / READY).unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if fd is not None:
                os.close(fd)

    def private_copy(self, snapshot: str) -> tuple[Path, int]:
        """A private copy of `snapshot` for this process, with the fd holding its lease (close
        it, then remove the folder, when done). SinkError when the snapshot is gone."""
        source = self.root / snapshot
        held = _try_lock(source / LEASE, fcntl.LOCK_SH)
        if held is None:
            raise SinkError(f"the read snapshot {source} is gone")
        try:
            if not (source / READY).exists():
                raise SinkError(f"the read snapshot {source} is gone")
            folder = self.root / f"{READER_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            folder.mkdir()
            (folder / LEASE).touch()
            lease = _try_lock(folder / LEASE, fcntl.LOCK_EX)
            assert lease is not None  # nobody else knows this folder yet
            try:
                copy_tree(source, folder, skip=lambda p: p.name in (LEASE, READY))
            except BaseException:
                os.close(lease)
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return folder, lease
        finally:
            os.close(held)


@dataclass
class Served(Generic[T]):
    """One snapshot opened by a reader: the engine handle, what the pointer said about it, and
    the queries using it now."""

    engine: T
    pointer: dict[str, Any]
    folder: Path
    lease: int
    users: int = 0
    retired: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)


class SnapshotReader(Generic[T]):
    """Follows a collection's read pointer: the engine opened on a private copy of the newest
    snapshot, switched to a newer one without stopping queries in flight. Thread-safe.

    `open(folder)` opens the engine on a private copy; `close(engine)` closes it; `catch_up()`,
    called at each look, publishes the live generation when the pointer lags behind it and no run
    holds it (a run killed between its swap and its publish; an index built before snapshots
    existed), and returns whether a pointer exists.
    """

    def __init__(
        self,
        snapshots: Snapshots,
        open: Callable[[Path], T],
        close: Callable[[T], None],
        catch_up: Callable[[], bool],
        missing: Callable[[], Exception],
        interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.snapshots = snapshots
        self._open, self._close, self._catch_up = open, close, catch_up
        self._missing = missing
        self.interval = interval
        self._lock = threading.Lock()
        self._loaded = threading.Condition(self._lock)  # a thread finished loading a snapshot
        self._served: Served[T] | None = None
        self._checked = 0.0
        self._stat: tuple[int, int] | None = None
        self._loading = False

    @contextmanager
    def use(self) -> Iterator[Served[T]]:
        """The newest snapshot this reader has opened, held for one query."""
        served = self._refreshed()
        try:
            yield served
        finally:
            with self._lock:
                served.users -= 1
                done = served.retired and served.users == 0
            if done:
                self._dispose(served)

    def invalidate(self) -> None:
        """Look at the pointer before the next query (this process just published)."""
        with self._lock:
            self._checked, self._stat = 0.0, None

    def close(self) -> None:
        """Close the open snapshot (once its queries finish) and forget it."""
        with self._lock:
            served, self._served = self._served, None
            self._stat = None
            if served is not None:
                served.retired = True
                done = served.users == 0
        if served is not None and done:
            self._dispose(served)

    def _refreshed(self) -> Served[T]:
        with self._lock:
            while self._served is None and self._loading:
                self._loaded.wait()  # one thread copies and opens the first snapshot
            now = time.monotonic()
            due = self._served is None or (
                not self._loading and now - self._checked >= self.interval
            )
            if not due:
                assert self._served is not None
                self._served.users += 1
                return self._served
            self._checked = now
            self._loading = True
        try:
            fresh = self._follow()
        except Exception:
            with self._lock:
                self._loading = False
                self._loaded.notify_all()
                if self._served is None:
                    raise
                log.warning(
                    "could not open the newest read snapshot; serving the one open", exc_info=True
                )
                self._served.users += 1
                return self._served
        with self._lock:
            self._loading = False
            self._loaded.notify_all()
            old = None
            if fresh is not None:
                old, self._served = self._served, fresh
                if old is not None:
                    old.retired = True
            assert self._served is not None
            self._served.users += 1
            served = self._served
            done = old is not None and old.users == 0
        if done and old is not None:
            self._dispose(old)
        return served

    def _follow(self) -> Served[T] | None:
        """A newly opened snapshot when the pointer moved since the last look, else None."""
        for _ in range(5):  # the pointer may move again while a snapshot is copied
            if not self._catch_up():
                if self._served is not None:
                    return None
                raise self._missing()
            stat = self._pointer_stat()
            if stat is None:
                continue
            if stat == self._stat and self._served is not None:
                return None
            pointer = self.snapshots.current()
            if pointer is None:
                continue
            if self._served is not None and pointer["snapshot"] == self._served.pointer["snapshot"]:
                self._stat = stat
                return None
            try:
                folder, lease = self.snapshots.private_copy(pointer["snapshot"])
            except SinkError:
                continue  # collected between reading the pointer and locking it: look again
            try:
                engine = self._open(folder)
            except BaseException:
                self._remove(folder, lease)
                raise
            self._stat = stat
            manifest = _read_json(folder / "manifest.json")
            return Served(engine, pointer, folder, lease, manifest=manifest)
        raise SinkError(
            f"the read pointer {self.snapshots.pointer} kept moving or naming a missing snapshot"
        )

    def _pointer_stat(self) -> tuple[int, int] | None:
        try:
            st = self.snapshots.pointer.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _dispose(self, served: Served[T]) -> None:
        try:
            self._close(served.engine)
        except Exception:
            log.warning("closing a read snapshot failed", exc_info=True)
        self._remove(served.folder, served.lease)

    @staticmethod
    def _remove(folder: Path, lease: int) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lease)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
