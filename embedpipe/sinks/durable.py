"""Files that survive a crash, and locks that name their holder: what every local sink writes with.

A new file is written and fsynced before it gets its public name; a rename is durable once its
folder is fsynced. A lock is an exclusive, non-blocking flock on a file that records the holder's
pid and host, so the error a second process gets says whom it waits for.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

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


def take_lock(path: Path, busy: Callable[[str], Exception], mode: int = 0o666) -> int:
    """Hold an exclusive flock on `path` (created with `mode`) until the returned fd is closed.

    The file then names this process as the holder. When another process holds the lock, raises
    `busy(holder)`, the holder as `lock_holder` words it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise busy(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)
    return fd
