"""One exception tree. Every message says what to do next."""

from __future__ import annotations


class EmbedpipeError(Exception):
    """Base of every error embedpipe raises on purpose."""


class ConfigError(EmbedpipeError):
    """A configuration or usage problem; the CLI exits with code 2."""


class SourceError(EmbedpipeError):
    """A source cannot be opened at all (a single bad record is a RecordError instead)."""


class SinkError(EmbedpipeError):
    """A sink refused an operation and retrying will not help."""


class TransientSinkError(SinkError):
    """A sink failure worth retrying (timeout, connection reset)."""


class ModelError(EmbedpipeError):
    """A model cannot be loaded or used."""
