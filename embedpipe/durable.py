"""Files that survive a crash, and locks that name their holder: what the sinks, the ledger's
state directory and the metrics textfile write and lock with.

A new file is written and fsynced before it gets its public name; a rename is durable once its
folder is fsynced. A lock is an exclusive flock on a file that records the holder's pid and host,
so the error a second process gets says whom it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

from embedpipe.errors import LockedError

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a new file and fsync it (not its folder: the caller renames or links it first)."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file under a temporary name, fsync it, then rename it into place."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    durable_write(tmp, write)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def lock_holder(fd: int) -> str:
    """The holder a lock file names: "pid 12 on host h" ("pid unknown" for an empty file)."""
    pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    return f"pid {pid or 'unknown'}" + (f" on host {host}" if host else "")


def take_lock(
    path: Path, busy: Callable[[str], Exception], mode: int = 0o666, *, wait: bool = False
) -> int:
    """Hold an exclusive flock on `path` (created with `mode`) until the returned fd is closed.

    The file then names this process as the holder. When another process holds the lock, waits
    for it (`wait`) or raises `busy(holder)`, the holder as `lock_holder` words it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise busy(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)
    return fd


def held_by(path: Path) -> str | None:
    """Who holds the lock on `path` ("pid 12 on host h"), or None when it is free."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder(fd)
    finally:
        os.close(fd)  # closing drops a shared lock this check took
    return None


# A folder a library holds open by a lock that names no one (Qdrant Edge's WAL, Qdrant local
# mode's .lock): the embedpipe process holding it writes itself here, so whoever finds it
# locked is told by whom.
HOLDER_FILE = ".opened-by"


def note_holder(folder: Path) -> None:
    """Record this process as the one holding `folder` open (advisory: never fails)."""
    with contextlib.suppress(OSError):
        (folder / HOLDER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}")


def forget_holder(folder: Path) -> None:
    """After this process let `folder` go: forget the note if it names this process."""
    try:
        if _holder(folder) == (os.getpid(), socket.gethostname()):
            (folder / HOLDER_FILE).unlink()
    except OSError:
        pass


def holder_of(folder: Path) -> str:
    """Who holds `folder` open, as its note says: "this process (pid 12)", "pid 12 on host h",
    or "another process" when no live embedpipe process left a note."""
    try:
        holder = _holder(folder)
    except OSError:
        holder = None
    if holder is None:
        return "another process"
    pid, host = holder
    if host == socket.gethostname():
        if pid == os.getpid():
            return f"this process (pid {pid})"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "another process"  # the note outlived its writer: someone else holds it
        except PermissionError:
            pass  # alive, another user's
    return f"pid {pid} on host {host}"


def _holder(folder: Path) -> tuple[int, str] | None:
    path = folder / HOLDER_FILE
    if not path.exists():
        return None
    pid, _, host = path.read_text(errors="replace").strip().partition(" ")
    return (int(pid), host) if pid.isdigit() else None


class StateLock:
    """An exclusive lock on a state directory: one run at a time; its file names the holder."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "lock"
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = take_lock(self.path, self._busy, mode=0o600)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _busy(self, holder: str) -> LockedError:
        return LockedError(
            f"Another embedpipe run ({holder}) holds the lock {self.path}: wait for it to "
            "finish, or pass a different --state"
        )

    @staticmethod
    def holder(state_dir: str | Path) -> str | None:
        """Who holds the lock on `state_dir`, or None when it is free."""
        return held_by(Path(state_dir) / "lock")
