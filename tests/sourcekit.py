"""What the source tests share: a Source from a uri and settings, and its items split by kind."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from embedpipe.config import SourceConfig
from embedpipe.sources import Source, open_source
from embedpipe.types import Document, RecordError


def source(uri: str | Path, **kwargs: Any) -> Source:
    """The Source `open_source` gives for `uri` with these source.* settings."""
    return open_source(SourceConfig(uri=str(uri), **kwargs))


def docs(items: Iterable[Document | RecordError]) -> list[Document]:
    """The Documents among a source's items."""
    return [d for d in items if isinstance(d, Document)]


def errors(items: Iterable[Document | RecordError]) -> list[RecordError]:
    """The RecordErrors among a source's items."""
    return [e for e in items if isinstance(e, RecordError)]
