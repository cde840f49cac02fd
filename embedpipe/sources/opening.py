"""Opening a source: `open_source(cfg)` picks the kind from the uri (a `KIND:` prefix of
`registry.SOURCES`, or by looking at the path) and returns a `Source`: re-readable, with a cheap
count when there is one."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from embedpipe.config import SourceConfig
from embedpipe.errors import NoSourceError, SourceError
from embedpipe.sources.base import Source
from embedpipe.sources.files import DEFAULT_EXTENSIONS, read_dir, suffixes
from embedpipe.sources.hf import read_hf
from embedpipe.sources.jsonl import JSONL_SUFFIXES, read_jsonl
from embedpipe.sources.parquet import read_parquet
from embedpipe.sources.registry import HINT, LOCAL_KINDS, SOURCES
from embedpipe.sources.remote import open_remote
from embedpipe.sources.storage import is_remote

__all__ = [
    "JSONL_SUFFIXES",
    "NoSourceError",
    "Source",
    "detect_kind",
    "open_source",
    "read_dir",
    "read_hf",
    "read_jsonl",
    "read_parquet",
]

# Files save_to_disk writes: such a directory is a dataset, not a folder of documents.
HF_MARKERS = ("dataset_dict.json", "state.json")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def open_source(cfg: SourceConfig) -> Source:
    """The Source `cfg.uri` names; SourceError (saying what to pass instead) when it cannot be
    opened, NoSourceError (a usage error) when there is nothing at `cfg.uri` to open.

    A bucket location (`s3://`, `gs://`, optionally after a `kind:` prefix) is listed once and
    its kind told from what it holds (embedpipe.sources.remote)."""
    kind, _, rest = cfg.uri.partition(":")
    if is_remote(rest) and kind in SOURCES:
        return open_remote(kind, rest, cfg)
    if is_remote(cfg.uri):
        return open_remote(None, cfg.uri, cfg)
    kind, path = detect_kind(cfg.uri, cfg.extensions)
    return SOURCES[kind].open(path, cfg)


def detect_kind(uri: str, extensions: Sequence[str] = DEFAULT_EXTENSIONS) -> tuple[str, str]:
    """(kind, path) for a uri: an explicit `kind:` prefix wins, else what the path looks like."""
    for kind in SOURCES:
        if uri.startswith(kind + ":"):
            path = os.path.expanduser(uri[len(kind) + 1 :])
            if kind in LOCAL_KINDS and not is_remote(path) and not os.path.exists(path):
                raise NoSourceError(f"No source at {path}: pass an existing {LOCAL_KINDS[kind]}")
            return kind, path
    if not uri:
        raise NoSourceError(f"No source given: {HINT}")
    if is_remote(uri):  # a prefix is told apart by listing it (open_source)
        name = uri.lower()
        kind = (
            "jsonl"
            if name.endswith(JSONL_SUFFIXES)
            else "parquet"
            if name.endswith(".parquet")
            else "dir"
        )
        return kind, uri
    path = os.path.expanduser(uri)
    if os.path.isdir(path):
        return _directory_kind(path, extensions), path
    if os.path.isfile(path):
        name = path.lower()
        if name.endswith(JSONL_SUFFIXES):
            return "jsonl", path
        if name.endswith(".parquet"):
            return "parquet", path
        raise SourceError(
            f"Cannot tell what kind of source {uri} is: {HINT}, or prefix it with jsonl:/parquet:"
        )
    if _URL.match(uri):  # not a missing file: a kind of location there is no reader for
        scheme = uri.partition("://")[0]
        raise NoSourceError(
            f"Cannot read {uri}: there is no reader for {scheme}:// sources; copy the data to a "
            f"local path and {HINT}"
        )
    raise NoSourceError(f"No source at {uri}: {HINT}")


def _directory_kind(path: str, extensions: Sequence[str]) -> str:
    """ "hf" for a saved dataset, "parquet" for Parquet files and no text files, else "dir"."""
    if any(os.path.isfile(os.path.join(path, m)) for m in HF_MARKERS):
        return "hf"
    text_suffixes = suffixes(extensions)
    has_parquet = False
    for _dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in (n.lower() for n in filenames if not n.startswith(".")):
            if name.endswith(text_suffixes):
                return "dir"
            has_parquet = has_parquet or name.endswith(".parquet")
    return "parquet" if has_parquet else "dir"
