"""Generation folders behind a public symlink: how a directory sink makes a new index live at once.

Layout under a sink directory:

    <collection>                      symlink into .generations/ (the public, live name)
    .generations/<collection>__<fp16>/manifest.json, .lock, and the sink's own files

A run with a new fingerprint writes a new generation; `swap` moves the symlink in one rename, so
readers see the old index or the new one, never half of either. The FAISS, Qdrant Edge and
Parquet sinks share this, and the run lifecycle around it, through `GenerationSink`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from embedpipe.durable import atomic_write, fsync_dir, take_lock
from embedpipe.errors import SinkError
from embedpipe.faults import crash_point
from embedpipe.sinks.base import (
    Capabilities,
    RemoteWriter,
    no_remote_writer,
    not_open,
    not_rebuildable,
)
from embedpipe.sinks.registry import SINKS

GENERATIONS = ".generations"
LOCK_PATIENCE = 10.0  # seconds a run waits for a generation's lock (a reader's snapshot copy)


class Generations:
    """The generation folders of one collection in `directory`, and its public symlink."""

    def __init__(self, directory: Path, collection: str, kind: str) -> None:
        self.directory = directory
        self.collection = collection
        self.kind = kind  # named in error messages: "FAISS index", "Qdrant Edge shard", ...

    @property
    def public(self) -> Path:
        return self.directory / self.collection

    def folder(self, fingerprint: str) -> Path:
        """Where the generation for `fingerprint` lives (created on demand)."""
        root = self.directory / GENERATIONS
        root.mkdir(parents=True, exist_ok=True)
        return self.path(fingerprint)

    def path(self, fingerprint: str) -> Path:
        """The folder of the generation for `fingerprint`, which may not exist (nothing created)."""
        return self.directory / GENERATIONS / f"{self.collection}__{fingerprint[:16]}"

    def live(self) -> Path | None:
        """What the public name points to, or None; refuses a public name embedpipe did not make."""
        public = self.public
        if not public.is_symlink():
            if public.exists():
                raise SinkError(
                    f"{public} exists but is not an embedpipe {self.kind}: choose another "
                    "--collection or move it away"
                )
            return None
        return public.resolve()

    def live_gen(self) -> Path | None:
        """The generation folder the public name points into (a data folder's parent); refuses
        a public name whose target is not one of this collection's generation folders (a deploy
        symlink to a folder elsewhere), so nothing outside the sink is ever read as live or
        dropped as replaced."""
        live = self.live()
        if live is None:
            return None
        for gen in (live, live.parent):
            if self.owns(gen):
                return gen
        target = os.readlink(self.public)
        raise SinkError(
            f"{self.public} is a symlink to {target}, which is not one of the generation "
            f"folders embedpipe made for '{self.collection}' in {self.directory / GENERATIONS}: "
            "nothing was changed; remove the link (or choose another --collection) and re-run"
        )

    def owns(self, gen: Path) -> bool:
        """Whether `gen` is one of this collection's generation folders (resolved or not)."""
        root = (self.directory / GENERATIONS).resolve()
        name = gen.name
        return (
            gen.resolve().parent == root
            and name.startswith(f"{self.collection}__")
            and len(name) > len(self.collection) + 2
            and not gen.is_symlink()
        )

    def clear_dropped(self) -> None:
        """Delete what a killed drop left of this collection's generations (renamed aside)."""
        for left in (self.directory / GENERATIONS).glob(f".dropping-{self.collection}__*"):
            shutil.rmtree(left, ignore_errors=True)

    def remove(self, gen: Path, *, strict: bool = True) -> None:
        """Delete a generation folder this sink made (errors ignored unless `strict`); anything
        else is refused, never deleted."""
        if not self.owns(gen):
            raise SinkError(
                f"refusing to delete {gen}: it is not a generation folder embedpipe made for "
                f"'{self.collection}' in {self.directory / GENERATIONS}"
            )
        self.clear_dropped()
        if not gen.exists():
            return
        root = self.directory / GENERATIONS
        # Renamed first, in one step: a kill mid-delete leaves no half generation at its name.
        trash = root / f".dropping-{gen.name}"
        try:
            os.replace(gen, trash)
        except OSError:
            if strict:
                raise
            return
        fsync_dir(root)
        crash_point("drop")
        shutil.rmtree(trash, ignore_errors=not strict)

    def swap(self, target: Path) -> None:
        """Point the public name at `target` (inside this directory) in one rename."""
        tmp = self.directory / f".{self.collection}.swap"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, self.directory))
        os.replace(tmp, self.public)
        fsync_dir(self.directory)

    def missing(self) -> SinkError:
        """The error for a query before any run made this collection."""
        return SinkError(
            f"no {self.kind} '{self.collection}' in {self.directory}: run embedpipe first"
        )


