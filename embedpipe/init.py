"""`embedpipe init`: a commented config for a chosen source and sink, ready for `embedpipe run`."""

from __future__ import annotations

import json
import os

from embedpipe.config import DEFAULT_SINK, BatchingConfig, ChunkingConfig, SourceConfig
from embedpipe.errors import ConfigError
from embedpipe.sources import JSONL_SUFFIXES, detect_kind

RECORD_KINDS = ("jsonl", "parquet", "hf")


def source_kind(uri: str) -> str:
    """dir | jsonl | parquet | hf for a source uri, guessed from its form when it does not exist yet."""
    for kind in ("dir", *RECORD_KINDS):
        if uri.startswith(kind + ":"):
            return kind
    if os.path.exists(os.path.expanduser(uri)):
        return detect_kind(uri)[0]
    name = uri.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "parquet" if name.endswith(".parquet") else "dir"


def render_config(source: str | None = None, sink: str | None = None) -> str:
    """YAML text for `source` and `sink` with every useful key, its default and what it does."""
    uri = source or "./corpus"
    sink_uri = sink or DEFAULT_SINK
    kind = source_kind(uri)
    scheme = sink_uri.partition(":")[0]
    if not sink_uri.partition(":")[2]:
        raise ConfigError(
            f"Sink {sink_uri!r} names no location: pass qdrant:PATH, qdrant+http://HOST:PORT or faiss:DIR"
        )
    parts = [
        _HEADER.format(source=uri, sink=sink_uri),
        _source_section(uri, kind),
        _MODEL,
        _chunking_section(),
        _sink_section(sink_uri, scheme),
        _RUN,
    ]
    return "\n".join(parts)


_HEADER = """\
# embedpipe configuration, written by `embedpipe init`.
#   source: {source}
#   sink:   {sink}
# Run it:      embedpipe run THIS_FILE --report run.json --metrics /var/lib/node_exporter/embedpipe.prom
# Check first: embedpipe run THIS_FILE --dry-run
# Precedence: CLI flags > EMBEDPIPE_SECTION__KEY environment variables > this file > defaults.
# Every key: configs/default.yaml.
"""


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _source_section(uri: str, kind: str) -> str:
    d = SourceConfig()
    lines = ["source:", f"  uri: {_q(uri)}"]
    if kind == "dir":
        lines += [
            "  # Files read (recursively; hidden files and directories are skipped). PDFs are read",
            "  # page by page; HTML is reduced to its readable text. The document id is the path.",
            f"  extensions: [{', '.join(d.extensions)}]",
            "  # Globs on the path relative to the root, like .gitignore: 'name' matches at any",
            "  # depth, 'a/b' is anchored at the root, '**' spans directories, 'dir/' matches",
            "  # directories only. include narrows, exclude cuts (whole directories are skipped).",
            "  include: []            # e.g. [docs/**/*.md, '*.pdf']",
            "  exclude: []            # e.g. [node_modules/, build/, '*.draft.md']",
        ]
    else:
        lines += [
            f"  text_field: {d.text_field}        # the field holding the text",
            "  # Or build the text from several fields (a missing or null field skips the record):",
            '  # text_template: "{title}\\n\\n{body}"',
            f"  id_field: {d.id_field}            # a stable id per record; missing -> hash of the text",
            "  metadata_fields: null   # fields copied into each vector's payload; null = all others",
        ]
    if kind == "hf":
        lines += [
            "  # hf:PATH is a save_to_disk directory; hf:OWNER/NAME[:CONFIG][#split] a dataset in the",
            "  # local Hugging Face cache ($HF_HOME), read offline: download it once beforehand.",
        ]
    return "\n".join(lines) + "\n"


_MODEL = """\
model:
  name: null              # sentence-transformers name or local folder; null = packaged all-MiniLM-L6-v2
  device: auto            # auto (CUDA if present) | cpu | cuda | cuda:N
  precision: auto         # auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
  prefix: ""              # prepended to every chunk, e.g. "passage: " for E5 models
  query_prefix: ""        # prepended to queries, e.g. "query: "
"""


def _chunking_section() -> str:
    c, b = ChunkingConfig(), BatchingConfig()
    return (
        "chunking:\n"
        f"  chunk_tokens: {c.chunk_tokens}       # most tokens per chunk, special tokens included\n"
        f"  overlap_tokens: {c.overlap_tokens}      # tokens shared by neighbouring chunks\n"
        "\nbatching:\n"
        f"  max_batch_tokens: {b.max_batch_tokens} # chunks x longest chunk per batch: raise on a big GPU\n"
    )


def _sink_section(uri: str, scheme: str) -> str:
    lines = [
        "sink:",
        f"  uri: {_q(uri)}",
        "  collection: docs        # a Qdrant alias / FAISS index name",
    ]
    if scheme == "faiss":
        lines += [
            '  index_factory: Flat     # exact; "IVF1024,Flat" or "HNSW32" for millions of chunks',
        ]
    elif scheme.startswith("qdrant+"):
        lines += [
            "  # The API key is read from the QDRANT_API_KEY environment variable, never from here.",
            "  write_batch: 256        # points per upsert request",
        ]
    elif scheme == "qdrant-edge":
        lines += [
            "  # Qdrant Edge: the Qdrant engine in-process (HNSW); README: moving it to a server."
        ]
    elif scheme == "qdrant":
        lines += ["  # Embedded Qdrant (local mode): one process at a time may open PATH."]
    return "\n".join(lines) + "\n"


_RUN = """\
promote:
  min_fraction: 0.9       # a new model/chunking goes live only with this share of the live documents
mode: incremental         # incremental | full (full also deletes documents the source no longer has)
max_delete_fraction: 0.5  # refuse a run that would delete more than this share of the index
strict: false             # exit 1 when any record failed
report: null              # write the JSON run report here (render it: embedpipe report FILE)
metrics: null             # write a Prometheus textfile here (node_exporter textfile collector)
state: null               # ledger directory; null = next to the sink
state_mode: "0700"        # mode of the state dir; the ledger and new sink files get it minus x
"""
