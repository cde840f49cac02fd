"""Record fields (embedpipe/sources/records.py): text built from a text_template over JSONL and
Parquet fields, and named metadata fields carried into the sink's payload."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedpipe
from embedpipe.config import load_config
from embedpipe.errors import ConfigError, SourceError
from tests.sourcekit import docs, errors, source

# -- text_template ------------------------------------------------------------------------------

ROWS = [
    {"id": "a", "title": "Pumps", "body": "How pumps move water.", "lang": "en"},
    {"id": "b", "title": "Filters", "lang": "en"},
    {"id": "c", "title": None, "body": "No title here.", "lang": "de"},
]


def test_text_template_builds_jsonl_text_from_fields(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    items = list(source(path, text_template="{title}\n\n{body}"))
    [doc] = docs(items)
    assert doc.text == "Pumps\n\nHow pumps move water."
    assert doc.metadata["lang"] == "en"


def test_text_template_missing_or_null_field_is_a_record_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    reasons = {e.record: e.reason for e in errors(source(path, text_template="{title}\n\n{body}"))}
    assert "'body' is missing" in reasons["line 2"]
    assert "'title' is null" in reasons["line 3"]


def test_text_template_reads_only_its_parquet_columns(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": ["a"], "title": ["T"], "body": ["B"], "blob": [b"\x00"]}), path)
    [doc] = docs(source(path, text_template="{title}: {body}", text_field="absent"))
    assert doc.text == "T: B"


def test_text_template_naming_an_absent_parquet_column_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": ["a"], "title": ["T"]}), path)
    with pytest.raises(SourceError, match="'summary'"):
        source(path, text_template="{title} {summary}")


def test_text_template_without_named_fields_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="text_template"):
        load_config(None, {"source": {"text_template": "{}"}})


# -- metadata into the payload ------------------------------------------------------------------


def test_named_metadata_fields_reach_the_qdrant_payload(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    path = tmp_path / "rows.jsonl"
    valves = {
        "id": "d",
        "title": "Valves",
        "body": "Valves stop flow.",
        "lang": "fr",
        "secret": "x",
        "tags": ["hw", "plumbing"],
    }
    path.write_text("".join(json.dumps(r) + "\n" for r in [ROWS[0], valves]))
    sink = tmp_path / "qdrant"
    report = embedpipe.backfill(
        str(path),
        sink=f"qdrant:{sink}",
        collection="docs",
        text_template="{title}\n\n{body}",
        metadata_fields=["lang", "tags"],
        precision="fp32",
    )
    assert report.docs_read == 2
    client = QdrantClient(path=str(sink))
    try:
        name = client.get_aliases().aliases[0].collection_name
        points, _ = client.scroll(name, limit=10, with_payload=True)
    finally:
        client.close()
    by_doc = {p.payload["doc_id"]: p.payload for p in points if p.payload}
    assert by_doc["d"]["metadata"] == {  # the named fields, and where the record came from
        "lang": "fr",
        "tags": ["hw", "plumbing"],
        "source": str(path),
    }
    assert by_doc["a"]["metadata"] == {"lang": "en", "source": str(path)}
    assert by_doc["d"]["text"] == "Valves\n\nValves stop flow."
