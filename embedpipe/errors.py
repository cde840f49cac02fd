"""One exception tree. Every message says what to do next."""

from __future__ import annotations


class EmbedpipeError(Exception):
    """Base of every error embedpipe raises on purpose."""


class ConfigError(EmbedpipeError):
    """A configuration or usage problem; the CLI exits with code 2."""


class SourceError(EmbedpipeError):
    """A source cannot be opened at all (a single bad record is a RecordError instead)."""


class NoSourceError(ConfigError, SourceError):
    """The source names nothing there is to read (a missing path, a remote URL): a usage
    error, so the CLI exits 2 before any model is loaded."""


class SinkError(EmbedpipeError):
    """A sink refused an operation and retrying will not help."""


class ClosedIndexError(SinkError):
    """An index (or a store over it) was used after close()."""


class TransientSinkError(SinkError):
    """A sink failure worth retrying (timeout, connection reset)."""


class StaleReadError(SinkError):
    """A read view's generation went (a promotion dropped it) before the view's search ran: take
    a new view and encode the query for it again (`embedpipe.index.Index` does)."""


class ModelError(EmbedpipeError):
    """A model cannot be loaded or used."""


class StateError(EmbedpipeError):
    """The ledger or another state file (lock, run report) cannot be read or written."""


class LockedError(EmbedpipeError):
    """Another run holds the state directory."""


class DeleteGuardError(EmbedpipeError):
    """A delete wave larger than allowed: the source is probably empty or unmounted."""


class HeldError(EmbedpipeError):
    """A new generation was built but not promoted: the live index keeps serving."""


class Interrupted(EmbedpipeError):
    """The run was asked to stop; the batch in flight was committed."""


def os_reason(exc: OSError) -> str:
    """The OS's words for an OSError, with the file it names: 'No space left on device (/x)'."""
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason
