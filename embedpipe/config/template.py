"""`embedpipe init`: a commented config for a chosen source and sink, ready for `embedpipe run`.

Which keys it shows and the hints about a source or sink kind are chosen here; every key's comment
is its description in config/__init__.py (embedpipe.config.docs), never written twice.
"""

from __future__ import annotations

import os
import textwrap

from embedpipe.config import DEFAULT_SINK
from embedpipe.config.docs import WIDTH, describe, key_lines, section_lines
from embedpipe.errors import ConfigError
from embedpipe.sinks.registry import SINKS
from embedpipe.sources import SOURCES, detect_kind
from embedpipe.sources.jsonl import JSONL_SUFFIXES


def source_kind(uri: str) -> str:
    """The source kind (a key of `SOURCES`) of a uri, guessed from its form when it does not exist
    yet."""
    for kind in SOURCES:
        if uri.startswith(kind + ":"):
            return kind
    if os.path.exists(os.path.expanduser(uri)):
        return detect_kind(uri)[0]
    name = uri.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "parquet" if name.endswith(".parquet") else "dir"


def render_config(source: str | None = None, sink: str | None = None) -> str:
    """YAML text for `source` and `sink` with the useful keys, their defaults and descriptions."""
    uri = source or "./corpus"
    sink_uri = sink or DEFAULT_SINK
    kind = source_kind(uri)
    scheme = sink_uri.partition(":")[0]
    if not sink_uri.partition(":")[2]:
        raise ConfigError(f"Sink {sink_uri!r} names no location: use {describe('sink.uri')}")
    sections = [
        _source_section(uri, kind),
        _model_section(),
        _batching_section(),
        _sink_section(sink_uri, scheme),
        _run_section(),
    ]
    body = "\n\n".join("\n".join(lines) for lines in sections)
    return _HEADER.format(source=uri, sink=sink_uri) + "\n" + body + "\n"


_HEADER = """\
# embedpipe configuration, written by `embedpipe init`.
#   source: {source}
#   sink:   {sink}
# Run it:      embedpipe run THIS_FILE --report run.json --metrics /var/lib/node_exporter/embedpipe.prom
# Check first: embedpipe run THIS_FILE --dry-run
# Precedence: CLI flags > EMBEDPIPE_SECTION__KEY environment variables > this file > defaults.
# Every key: configs/default.yaml.
"""


def _hint(text: str, indent: int = 2) -> list[str]:
    """A comment about this source or sink (key descriptions come from config/__init__.py, not from here)."""
    lead = " " * indent + "# "
    return textwrap.wrap(text, WIDTH, initial_indent=lead, subsequent_indent=lead)


def _keys(*paths: str) -> list[str]:
    return [line for path in paths for line in key_lines(path)]


def _source_section(uri: str, kind: str) -> list[str]:
    lines = [*section_lines("source"), *key_lines("source.uri", uri)]
    if not SOURCES[kind].records:
        lines += [
            *_hint(
                "Files are read recursively; hidden files and directories are skipped. PDFs are "
                "read page by page; HTML is reduced to its readable text. The document id is the "
                "path."
            ),
            *key_lines("source.extensions"),
            *_hint(
                "Globs on the path relative to the root, like .gitignore: 'name' matches at any "
                "depth, 'a/b' is anchored at the root, '**' spans directories, 'dir/' matches "
                "directories only; include narrows, exclude cuts (whole directories are skipped). "
                "E.g. include: [docs/**/*.md, '*.pdf'], exclude: [node_modules/, build/]."
            ),
            *_keys("source.include", "source.exclude"),
        ]
    else:
        lines += _keys("source.text_field")
        lines += _hint("A record where a field text_template names is missing or null is skipped.")
        lines += _keys("source.text_template", "source.id_field", "source.metadata_fields")
    if SOURCES[kind].hint:
        lines += _hint(SOURCES[kind].hint)
    return lines


def _model_section() -> list[str]:
    names = ("name", "device", "precision", "prefix", "query_prefix")
    return section_lines("model") + _keys(*(f"model.{n}" for n in names))


def _batching_section() -> list[str]:
    chunking = section_lines("chunking") + _keys("chunking.chunk_tokens", "chunking.overlap_tokens")
    return [*chunking, "", *section_lines("batching"), *_keys("batching.max_batch_tokens")]


def _sink_section(uri: str, scheme: str) -> list[str]:
    lines = (
        section_lines("sink") + key_lines("sink.uri", uri) + key_lines("sink.collection", "docs")
    )
    kind = SINKS.get(scheme)
    if kind is not None:
        lines += _hint(kind.hint) if kind.hint else []
        for path, value in kind.keys:
            lines += key_lines(path) if value is None else key_lines(path, value)
    return lines


def _run_section() -> list[str]:
    top = ("mode", "max_delete_fraction", "strict", "report", "metrics", "state", "state_mode")
    return section_lines("promote") + _keys("promote.min_fraction", *top)
