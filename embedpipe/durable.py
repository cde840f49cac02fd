"""Files that survive a crash, and locks that name their holder: what the sinks, the ledger's
state directory and the metrics textfile write and lock with.

A new file is written and fsynced before it gets its public name; a rename is durable once its
folder is fsynced. A lock is an exclusive flock on a file that records the holder's pid and host,
so the error a second process gets says whom it waits for.
"""

from __future__ import annotations

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
