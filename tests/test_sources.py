"""Sources: every input kind yields the right Documents, and reports bad records without stopping."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets

import embedpipe
import embedpipe.api
from embedpipe.config import load_config
from embedpipe.errors import ConfigError, SourceError
from embedpipe.sources import detect_kind, read_jsonl
from embedpipe.types import Document, RecordError
from tests.clikit import cli, flat
from tests.sourcekit import docs, errors, source

datasets.disable_progress_bars()

UNICODE = "Grüße, 東京, emoji 🚀, RTL שלום"


# ---------------------------------------------------------------- helpers


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]], row_group_size: int = 1024) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small directory of documents, with hidden files and files of other kinds."""
    root = tmp_path / "corpus"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text("bee", "utf-8")
    (root / "a.md").write_text("# A\n\nalpha", "utf-8")
    (root / "sub" / "c.RST").write_text("see", "utf-8")
    (root / "sub" / "deeper" / "d.txt").write_text("dee", "utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / ".hidden.txt").write_text("hidden", "utf-8")
    (root / ".git" / "HEAD.txt").write_text("ref", "utf-8")
    return root


# ---------------------------------------------------------------- directory


def test_dir_yields_each_matching_file_in_sorted_order_with_relative_ids(corpus: Path) -> None:
    items = list(source(corpus))
    assert [d.id for d in docs(items)] == ["a.md", "b.txt", "sub/c.RST", "sub/deeper/d.txt"]
    assert errors(items) == []


def test_dir_document_carries_text_path_metadata_and_root(corpus: Path) -> None:
    doc = docs(source(corpus))[0]
    assert doc == Document(
        id="a.md",
        text="# A\n\nalpha",
        metadata={"path": "a.md", "source": f"{corpus}/a.md"},
        source=str(corpus),
    )


def test_dir_total_counts_matching_files(corpus: Path) -> None:
    assert source(corpus).total == 4


def test_dir_skips_hidden_files_and_directories(corpus: Path) -> None:
    ids = [d.id for d in docs(source(corpus))]
    assert not any(".git" in i or "hidden" in i for i in ids)


def test_dir_reads_only_configured_extensions_case_insensitively(corpus: Path) -> None:
    ids = [d.id for d in docs(source(corpus, extensions=[".rst", "txt"]))]
    assert ids == ["b.txt", "sub/c.RST", "sub/deeper/d.txt"]


def test_dir_ids_are_stable_across_reads(corpus: Path) -> None:
    src = source(corpus)
    assert [d.id for d in docs(src)] == [d.id for d in docs(src)]


def test_dir_non_ascii_text_round_trips_exactly(tmp_path: Path) -> None:
    raw = (UNICODE + "\r\n  keep\tspacing  \n").encode()
    (tmp_path / "u.txt").write_bytes(raw)
    assert docs(source(tmp_path))[0].text.encode() == raw


def test_dir_utf8_bom_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert docs(source(tmp_path))[0].text == "hello"


def test_dir_html_is_stripped_to_readable_text(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<script>var secret = 1 < 2;</script><h1>Title</h1><p>Fish &amp; chips,\n   "
        "<b>hot</b>&nbsp;now</p><ul><li>one</li><li>two</li></ul></body></html>",
        "utf-8",
    )
    assert docs(source(tmp_path))[0].text == "Title\n\nFish & chips, hot\xa0now\n\none\ntwo"


def test_dir_html_script_content_is_absent(tmp_path: Path) -> None:
    (tmp_path / "p.htm").write_text("<p>visible</p><script>alert('secret')</script>", "utf-8")
    text = docs(source(tmp_path))[0].text
    assert "secret" not in text and text == "visible"


def test_dir_html_collapses_runs_of_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "p.html").write_text("<div><p>a</p></div><div></div><div><p>b</p></div>", "utf-8")
    assert docs(source(tmp_path))[0].text == "a\n\nb"


def test_dir_html_keeps_preformatted_whitespace(tmp_path: Path) -> None:
    (tmp_path / "p.html").write_text("<pre>x = 1\n    y  = 2</pre>", "utf-8")
    assert docs(source(tmp_path))[0].text == "x = 1\n    y  = 2"


