"""Locks that name their holder: one run per state directory (`StateLock`).
The lock file holds "PID HOST" while held, for the messages."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from embedpipe.errors import LockedError


class StateLock:
    """An exclusive lock on a state directory; its file names the holder (pid and host)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "lock"
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise LockedError(
                f"Another embedpipe run ({holder}) holds the lock {self.path}: wait for it to "
                "finish, or pass a different --state"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def holder(state_dir: str | Path) -> str | None:
        """Who holds the lock on `state_dir` ("pid 12 on host h"), or None when it is free."""
        path = Path(state_dir) / "lock"
        if not path.exists():
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_text(fd)
        finally:
            os.close(fd)  # closing drops a shared lock this check took
        return None


def _holder_text(fd: int) -> str:
    """The holder a lock file names: "pid 12 on host h" ("pid unknown" for an empty file)."""
    pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    return f"pid {pid or 'unknown'}" + (f" on host {host}" if host else "")
