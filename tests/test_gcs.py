"""Sources in GCS (`gs://`): pyarrow's GCS filesystem against gcp-storage-emulator's JSON API on
127.0.0.1. The emulator serves no range reads, so Parquet over GCS is not covered here; documents
and JSONL are, with the object skip that stands on size and modification time."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import embedpipe
from tests.s3kit import config, jsonl_bytes, ledger_chunks, texts

emulator = pytest.importorskip("gcp_storage_emulator.server")


@pytest.fixture
def gcs() -> Iterator[tuple[str, Any]]:
    """(endpoint URL, a pyarrow filesystem on it) for an in-memory emulator with a bucket `lake`."""
    import pyarrow.fs as pafs

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="lake")
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, pafs.GcsFileSystem(anonymous=True, endpoint_override=url[7:], scheme="http")
    finally:
        server.stop()


def put(fs: Any, key: str, data: bytes | str) -> None:
    with fs.open_output_stream(f"lake/{key}", compression=None) as out:
        out.write(data.encode() if isinstance(data, str) else data)


def test_gcs_documents_and_jsonl_embed_like_local_and_unchanged_objects_are_skipped(
    gcs: tuple[str, Any], tmp_path: Path
) -> None:
    url, fs = gcs
    local = tmp_path / "local"
    local.mkdir()
    for doc_id, text in texts(4).items():
        put(fs, f"docs/{doc_id}.md", text)
        (local / f"{doc_id}.md").write_text(text)
    put(fs, "rows/part-0.jsonl.gz", jsonl_bytes(texts(4)))
    options = {"endpoint_url": url, "anonymous": True}
    remote = config(
        "gs://lake/docs",
        tmp_path,
        "gcs",
        source={"uri": "gs://lake/docs", "storage_options": options},
    )
    first = embedpipe.run(remote)
    here = config(str(local), tmp_path, "local")
    embedpipe.run(here)
    assert first.errors == [] and ledger_chunks(remote) == ledger_chunks(here)
    again = embedpipe.run(remote)
    assert again.chunks_embedded == 0 and any("4 of 4 objects unchanged" in n for n in again.notes)
    put(fs, "docs/doc01.md", texts(4, edit=" A new sentence.")["doc01"])
    edited = embedpipe.run(remote)
    assert edited.docs_read == 1 and edited.chunks_embedded >= 1
    rows = config(
        "gs://lake/rows",
        tmp_path,
        "rows",
        source={"uri": "gs://lake/rows", "storage_options": options},
    )
    report = embedpipe.run(rows)
    assert report.errors == [] and report.docs_read == 4


@pytest.mark.parametrize("uri", ["gs://lake/plain/recs.jsonl", "gs://lake/plain/"])
def test_gcs_plain_jsonl_object_or_prefix_embeds_every_record(
    uri: str, gcs: tuple[str, Any], tmp_path: Path
) -> None:
    url, fs = gcs
    put(fs, "plain/recs.jsonl", jsonl_bytes(texts(4), gzipped=False))
    (tmp_path / "recs.jsonl").write_bytes(jsonl_bytes(texts(4), gzipped=False))
    options = {"endpoint_url": url, "anonymous": True}
    remote = config(uri, tmp_path, "gcs", source={"uri": uri, "storage_options": options})
    here = config(str(tmp_path / "recs.jsonl"), tmp_path, "local")
    report = embedpipe.run(remote)
    assert report.errors == [] and report.docs_read == 4
    embedpipe.run(here)
    assert ledger_chunks(remote) == ledger_chunks(here)