def test_dir_html_with_only_markup_is_an_empty_document(tmp_path: Path) -> None:
    (tmp_path / "p.html").write_text("<html><head><title>t</title></head><body> </body>", "utf-8")
    assert errors(source(tmp_path)) == [RecordError(str(tmp_path), "p.html", "empty document")]


def test_dir_binary_file_is_reported_and_rest_is_read(corpus: Path) -> None:
    (corpus / "blob.txt").write_bytes(b"abc\x00\x01\x02")
    items = list(source(corpus))
    assert errors(items) == [RecordError(str(corpus), "blob.txt", "binary file, not text")]
    assert len(docs(items)) == 4


def test_dir_invalid_utf8_is_reported_with_byte_offset(corpus: Path) -> None:
    (corpus / "latin1.txt").write_bytes("café".encode("latin-1"))
    items = list(source(corpus))
    assert errors(items) == [
        RecordError(str(corpus), "latin1.txt", "not UTF-8 text (invalid byte at offset 3)")
    ]
    assert len(docs(items)) == 4


def test_dir_empty_and_whitespace_files_are_reported(corpus: Path) -> None:
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "blank.txt").write_text(" \n\t\n", "utf-8")
    assert errors(source(corpus)) == [
        RecordError(str(corpus), "blank.txt", "empty document"),
        RecordError(str(corpus), "empty.txt", "empty document"),
    ]


def test_dir_file_vanishing_after_listing_is_reported_and_rest_is_read(corpus: Path) -> None:
    src = source(corpus)
    (corpus / "b.txt").unlink()
    items = list(src)
    assert [(e.record, e.reason) for e in errors(items)] == [
        ("b.txt", "cannot read file: No such file or directory")
    ]
    assert [d.id for d in docs(items)] == ["a.md", "sub/c.RST", "sub/deeper/d.txt"]


def test_dir_dangling_symlink_is_reported_with_os_reason(corpus: Path) -> None:
    (corpus / "gone.txt").symlink_to(corpus / "nowhere.txt")
    [err] = errors(source(corpus))
    assert err.record == "gone.txt" and "No such file or directory" in err.reason


def test_dir_file_link_out_of_the_folder_is_skipped_naming_its_target(
    corpus: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere" / "creds.txt"
    secret.parent.mkdir()
    secret.write_text("password=hunter2", "utf-8")
    (corpus / "notes.txt").symlink_to(secret)
    items = list(source(corpus))
    [err] = errors(items)
    assert err.record == "notes.txt" and str(secret) in err.reason
    assert "source.follow_symlinks" in err.reason and err.excluded
    assert all("hunter2" not in d.text for d in docs(items))
    assert [d.id for d in docs(items)] == ["a.md", "b.txt", "sub/c.RST", "sub/deeper/d.txt"]


def test_dir_file_link_inside_the_folder_is_read(corpus: Path) -> None:
    (corpus / "alias.txt").symlink_to(corpus / "sub" / "deeper" / "d.txt")
    items = list(source(corpus))
    assert errors(items) == []
    assert {d.id: d.text for d in docs(items)}["alias.txt"] == "dee"


def test_dir_file_link_out_of_the_folder_is_read_when_configured(
    corpus: Path, tmp_path: Path
) -> None:
    (tmp_path / "shared.txt").write_text("shared notes", "utf-8")
    (corpus / "shared.txt").symlink_to(tmp_path / "shared.txt")
    items = list(source(corpus, follow_symlinks=True))
    assert errors(items) == []
    assert {d.id: d.text for d in docs(items)}["shared.txt"] == "shared notes"


def test_dir_link_made_after_listing_is_still_checked_when_read(
    corpus: Path, tmp_path: Path
) -> None:
    (tmp_path / "creds.txt").write_text("password=hunter2", "utf-8")
    src = source(corpus)
    (corpus / "b.txt").unlink()
    (corpus / "b.txt").symlink_to(tmp_path / "creds.txt")
    [err] = errors(src)
    assert err.record == "b.txt" and "outside the source folder" in err.reason
    assert src.files is not None and "b.txt" in src.files.names  # listed as a plain file


def test_dir_utf16_file_is_reported_as_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_bytes("hello".encode("utf-16"))
    [err] = errors(source(tmp_path))
    assert err.reason == "UTF-16 text, not UTF-8: re-save the file as UTF-8"


# ---------------------------------------------------------------- JSONL


def test_jsonl_yields_text_id_and_other_fields_as_metadata(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"id": "a", "text": "alpha", "lang": "en", "tags": [1]}]
    )
    assert list(source(path)) == [
        Document(
            id="a",
            text="alpha",
            metadata={"id": "a", "lang": "en", "tags": [1], "source": str(path)},
            source=str(path),
        )
    ]


