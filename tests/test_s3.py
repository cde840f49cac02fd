"""Sources in S3: the same corpus read from a bucket (moto's real S3 API on 127.0.0.1, through
boto3 and pyarrow's S3 filesystem) embeds the same chunks as read locally; an unchanged nightly
run lists the prefix and fetches no object; failures are reported records; no credential shows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import embedpipe
from embedpipe.config import load_config
from embedpipe.errors import ConfigError, NoSourceError, SourceError
from embedpipe.sources import open_source
from embedpipe.state.ledger import Ledger, state_dir_for
from tests.clikit import embedpipe as cli
from tests.s3kit import (  # noqa: F401 (fixture `s3`)
    ACCESS_KEY,
    S3,
    SECRET_KEY,
    config,
    jsonl_bytes,
    ledger_chunks,
    parquet_bytes,
    put_corpus,
    s3_server,
    texts,
)
from tests.sourcekit import docs, errors, source

# One object of each kind a source reads, by its name in a bucket (and on disk).
OBJECTS = {
    "recs.jsonl": lambda: jsonl_bytes(texts(4), gzipped=False),
    "recs.jsonl.gz": lambda: jsonl_bytes(texts(4)),
    "recs.parquet": lambda: parquet_bytes(texts(4)),
    "notes.md": lambda: "\n\n".join(texts(4).values()),
}


# -------------------------------------------------------------- the same chunks as locally


def test_parquet_prefix_embeds_the_same_chunks_as_the_local_files(s3: S3, tmp_path: Path) -> None:
    local = put_corpus(s3, tmp_path)
    remote = embedpipe.run(config("s3://lake/parquet", tmp_path, "remote"))
    here = embedpipe.run(config(str(local / "parquet"), tmp_path, "local"))
    assert remote.errors == [] and remote.chunks_embedded == here.chunks_embedded > 8
    assert remote.source == "s3://lake/parquet" and remote.docs_total == 8
    assert ledger_chunks(config("s3://lake/parquet", tmp_path, "remote")) == ledger_chunks(
        config(str(local / "parquet"), tmp_path, "local")
    )


def test_jsonl_gz_objects_embed_the_same_chunks_as_the_local_file(s3: S3, tmp_path: Path) -> None:
    local = put_corpus(s3, tmp_path)
    remote = embedpipe.run(config("s3://lake/jsonl/part-0.jsonl.gz", tmp_path, "remote"))
    here = embedpipe.run(config(str(local / "jsonl" / "part-0.jsonl.gz"), tmp_path, "local"))
    assert remote.errors == [] and remote.chunks_embedded == here.chunks_embedded > 4
    assert ledger_chunks(config("s3://lake/jsonl/part-0.jsonl.gz", tmp_path, "remote")) == (
        ledger_chunks(config(str(local / "jsonl" / "part-0.jsonl.gz"), tmp_path, "local"))
    )
    prefix = source("s3://lake/jsonl/")
    assert prefix.kind == "jsonl" and [d.id for d in docs(prefix)] == list(texts())


RECORDS = [name for name in sorted(OBJECTS) if not name.endswith(".md")]


@pytest.mark.parametrize("uri", ["object", "prefix"])
@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_every_kind_of_object_embeds_like_the_local_file(
    name: str, uri: str, s3: S3, tmp_path: Path
) -> None:
    """Plain and gzipped JSONL, Parquet and documents, as one object's URI or under a prefix: the
    same chunks as the same file read locally (a document by its folder), no record skipped."""
    body = OBJECTS[name]()
    s3.put(f"in/{name}", body)
    (tmp_path / "local" / "in").mkdir(parents=True)
    (tmp_path / "local" / "in" / name).write_bytes(
        body if isinstance(body, bytes) else body.encode()
    )
    if name not in RECORDS and uri == "object":
        with pytest.raises(SourceError, match=r"Cannot tell what kind of object .*notes\.md"):
            embedpipe.run(config(f"s3://lake/in/{name}", tmp_path, "remote"))
        return
    remote = config(f"s3://lake/in/{name if uri == 'object' else ''}", tmp_path, "remote")
    here = config(
        str(tmp_path / "local" / "in" / (name if name in RECORDS else "")), tmp_path, "local"
    )
    ran = embedpipe.run(remote)
    assert ran.errors == [] and ran.chunks_embedded == embedpipe.run(here).chunks_embedded > 0
    assert ledger_chunks(remote) == ledger_chunks(here)


def test_cli_backfills_a_plain_jsonl_object(s3: S3, tmp_path: Path) -> None:
    s3.put("in/recs.jsonl", jsonl_bytes(texts(4), gzipped=False))
    sink = f"faiss:{tmp_path / 'sink'}"
    done = cli(
        "backfill",
        "s3://lake/in/recs.jsonl",
        "--sink",
        sink,
        "--collection",
        "docs",
        "--report",
        str(tmp_path / "report.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == [] and report["docs_read"] == 4 and report["chunks_embedded"] >= 4


def test_prefix_of_documents_has_ids_relative_to_the_prefix_like_a_directory(
    s3: S3, tmp_path: Path
) -> None:
    local = put_corpus(s3, tmp_path)
    remote = embedpipe.run(config("s3://lake/docs", tmp_path, "remote"))
    here = embedpipe.run(config(str(local / "docs"), tmp_path, "local"))
    assert remote.errors == [] and remote.docs_read == here.docs_read == 8
    chunks = ledger_chunks(config("s3://lake/docs", tmp_path, "remote"))
    assert chunks == ledger_chunks(config(str(local / "docs"), tmp_path, "local"))
    assert "more/doc05.html#0" in chunks and "doc00.md#0" in chunks


def test_include_and_exclude_globs_apply_to_keys(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    src = source("s3://lake/docs/", include=["*.html", "doc0[0-2].md"], exclude=["more/doc07*"])
    assert [o.rel for o in src.objects] == [
        "doc00.md",
        "doc01.md",
        "doc02.md",
        "more/doc04.html",
        "more/doc05.html",
        "more/doc06.html",
    ]


def test_kind_prefix_picks_the_reader_of_a_mixed_prefix(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    assert source("s3://lake/").kind == "dir"  # documents win, as in a local directory
    assert source("parquet:s3://lake/").kind == "parquet"
    assert len(source("parquet:s3://lake/").objects) == 2  # _SUCCESS and documents left out


# -------------------------------------------------------------- incremental without downloading


def test_unchanged_rerun_fetches_no_object_body_and_embeds_nothing(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    for kind in ("parquet", "jsonl", "docs"):
        cfg = config(f"s3://lake/{kind}", tmp_path, kind, mode="full")
        first = embedpipe.run(cfg)
        before = ledger_chunks(cfg)
        s3.requests.clear()
        again = embedpipe.run(cfg)
        assert s3.requests.bodies("lake") == [], kind  # a listing, no GET of any object
        assert again.chunks_embedded == again.chunks_deleted == 0 and again.errors == []
        assert again.chunks_skipped == again.chunks_total == first.chunks_total
        assert any("unchanged since last read" in note for note in again.notes)
        assert ledger_chunks(cfg) == before


def test_one_rewritten_object_reembeds_only_its_document(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    cfg = config("s3://lake/docs", tmp_path, "docs", mode="full")
    embedpipe.run(cfg)
    before = ledger_chunks(cfg)
    s3.put("docs/doc01.md", texts(edit=" Now with a new sentence in the middle.")["doc01"])
    s3.requests.clear()
    report = embedpipe.run(cfg)
    assert s3.requests.bodies("lake") == ["docs/doc01.md"]
    after = ledger_chunks(cfg)
    changed = {c for c in after if before.get(c) != after[c]}
    assert changed and all(c.startswith("doc01.md#") for c in changed)
    assert report.chunks_embedded == len(changed) and report.chunks_deleted == 0


def test_rewritten_parquet_object_is_read_again_and_only_changed_rows_embedded(
    s3: S3, tmp_path: Path
) -> None:
    put_corpus(s3, tmp_path)
    cfg = config("s3://lake/parquet", tmp_path, "parquet")
    embedpipe.run(cfg)
    rows = dict(list(texts().items())[4:])
    rows["doc05"] += " An added closing line."
    s3.put("parquet/part-1.parquet", parquet_bytes(rows))
    s3.requests.clear()
    report = embedpipe.run(cfg)
    assert set(s3.requests.bodies("lake")) == {"parquet/part-1.parquet"}
    assert report.chunks_embedded >= 1 and report.docs_read == 4  # the three others: same hash
    assert report.docs_total == 4  # what is left to read after the unchanged objects


def test_deleted_object_chunks_are_stale_and_guarded(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    cfg = config("s3://lake/parquet", tmp_path, "parquet", mode="full", max_delete_fraction=0.25)
    first = embedpipe.run(cfg)
    s3.delete("parquet/part-0.parquet")
    with pytest.raises(embedpipe.EmbedpipeError, match="delete"):  # half the index: refused
        embedpipe.run(cfg)
    report = embedpipe.run(cfg, force=True)
    assert 0 < report.chunks_deleted < first.chunks_total
    assert all(not c.startswith(("doc00#", "doc03#")) for c in ledger_chunks(cfg))


# -------------------------------------------------------------- failures


def test_access_denied_object_is_a_reported_record_and_the_rest_is_embedded(
    s3: S3, tmp_path: Path
) -> None:
    put_corpus(s3, tmp_path)
    s3.fault("docs/doc02.md", "deny")
    s3.fault("parquet/part-1.parquet", "deny")
    report = embedpipe.run(config("s3://lake/docs", tmp_path, "docs"))
    assert [(e.source, e.record, e.reason) for e in report.errors] == [
        ("s3://lake/docs", "doc02.md", "cannot read object: access denied")
    ]
    assert report.docs_read == 7
    rows = embedpipe.run(config("s3://lake/parquet", tmp_path, "parquet"))
    assert [(e.source, e.reason) for e in rows.errors] == [
        ("s3://lake/parquet/part-1.parquet", "cannot read the rest of this file: access denied")
    ]
    assert rows.docs_read == 4


def test_object_deleted_between_listing_and_reading_keeps_its_chunks(
    s3: S3, tmp_path: Path
) -> None:
    put_corpus(s3, tmp_path)
    cfg = config("s3://lake/jsonl", tmp_path, "jsonl", mode="full")
    embedpipe.run(cfg)
    before = ledger_chunks(cfg)
    s3.put("jsonl/part-1.jsonl.gz", jsonl_bytes({"doc09": "A document that is new tonight."}))
    listed = open_source(cfg.source)  # listed now; the object goes before it is read
    s3.delete("jsonl/part-1.jsonl.gz")
    report = embedpipe.run(cfg, source=listed)
    assert [(e.source, e.record) for e in report.errors] == [
        ("s3://lake/jsonl/part-1.jsonl.gz", "line 1")
    ]
    assert "no such object" in report.errors[0].reason
    assert report.chunks_deleted == 0 and ledger_chunks(cfg) == before  # nothing lost


REWRITTEN = {
    "docs": ("docs/doc01.md", lambda rows: rows["doc01"]),
    "jsonl": ("jsonl/part-0.jsonl.gz", lambda rows: jsonl_bytes(dict(list(rows.items())[:4]))),
    "parquet": ("parquet/part-0.parquet", lambda rows: parquet_bytes(dict(list(rows.items())[:4]))),
}


@pytest.mark.parametrize("kind", sorted(REWRITTEN))
def test_object_rewritten_between_listing_and_reading_and_back_is_read_again(
    kind: str, s3: S3, tmp_path: Path
) -> None:
    key, body = REWRITTEN[kind]
    put_corpus(s3, tmp_path)
    cfg = config(f"s3://lake/{kind}", tmp_path, kind, mode="full")
    listed = open_source(cfg.source)  # version A listed; B written before it is read
    s3.put(key, body(texts(edit=" Rewritten while the run was listing.")))
    embedpipe.run(cfg, source=listed)
    put_corpus(s3, tmp_path / "again")  # A again: the listing shows A's ETag once more
    report = embedpipe.run(cfg)
    assert report.chunks_embedded > 0  # B was read, not A: A is read again, not skipped
    fresh = config(f"s3://lake/{kind}", tmp_path, f"{kind}-fresh")
    embedpipe.run(fresh)
    assert ledger_chunks(cfg) == ledger_chunks(fresh)  # the index holds A, as a clean run does


def test_key_with_an_empty_segment_is_a_record_error_and_the_rest_is_embedded(
    s3: S3, tmp_path: Path
) -> None:
    put_corpus(s3, tmp_path)
    s3.put("docs//abs.md", "An abstract stored under a key with a double slash.")
    s3.put("jsonl//part-9.jsonl.gz", jsonl_bytes({"doc99": "A record behind a double slash."}))
    try:
        check_empty_segment_runs(tmp_path)
    finally:  # moto's buckets outlive the server: leave the corpus as the other tests expect
        s3.delete("docs//abs.md")
        s3.delete("jsonl//part-9.jsonl.gz")


def check_empty_segment_runs(tmp_path: Path) -> None:
    report = embedpipe.run(config("s3://lake/docs", tmp_path, "docs"))
    [error] = report.errors
    assert (error.source, error.record) == ("s3://lake/docs", "/abs.md")
    assert "empty path segment ('//')" in error.reason and "rename the object" in error.reason
    assert report.docs_read == 8 and report.chunks_embedded > 0
    rows = embedpipe.run(config("s3://lake/jsonl", tmp_path, "jsonl"))
    assert [e.source for e in rows.errors] == ["s3://lake/jsonl//part-9.jsonl.gz"]
    assert "empty path segment" in rows.errors[0].reason and rows.docs_read == 8


def test_throttled_object_is_retried_and_read(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    s3.fault("jsonl/part-0.jsonl.gz", "throttle", times=2)
    s3.fault("docs/doc03.md", "throttle", times=2)
    assert errors(source("s3://lake/jsonl")) == [] and len(docs(source("s3://lake/jsonl"))) == 8
    assert errors(source("s3://lake/docs")) == []


def test_object_throttled_past_its_retries_is_a_reported_record(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    s3.fault("docs/doc03.md", "throttle")
    items = list(source("s3://lake/docs", storage_options={"max_attempts": 2}))
    assert [(e.record, e.reason) for e in errors(items)] == [
        ("doc03.md", "cannot read object: throttled by the server (2 attempts)")
    ]
    assert len(docs(items)) == 7


def test_connection_dropped_mid_object_resumes_without_duplicates(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)
    s3.fault("jsonl/part-1.jsonl.gz", "drop", times=1)
    s3.fault("docs/doc00.md", "drop", times=1)
    assert [d.id for d in docs(source("s3://lake/jsonl"))] == list(texts())
    assert errors(source("s3://lake/docs")) == []
    assert s3.requests.bodies("lake").count("jsonl/part-1.jsonl.gz") >= 2


def test_missing_bucket_or_prefix_is_a_usage_error(s3: S3, tmp_path: Path) -> None:
    put_corpus(s3, tmp_path)  # its own: it passed only after tests that left s3://lake/jsonl/
    with pytest.raises(NoSourceError, match="No bucket nowhere"):
        source("s3://nowhere/corpus")
    with pytest.raises(NoSourceError, match=r"No objects at s3://lake/absent"):
        source("s3://lake/absent/")
    with pytest.raises(ConfigError, match=r"No \.parquet objects under s3://lake/jsonl"):
        source("parquet:s3://lake/jsonl")


# -------------------------------------------------------------- credentials stay secret


def test_credentials_appear_nowhere(
    s3: S3, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    put_corpus(s3, tmp_path)
    s3.fault("docs/doc02.md", "deny")
    cfg = config("s3://lake/docs", tmp_path, "docs", report=str(tmp_path / "report.json"))
    with caplog.at_level(logging.DEBUG):
        embedpipe.run(cfg)
        embedpipe.run(cfg)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    stored = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    shown = [caplog.text, *capsys.readouterr(), (tmp_path / "report.json").read_text()]
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret.encode() not in stored
        assert not any(secret in text for text in shown), secret
    assert "s3://lake/docs" in (tmp_path / "report.json").read_text()
    ledger = Ledger(state / "ledger.sqlite")
    objects = sorted(o for (o,) in ledger.db.execute("SELECT object FROM objects"))
    ledger.close()
    assert objects[0] == "s3://lake/docs/doc00.md" and len(objects) == 7  # doc02 was denied


def test_storage_options_take_no_credentials() -> None:
    with pytest.raises(ConfigError, match="takes no credentials") as exc:
        load_config(
            None,
            {
                "source": {
                    "uri": "s3://lake/x",
                    "storage_options": {"secret_access_key": "hunter2-secret"},
                }
            },
        )
    assert "hunter2-secret" not in str(exc.value)


def test_credentials_in_the_source_uri_are_refused_unshown(s3: S3) -> None:
    with pytest.raises(ConfigError, match="credentials in a source URI are not read") as exc:
        source("s3://AKIAXX:topsecretvalue@lake/docs")
    assert "topsecretvalue" not in str(exc.value)


def test_storage_options_endpoint_overrides_the_environment(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_corpus(s3, tmp_path)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    src = source("s3://lake/jsonl/", storage_options={"endpoint_url": s3.server.url})
    assert len(docs(src)) == 8 and errors(src) == []


def test_storage_error_messages_mask_the_credentials_the_environment_holds(s3: S3) -> None:
    from embedpipe.sources.storage import reason

    said = reason(OSError(f"signature for {ACCESS_KEY} with {SECRET_KEY} does not match"))
    assert ACCESS_KEY not in said and SECRET_KEY not in said and "***" in said
