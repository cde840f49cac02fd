"""The views a Postgres collection is served through (`sink.postgres.layout`, `export --layout`):
embedpipe's own, or with what LangChain's or LlamaIndex's stock `PGVectorStore` reads with its
default settings. Nothing is copied: each view computes the framework's columns from the live
generation's table, is moved with it in the swap's transaction, and embedpipe's own columns stay.

- embedpipe: `"<collection>"` is `SELECT * FROM` the live table.
- langchain (langchain-postgres' `PGVectorStore`, table_name = the collection): that view gains
  `langchain_id` (the chunk id), `content` (the text) and `langchain_metadata` (the source
  metadata plus doc_id, chunk_index, chunk_id, start and end, as the Qdrant layout's `metadata`;
  a filter `{"team": "ops"}` reads `langchain_metadata->>'team'`).
- llama-index (llama-index-vector-stores-postgres' `PGVectorStore`, table_name = the collection):
  a second view `"data_<collection, lower case>"`, the table that store reads: `id` (a bigint
  hash of the chunk id), `text`, `node_id` (the chunk id), `embedding`, and `metadata_` holding
  what `node_to_metadata_dict(node, remove_text=True)` stores for the chunk as a TextNode (the
  metadata keys flat, `_node_content`, `_node_type`, `document_id`/`doc_id`/`ref_doc_id`) plus
  the chunk's place (doc_id, chunk_index, chunk_id, start, end; embedpipe's keys win a clash).

The collection's view carries a comment naming its layout, which is where the layout lives; the
LlamaIndex view carries one naming its collection, so embedpipe never drops or replaces a
`data_*` relation it did not make.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from embedpipe.sinks.layouts import LAYOUTS, REF_DOC, Layout, text_node
from embedpipe.sinks.shards import ADDED

LLAMA_PREFIX = "data_"  # LlamaIndex's PGVectorStore reads the table "data_<table_name>"
LAYOUT_RE = re.compile(r"\(layout ([a-z-]+)\)$")


def llama_view(collection: str) -> str:
    """The relation LlamaIndex's PGVectorStore(table_name=collection) reads (it lower-cases)."""
    return LLAMA_PREFIX + collection.lower()


def collection_comment(collection: str, layout: Layout) -> str:
    """The comment on a collection's view: ours, and in which layout."""
    return f"embedpipe: the live generation of collection {collection} (layout {layout})"


def llama_comment(collection: str) -> str:
    """The comment on the LlamaIndex view of a collection."""
    return f"embedpipe: LlamaIndex PGVectorStore view of collection {collection}"


def served_layout(comment: str | None) -> Layout:
    """The layout a collection's view comment names (a view made before layouts: embedpipe)."""
    found = LAYOUT_RE.search(comment or "")
    named = found.group(1) if found else "embedpipe"
    return next((layout for layout in LAYOUTS if layout == named), "embedpipe")


def collection_view(view: sql.Composable, table: sql.Composable, layout: Layout) -> sql.Composed:
    """CREATE VIEW of the collection on the live `table`, with LangChain's columns in its layout."""
    extra: sql.Composable = sql.SQL("")
    if layout == "langchain":
        extra = sql.SQL(
            ", chunk_id AS langchain_id, text AS content, {} AS langchain_metadata"
        ).format(_metadata_with_place())
    return sql.SQL("CREATE VIEW {} AS SELECT *{} FROM {}").format(view, extra, table)


def llama_index_view(view: sql.Composable, table: sql.Composable) -> sql.Composed:
    """CREATE VIEW of the table LlamaIndex's PGVectorStore reads, on the live `table`."""
    ref = sql.SQL("coalesce(nullif(metadata ->> {}, ''), doc_id)").format(sql.Literal(REF_DOC))
    node = text_node(
        sql.SQL("chunk_id"), _metadata_with_place(), ref, "", _col("start"), _col("end")
    )
    fields = {
        "_node_content": sql.SQL("({})::text").format(_jsonb(node)),
        "_node_type": "TextNode",
        "document_id": ref,
        "doc_id": ref,
        REF_DOC: ref,
    }
    return sql.SQL(
        "CREATE VIEW {} AS SELECT hashtextextended(chunk_id, 0) AS id, text, metadata || {} || {} "
        "AS metadata_, chunk_id AS node_id, embedding FROM {}"
    ).format(view, _jsonb(fields), _place(), table)


def _col(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _place() -> sql.Composable:
    """The chunk's place as a jsonb object: doc_id, chunk_index, chunk_id, start, end."""
    return _jsonb({key: _col(key) for key in ADDED})


def _metadata_with_place() -> sql.Composed:
    """A framework's metadata: the source metadata, then the chunk's place (as the adapters')."""
    return sql.SQL("(metadata || {})").format(_place())


def _jsonb(value: Any) -> sql.Composable:
    """A jsonb expression building `value`: dicts and lists nest, SQL expressions stay as they
    are, other leaves are literals."""
    if isinstance(value, sql.Composable):
        return value
    if isinstance(value, dict):
        pairs = [sql.SQL("{}, {}").format(sql.Literal(k), _jsonb(v)) for k, v in value.items()]
        return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs))
    if isinstance(value, list):
        return sql.SQL("jsonb_build_array({})").format(sql.SQL(", ").join(map(_jsonb, value)))
    if value is None:
        return sql.SQL("NULL::jsonb")
    return sql.Literal(value)