def test_jsonl_integer_id_becomes_a_string(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 7, "text": "seven"}])
    assert docs(source(path))[0].id == "7"


def test_jsonl_id_falls_back_to_text_hash(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "alpha"}, {"id": "", "text": "beta"}])
    assert [d.id for d in docs(source(path))] == [
        xxhash.xxh3_128_hexdigest(b"alpha"),
        xxhash.xxh3_128_hexdigest(b"beta"),
    ]


def test_jsonl_ids_are_stable_across_reads(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}])
    src = source(path)
    assert [d.id for d in docs(src)] == [d.id for d in docs(src)]


def test_jsonl_metadata_fields_select_what_is_carried(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "lang": "en", "big": "x" * 100}])
    carried = docs(source(path, metadata_fields=["lang", "absent"]))[0].metadata
    assert carried == {"lang": "en", "source": str(path)}


def test_jsonl_custom_text_and_id_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"key": "k1", "body": "hello"}])
    [doc] = docs(source(path, text_field="body", id_field="key"))
    assert (doc.id, doc.text) == ("k1", "hello")


def test_jsonl_non_ascii_text_round_trips_exactly(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "u", "text": UNICODE}])
    assert docs(source(path))[0].text == UNICODE


def test_jsonl_malformed_line_is_reported_and_rest_is_read(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "a"}', '{"text": "b"', '{"text": "c"}'])
    items = list(source(path))
    [err] = errors(items)
    assert err.source == str(path) and err.record == "line 2"
    assert err.reason.startswith("malformed JSON: ")
    assert [d.text for d in docs(items)] == ["a", "c"]


def test_jsonl_blank_lines_are_ignored_but_counted_in_line_numbers(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "a"}', "", "  ", "{"])
    assert [e.record for e in errors(source(path))] == ["line 4"]


def test_jsonl_null_text_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": None}, {"text": "ok"}])
    assert errors(source(path)) == [RecordError(str(path), "line 1", "text field 'text' is null")]


def test_jsonl_non_string_text_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": 42}])
    [err] = errors(source(path))
    assert err.reason == "text field 'text' is a number, not a string"


def test_jsonl_missing_text_field_is_reported_with_fields_present(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "id": 1}])
    [err] = errors(source(path))
    assert err.reason == "no text field 'text' (fields present: body, id)"


def test_jsonl_whitespace_only_text_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": " \n "}])
    [err] = errors(source(path))
    assert err.reason == "text field 'text' is empty (whitespace only)"


def test_jsonl_non_object_line_is_reported(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['["text", "a"]'])
    [err] = errors(source(path))
    assert err.reason == "line is an array, not a JSON object (expected one object per line)"


def test_jsonl_unusable_id_type_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": {"a": 1}, "text": "x"}])
    [err] = errors(source(path))
    assert err.reason == "id field 'id' is an object, expected a string or an integer"


def test_jsonl_invalid_utf8_line_is_reported_and_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n{"text": "ok"}\n')
    items = list(source(path))
    assert [e.record for e in errors(items)] == ["line 1"]
    assert [d.text for d in docs(items)] == ["ok"]


def test_jsonl_gzip_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": "g", "text": UNICODE}, ensure_ascii=False) + "\n")
    assert [(d.id, d.text) for d in docs(source(path))] == [("g", UNICODE)]


def test_jsonl_truncated_gzip_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    data = gzip.compress(b"".join(b'{"text": "row %d"}\n' % i for i in range(5000)))
    path.write_bytes(data[: len(data) // 2])
    items = list(source(path))
    assert len(errors(items)) == 1 and "cannot read further" in errors(items)[0].reason
    assert len(docs(items)) > 0


def test_jsonl_is_streamed_not_read_whole(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "first"}])
    stream = iter(source(path))
    assert next(stream).text == "first"  # type: ignore[union-attr]
    with path.open("a", encoding="utf-8") as f:  # appended after reading began
        f.write('{"text": "second"}\n')
    assert [d.text for d in docs(stream)] == ["second"]