def read_manifest(gen: Path) -> dict[str, Any]:
    """A generation's manifest.json ({} when it has none yet)."""
    path = gen / "manifest.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def write_manifest(gen: Path, **fields: Any) -> None:
    """Update a generation's manifest atomically, keeping fields not given and its creation time."""
    data = {**read_manifest(gen), **fields}
    data.setdefault("created", datetime.now(timezone.utc).isoformat())
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(gen / "manifest.json", lambda f: f.write(text.encode()))


def lock(gen: Path, patience: float = LOCK_PATIENCE) -> int:
    """Hold an exclusive lock on a generation so two runs never write it at once (until the
    returned fd is closed). Waits up to `patience` seconds: a reader publishing a read snapshot
    holds it for the time of a copy."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return take_lock(gen / ".lock", lambda holder: _written_by(gen, holder))
        except SinkError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _written_by(gen: Path, holder: str) -> SinkError:
    """Why `gen` cannot be written: the run `holder` ("pid 12 on host h") is writing it, or this
    process is, through another sink object (never called another process)."""
    if holder == f"pid {os.getpid()} on host {socket.gethostname()}":
        return SinkError(
            f"{gen} is being written by this process (pid {os.getpid()}) already, through "
            "another sink object: close that one first"
        )
    return SinkError(
        f"{gen} is being written by another embedpipe run ({holder}): wait for it to finish"
    )


def try_lock(gen: Path) -> int | None:
    """The fd holding a generation's lock, or None when a run holds it."""
    try:
        return lock(gen, patience=0)
    except SinkError:
        return None


def check_dim(manifest: dict[str, Any], dim: int, collection: str, gen: Path) -> None:
    """Refuse to write vectors of another size into an existing generation."""
    if manifest and manifest.get("dim") != dim:
        raise SinkError(
            f"collection '{collection}' has dimension {manifest.get('dim')}, the model gives "
            f"{dim}: choose another --collection or delete {gen}"
        )


G = TypeVar("G", bound="GenerationSink")


