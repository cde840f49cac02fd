"""File permissions of what a run writes. The ledger holds chunk ids and hashes, local sinks hold
the chunk text: both are private to the owner unless `state_mode` says otherwise.

`state_permissions(state_dir, mode)` sets the process umask for the length of a run, so every
directory created gets `mode` and every file `mode` minus the execute bits, whichever code
creates them (Python, SQLite, FAISS, Qdrant Edge); it also brings an existing state directory
and the ledger's files to those modes. Files that existed before the run in a sink keep theirs.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedpipe.logs import event

log = logging.getLogger(__name__)

# What the ledger keeps in its state directory (SQLite adds the -wal/-shm/-journal files).
STATE_FILES = (
    "ledger.sqlite",
    "ledger.sqlite-wal",
    "ledger.sqlite-shm",
    "ledger.sqlite-journal",
    "lock",
)

_lock = threading.Lock()
_masks: list[int] = []  # the umask each run in progress asked for
_saved: int = 0  # the umask from before the first of them


def file_mode(dir_mode: int) -> int:
    """The mode of the files in a directory of `dir_mode`: the same, minus the execute bits."""
    return dir_mode & 0o666


@contextmanager
def state_permissions(state_dir: str | Path, dir_mode: int) -> Iterator[None]:
    """Within: new directories get `dir_mode`, new files `file_mode(dir_mode)`, and `state_dir`
    exists with its ledger files at those modes. The umask is restored afterwards, on error too."""
    with umask_for(dir_mode):
        prepare_state_dir(Path(state_dir), dir_mode)
        yield


@contextmanager
def umask_for(dir_mode: int) -> Iterator[None]:
    """Set the process umask to what `dir_mode` leaves out, then put the old one back.

    The umask belongs to the process, not the thread: runs that overlap in threads share the
    strictest mask any of them asked for, and the last to finish restores the original.
    """
    mask = ~dir_mode & 0o777
    _push(mask)
    try:
        yield
    finally:
        _pop(mask)


def _push(mask: int) -> None:
    global _saved
    with _lock:
        previous = os.umask(_strictest([*_masks, mask]))
        if not _masks:
            _saved = previous
        _masks.append(mask)


def _pop(mask: int) -> None:
    with _lock:
        _masks.remove(mask)
        os.umask(_strictest(_masks) if _masks else _saved)


def _strictest(masks: list[int]) -> int:
    out = 0
    for mask in masks:
        out |= mask
    return out


def prepare_state_dir(state_dir: Path, dir_mode: int) -> None:
    """Create `state_dir` with `dir_mode`, or set an existing one and the ledger's files in it to
    `dir_mode` / `file_mode(dir_mode)`. A shared directory (sticky bit, like /tmp) is left alone."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    if state_dir.stat().st_mode & stat.S_ISVTX:
        event(
            log,
            "permissions",
            f"{state_dir} is a shared directory (sticky bit): its mode is left as it is; give "
            "the ledger a directory of its own with --state DIR",
            level=logging.WARNING,
            path=str(state_dir),
        )
    else:
        _chmod(state_dir, dir_mode)
    for name in STATE_FILES:
        path = state_dir / name
        if path.is_file() and not path.is_symlink():
            _chmod(path, file_mode(dir_mode))


def _chmod(path: Path, mode: int) -> None:
    """Set `path` to `mode` when it differs; a warning (not a failure) when that is not allowed."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        event(
            log,
            "permissions",
            f"cannot set {path} to {mode:04o} ({exc.strerror}): run `chmod {mode:o} {path}` as "
            "its owner, or choose another state_mode",
            level=logging.WARNING,
            path=str(path),
            mode=f"{mode:04o}",
        )