# ---------------------------------------------------------------- Parquet


def test_parquet_yields_text_id_and_metadata(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "d.parquet", {"id": ["a", "b"], "text": ["x", "y"], "n": [1, 2]}
    )
    assert list(source(path)) == [
        Document(
            id="a", text="x", metadata={"id": "a", "n": 1, "source": str(path)}, source=str(path)
        ),
        Document(
            id="b", text="y", metadata={"id": "b", "n": 2, "source": str(path)}, source=str(path)
        ),
    ]


def test_parquet_streams_multiple_row_groups_in_order(tmp_path: Path) -> None:
    texts = [f"t{i}" for i in range(2500)]
    path = write_parquet(tmp_path / "d.parquet", {"text": texts}, row_group_size=300)
    assert pq.ParquetFile(path).num_row_groups == 9
    src = source(path)
    assert src.total == 2500
    assert [d.text for d in docs(src)] == texts


def test_parquet_directory_is_read_file_by_file_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "part=2").mkdir(parents=True)
    (root / "_temporary").mkdir()
    write_parquet(root / "part=2" / "x.parquet", {"id": ["c"], "text": ["C"]})
    write_parquet(root / "b.parquet", {"id": ["b1", "b2"], "text": ["B1", "B2"]})
    write_parquet(root / "a.parquet", {"id": ["a"], "text": ["A"]})
    write_parquet(root / "_temporary" / "junk.parquet", {"id": ["j"], "text": ["J"]})
    src = source(root)
    assert (src.kind, src.total) == ("parquet", 4)
    items = docs(src)
    assert [d.id for d in items] == ["a", "b1", "b2", "c"]
    assert items[-1].source == str(root / "part=2" / "x.parquet")


def test_parquet_null_text_row_is_reported_with_row_number_in_file(tmp_path: Path) -> None:
    texts = ["ok"] * 1500 + [None] + ["ok"] * 10
    path = write_parquet(tmp_path / "d.parquet", {"text": texts}, row_group_size=500)
    items = list(source(path))
    assert errors(items) == [RecordError(str(path), "row 1500", "text field 'text' is null")]
    assert len(docs(items)) == 1510


def test_parquet_empty_text_row_is_reported(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"text": ["a", ""]})
    assert errors(source(path)) == [RecordError(str(path), "row 1", "text field 'text' is empty")]


def test_parquet_reads_only_text_id_and_metadata_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_parquet(
        tmp_path / "d.parquet",
        {"id": ["a"], "text": ["x"], "lang": ["en"], "big": ["z" * 100_000]},
    )
    asked: list[list[str]] = []
    real_iter_batches = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["columns"])
        return real_iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    [doc] = docs(source(path, metadata_fields=["lang"]))
    assert doc.metadata == {"lang": "en", "source": str(path)}
    assert asked == [["text", "id", "lang"]]


def test_parquet_default_metadata_skips_binary_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"text": ["x"], "blob": [b"\x00" * 10], "n": [1]})
    assert docs(source(path))[0].metadata == {"n": 1, "source": str(path)}


def test_parquet_timestamps_in_metadata_become_iso_strings(tmp_path: Path) -> None:
    import datetime as dt

    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    path = write_parquet(
        tmp_path / "d.parquet", {"text": ["x"], "at": [when], "day": [when.date()]}
    )
    meta = docs(source(path))[0].metadata
    assert meta == {"at": "2024-05-01T12:30:00+00:00", "day": "2024-05-01", "source": str(path)}
    json.dumps(meta)


def test_parquet_id_falls_back_to_text_hash(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"id": [None], "text": ["alpha"]})
    assert docs(source(path))[0].id == xxhash.xxh3_128_hexdigest(b"alpha")


def test_parquet_non_ascii_text_round_trips_exactly(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"text": [UNICODE]})
    assert docs(source(path))[0].text == UNICODE


def test_parquet_missing_text_column_raises_naming_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"body": ["x"], "id": ["a"]})
    with pytest.raises(SourceError, match=r"No text column 'text' .*columns are body, id"):
        source(path)


def test_parquet_non_string_text_column_raises(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"text": [1, 2]})
    with pytest.raises(SourceError, match="holds int64, not strings"):
        source(path)


def test_parquet_corrupt_file_raises_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"Cannot read Parquet file .*bad.parquet"):
        source(path)