class GenerationSink:
    """What the FAISS, Qdrant Edge and Parquet sinks share: the run's generation, chosen and locked
    by `open` (through `_claim`), built by `_build` on close, made live by a swap, and the
    generation it replaced dropped (unless `keep_previous`).

    A subclass names its URI `scheme` (its registry entry), its `name` and its index `kind` (for
    messages), and implements open/write/delete/search/chunk_ids and `_build`.
    """

    scheme: str
    name: str
    kind: str

    def __init__(self, directory: str | Path, collection: str, *, keep_previous: bool) -> None:
        self.directory = Path(directory).expanduser()
        self.collection = collection
        self.keep_previous = keep_previous
        self.uri = f"{self.scheme}:{directory}"
        self._gens = Generations(self.directory, collection, self.kind)
        self._gen: Path | None = None  # generation being written, between open and close
        self._new = False  # it is not the live one: close() swaps to it
        self._lock: int | None = None  # the fd holding the generation's lock
        self._pin: Path | None = None  # a pinned view's generation (see pinned())

    @property
    def capabilities(self) -> Capabilities:
        """What the registry declares for this sink's scheme."""
        return SINKS[self.scheme].capabilities

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, promote: bool = True) -> None:
        """Build what readers see, then make a new generation live (dropping the one it replaces)
        when `promote`, else keep it staged for a later run to resume and promote. Writes in
        place always publish.

        On failure the run stays open (and locked), so the pipeline can retry close() or abort().
        """
        if self._gen is None:
            return
        gen = self._gen
        public = self._build(gen)
        write_manifest(gen, built=datetime.now(timezone.utc).isoformat())  # complete: promotable
        # In place, the public name moves only when readers' files moved (Parquet's data folder).
        old = None
        if promote if self._new else public != self._gens.live():
            old = self._swap(public)
        self._published(gen)
        self._drop_replaced(old)
        live = self._gens.live_gen()
        self._release()
        self._serve(live)

    def abort(self) -> None:
        """End the run without publishing. An unfinished generation keeps its acknowledged writes
        for the next run to resume (the ledger may already list them); the live one is untouched."""
        self._release()

    def remote_writer(self) -> RemoteWriter:
        """Refused unless a subclass takes concurrent writers."""
        raise no_remote_writer(self.uri)

    def rebuild(self) -> None:
        """Refused unless a subclass keeps vectors to re-train from."""
        raise not_rebuildable(self.uri)

    def live_fingerprint(self) -> str | None:
        """The fingerprint of the generation the public name serves, or None."""
        live = self._live_gen()
        return None if live is None else read_manifest(live).get("fingerprint")

    def promote(self, fingerprint: str) -> None:
        """Make the complete generation built under `fingerprint` live, in one swap; the one it
        replaces stays (for rollback) until `drop`, unless the sink does not keep_previous."""
        gen = self._complete(fingerprint)
        if gen.resolve() == self._gens.live_gen():
            return
        fd = lock(gen)  # no run is writing it
        try:
            old = self._swap(self._public_target(gen))
            if old is not None and old != gen.resolve() and not self.keep_previous:
                self._gens.remove(old, strict=False)
            self._serve(gen, locked=True)
        finally:
            os.close(fd)

    def drop(self, fingerprint: str) -> None:
        """Remove a generation that is not live (nothing to do when the sink lacks it)."""
        gen = self._gens.path(fingerprint)
        self._gens.clear_dropped()
        if not gen.exists():
            return
        if gen.resolve() == self._gens.live_gen():
            raise SinkError(
                f"generation {fingerprint[:12]} of '{self.collection}' is live: promote or roll "
                "back to another before dropping it"
            )
        fd = lock(gen)
        try:
            self._gens.remove(gen)
        finally:
            os.close(fd)

    def pinned(self: G, fingerprint: str) -> G:
        """A read-only view of the complete generation built under `fingerprint`: its search and
        chunk_ids read that generation as if it were live. Release it with abort()."""
        view = copy.copy(self)
        view._forget_reads()
        view._pin = self._complete(fingerprint)
        return view

    def describe(self, fields: Mapping[str, Any]) -> None:
        """Record what the generation being written was built with in its manifest.json."""
        if self._gen is None:
            raise not_open(self.name)
        write_manifest(self._gen, **fields)

    def manifest(self) -> dict[str, Any]:
        """The live generation's manifest.json ({} when none is live)."""
        live = self._live_gen()
        return {} if live is None else read_manifest(live)

    # -- what subclasses fill in -----------------------------------------------------------

    def _build(self, gen: Path) -> Path:
        """Make the written generation readable; returns what the public name should point to."""
        raise NotImplementedError

    def _published(self, gen: Path) -> None:
        """After the public name moved (or did not need to): drop what readers no longer use."""

    def _serve(self, live: Path | None, *, locked: bool = False) -> None:
        """After a run finished or a promotion: hand readers the live generation `live` (whose
        lock this sink holds when `locked`). Nothing to do where readers read the live files."""

    def _public_target(self, gen: Path) -> Path:
        """What the public name points to when `gen` is live (Parquet: its latest data folder)."""
        return gen

    def _forget_reads(self) -> None:
        """A view shares no run, lock or open reader with the sink it was made from."""
        self._gen, self._lock, self._new = None, None, False

    def _check_reuse(self, manifest: dict[str, Any], gen: Path) -> None:
        """Refuse to reuse a generation built otherwise; `_claim` has checked its dimension."""

    def _release(self) -> None:
        """End the run: release what it holds, then the lock."""
        self._unlock()

    # -- internals -------------------------------------------------------------------------

    def _live_gen(self) -> Path | None:
        """The live generation's folder (a view's pinned one), or None; refuses a public name
        embedpipe did not make."""
        return self._pin if self._pin is not None else self._gens.live_gen()

    def _live_public(self) -> Path | None:
        """What readers read: the public name's target (a view's: its pinned generation's)."""
        return self._public_target(self._pin) if self._pin is not None else self._gens.live()

    def _complete(self, fingerprint: str) -> Path:
        """The folder of the complete (closed at least once) generation built under `fingerprint`."""
        gen = self._gens.path(fingerprint)
        if not read_manifest(gen).get("built"):
            raise SinkError(
                f"no complete generation {fingerprint[:12]} of '{self.collection}' in "
                f"{self.directory}: a run must finish building it first"
            )
        return gen

    def _read_gen(self, fingerprint: str | None) -> Path | None:
        """The generation a read means: `fingerprint`'s (None when this sink has none), else the
        one being written, else the live one."""
        if fingerprint is not None:
            gen = self._gens.path(fingerprint)
            return gen if (gen / "manifest.json").exists() else None
        return self._gen or self._live_gen()

    def _claim(self, dim: int, fingerprint: str) -> tuple[Path, dict[str, Any]]:
        """Choose and lock the generation a run writes, with its manifest ({} when new).

        The live one when its fingerprint matches (an incremental run writes in place), else the
        fingerprint's own folder (a re-embed, or the resume of an unfinished one).
        """
        live = self._live_gen()
        if live is not None and read_manifest(live).get("fingerprint") == fingerprint:
            gen, self._new = live, False
        else:
            gen, self._new = self._gens.folder(fingerprint), True
        manifest = read_manifest(gen)
        check_dim(manifest, dim, self.collection, gen)
        self._check_reuse(manifest, gen)
        gen.mkdir(parents=True, exist_ok=True)
        self._lock = lock(gen)
        return gen, manifest

    def _swap(self, target: Path) -> Path | None:
        """Make `target` live; returns the generation that was live before (None if none)."""
        old = self._live_gen()
        self._gens.swap(target)
        crash_point("swap")
        return old

    def _drop_replaced(self, old: Path | None) -> None:
        """After a re-embed went live, remove the generation it replaced, unless keep_previous."""
        if self._new and old is not None and old != self._gen and not self.keep_previous:
            self._gens.remove(old, strict=False)

    def _unlock(self) -> None:
        """Drop the generation's lock and forget the run."""
        if self._lock is not None:
            os.close(self._lock)  # closing the fd drops the flock
        self._lock, self._gen, self._new = None, None, False