# ---------------------------------------------------------------- Hugging Face


@pytest.fixture
def hf_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "ds"
    datasets.Dataset.from_dict(
        {"id": ["a", "b", None], "text": ["alpha", UNICODE, "gamma"], "lang": ["en", "xx", "en"]}
    ).save_to_disk(str(path))
    return path


@pytest.fixture
def hf_dict(tmp_path: Path) -> Path:
    path = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["t1", "t2"]}),
            "test": datasets.Dataset.from_dict({"text": ["s1", None]}),
        }
    ).save_to_disk(str(path))
    return path


def test_hf_dataset_yields_text_id_and_metadata(hf_dataset: Path) -> None:
    src = source(f"hf:{hf_dataset}")
    assert (src.kind, src.total) == ("hf", 3)
    items = docs(src)
    assert [d.id for d in items] == ["a", "b", xxhash.xxh3_128_hexdigest(b"gamma")]
    uri = f"hf:{hf_dataset}"
    assert items[0] == Document("a", "alpha", {"id": "a", "lang": "en", "source": uri}, uri)


def test_hf_non_ascii_text_round_trips_exactly(hf_dataset: Path) -> None:
    assert docs(source(f"hf:{hf_dataset}"))[1].text == UNICODE


def test_hf_ids_are_stable_across_reads(hf_dataset: Path) -> None:
    src = source(f"hf:{hf_dataset}")
    assert [d.id for d in docs(src)] == [d.id for d in docs(src)]


def test_hf_metadata_fields_select_columns(hf_dataset: Path) -> None:
    [doc, *_] = docs(source(f"hf:{hf_dataset}", metadata_fields=["lang"]))
    assert doc.metadata == {"lang": "en", "source": f"hf:{hf_dataset}"}


def test_hf_dataset_dict_defaults_to_train(hf_dict: Path) -> None:
    src = source(f"hf:{hf_dict}")
    assert (src.uri, [d.text for d in docs(src)]) == (f"hf:{hf_dict}#train", ["t1", "t2"])


def test_hf_dataset_dict_named_split_reports_bad_rows(hf_dict: Path) -> None:
    items = list(source(f"hf:{hf_dict}#test"))
    assert [d.text for d in docs(items)] == ["s1"]
    assert errors(items) == [
        RecordError(f"hf:{hf_dict}#test", "row 1", "text field 'text' is null")
    ]


def test_hf_unknown_split_raises_listing_splits(hf_dict: Path) -> None:
    with pytest.raises(SourceError, match=r"no split 'dev'.*one of (train, test|test, train)"):
        source(f"hf:{hf_dict}#dev")


def test_hf_missing_text_column_raises_naming_columns(hf_dataset: Path) -> None:
    with pytest.raises(SourceError, match=r"No text column 'body' .*columns are id, text, lang"):
        source(f"hf:{hf_dataset}", text_field="body")


def test_hf_missing_dataset_raises_with_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"No saved dataset at .*save_to_disk"):
        source(f"hf:{tmp_path / 'nothing'}")


# ---------------------------------------------------------------- open_source detection


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("d.jsonl", "jsonl"),
        ("d.ndjson", "jsonl"),
        ("d.json", "jsonl"),
        ("d.jsonl.gz", "jsonl"),
        ("d.parquet", "parquet"),
    ],
)
def test_open_source_detects_file_kind_by_suffix(tmp_path: Path, name: str, kind: str) -> None:
    path = tmp_path / name
    if kind == "parquet":
        write_parquet(path, {"text": ["x"]})
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(b'{"text": "x"}\n'))
    else:
        write_jsonl(path, [{"text": "x"}])
    src = source(path)
    assert (src.kind, [d.text for d in docs(src)]) == (kind, ["x"])


def test_open_source_detects_text_directory(corpus: Path) -> None:
    assert source(corpus).kind == "dir"


def test_open_source_detects_parquet_directory(tmp_path: Path) -> None:
    write_parquet(tmp_path / "p.parquet", {"text": ["x"]})
    assert source(tmp_path).kind == "parquet"


def test_open_source_directory_with_parquet_and_text_files_is_a_dir(tmp_path: Path) -> None:
    write_parquet(tmp_path / "p.parquet", {"text": ["x"]})
    (tmp_path / "notes.md").write_text("notes", "utf-8")
    assert source(tmp_path).kind == "dir"


def test_open_source_detects_saved_hf_dataset_directory(hf_dataset: Path) -> None:
    assert source(hf_dataset).kind == "hf"


@pytest.mark.parametrize("kind", ["dir", "jsonl", "parquet"])
def test_open_source_explicit_prefix_wins(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "data.bin"
    if kind == "dir":
        path.mkdir()
        (path / "a.txt").write_text("x", "utf-8")
    elif kind == "jsonl":
        write_jsonl(path, [{"text": "x"}])
    else:
        write_parquet(path, {"text": ["x"]})
    src = source(f"{kind}:{path}")
    assert (src.kind, [d.text for d in docs(src)]) == (kind, ["x"])


def test_open_source_missing_path_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as exc:
        source(tmp_path / "x")
    assert str(exc.value) == (
        f"No source at {tmp_path / 'x'}: pass a directory, a .jsonl file,"
        " a .parquet file/dir, hf:PATH or s3://BUCKET/PREFIX"
    )


def test_open_source_unknown_file_type_says_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n", "utf-8")
    with pytest.raises(SourceError, match="Cannot tell what kind of source"):
        source(tmp_path / "data.csv")


def test_open_source_empty_uri_says_what_to_pass() -> None:
    with pytest.raises(SourceError, match="No source given"):
        source("")


def test_read_jsonl_works_without_open_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "id": "1"}])
    assert [d.id for d in docs(read_jsonl(path))] == ["1"]


def test_dir_html_collapses_inline_whitespace_but_keeps_nbsp(tmp_path: Path) -> None:
    (tmp_path / "p.html").write_text(
        "<div>  a \n <span> b </span>&nbsp; </div><div>c</div>", "utf-8"
    )
    assert docs(source(tmp_path))[0].text == "a b \xa0\nc"


def test_dir_invalid_utf8_offset_counts_the_bom(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_bytes(b"\xef\xbb\xbfab\xff")
    [err] = errors(source(tmp_path))
    assert err.reason == "not UTF-8 text (invalid byte at offset 5)"


# ---------------------------------------------------------------- a missing source is a usage error


def test_cli_missing_source_exits_2_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = cli("backfill", str(missing), "--sink", f"faiss:{tmp_path / 'f'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"No source at {missing}" in flat(done.stderr)
    assert not (tmp_path / "f").exists()


def _model_loads() -> int:
    """How many times the library has loaded a model for a run (its cache misses)."""
    loader = getattr(embedpipe.api, "_encoder_for", None) or embedpipe.api._run_encoder
    return int(loader.cache_info().misses)


@pytest.mark.parametrize("prefix", ["", "jsonl:", "dir:"])
def test_run_with_a_missing_source_raises_before_loading_the_model(
    prefix: str, tmp_path: Path
) -> None:
    cfg = load_config(
        None,
        {
            "source": {"uri": f"{prefix}{tmp_path / 'nowhere'}"},
            "sink": {"uri": f"faiss:{tmp_path / 'f'}"},
            "model": {"name": str(tmp_path / "no-model-here")},
        },
    )
    before = _model_loads()
    with pytest.raises(ConfigError, match=r"No source at .*nowhere"):
        embedpipe.run(cfg)
    assert _model_loads() == before


def test_remote_url_source_is_a_usage_error_not_a_missing_file() -> None:
    with pytest.raises(ConfigError) as exc:  # s3:// and gs:// are read (tests/test_s3.py)
        detect_kind("abfs://container/corpus")
    assert "no reader for abfs:// sources" in str(exc.value)
    assert "No source at" not in str(exc.value)
    assert isinstance(exc.value, SourceError)  # what callers caught before still catches it


@pytest.mark.parametrize("key", ["doc_id", "chunk_index", "start", "source", "text"])
def test_a_record_with_a_reserved_metadata_key_is_refused_naming_the_record_and_key(
    tmp_path: Path, key: str
) -> None:
    rows = [{"id": "a", "body": "alpha", key: 7}, {"id": "b", "body": "beta"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    items = list(source(path, text_field="body"))
    [refused] = errors(items)
    assert refused.record == "line 1" and refused.source == str(path)
    assert f"metadata key '{key}' is reserved" in refused.reason
    assert "source.metadata_fields" in refused.reason
    assert [d.id for d in docs(items)] == ["b"]
