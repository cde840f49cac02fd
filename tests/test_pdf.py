"""Source extras: include/exclude globs, PDF text, text_template, metadata into the payload, and
datasets from the local Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets

import embedpipe
from embedpipe.config import load_config
from embedpipe.errors import ConfigError, SourceError
from tests.sourcekit import docs, errors, source

datasets.disable_progress_bars()
ROOT = Path(__file__).resolve().parent.parent


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal, valid PDF written by hand: one Helvetica text line per page."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>"]
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R"
            f" /Resources << /Font << /F1 {font} 0 R >> >> >>"
        )
        objects.append(
            f"<< /Length {len(stream)} >>\nstream\n{stream.decode('latin-1')}\nendstream"
        )
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    if title:
        objects.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted(pdf: bytes, path: Path) -> Path:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    with path.open("wb") as f:
        writer.write(f)
    return path


@pytest.fixture
def tree(make_corpus) -> Path:  # type: ignore[no-untyped-def]
    return make_corpus(
        {
            "README.md": "root readme",
            "docs/guide.md": "the guide",
            "docs/api/ref.md": "the reference",
            "docs/drafts/wip.md": "unfinished",
            "docs/notes.txt": "plain notes",
            "build/out.md": "generated",
            "src/pkg/build/gen.md": "generated too",
            "src/pkg/mod.md": "module docs",
        }
    )


def ids(root: Path, **kwargs: Any) -> list[str]:
    return sorted(d.id for d in docs(source(root, **kwargs)))


# ---------------------------------------------------------------- include / exclude


def test_exclude_name_without_slash_prunes_directories_at_any_depth(tree: Path) -> None:
    got = ids(tree, exclude=["build"])
    assert "build/out.md" not in got and "src/pkg/build/gen.md" not in got
    assert "src/pkg/mod.md" in got


def test_exclude_with_slash_is_anchored_at_the_root(tree: Path) -> None:
    got = ids(tree, exclude=["/build"])
    assert "build/out.md" not in got and "src/pkg/build/gen.md" in got


def test_include_star_does_not_cross_directories(tree: Path) -> None:
    assert ids(tree, include=["docs/*.md"]) == ["docs/guide.md"]


def test_include_double_star_spans_directories_and_exclude_cuts_from_it(tree: Path) -> None:
    got = ids(tree, include=["docs/**/*.md"], exclude=["drafts/"])
    assert got == ["docs/api/ref.md", "docs/guide.md"]


def test_include_basename_glob_matches_at_any_depth_within_extensions(tree: Path) -> None:
    got = ids(tree, include=["*.txt", "README.*"])
    assert got == ["README.md", "docs/notes.txt"]


def test_trailing_slash_pattern_matches_directories_only(make_corpus) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus({"logs/a.md": "a dir", "logs.md": "a file named logs.md", "x/logs": "x"})
    assert ids(root, exclude=["logs/"]) == ["logs.md"]


def test_source_total_counts_only_included_files(tree: Path) -> None:
    assert source(tree, include=["docs/"]).total == 4


# ---------------------------------------------------------------- PDF


def test_pdf_text_is_read_page_by_page_with_page_count(tmp_path: Path) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    (root / "manual.pdf").write_bytes(make_pdf(["Install the pump", "Replace the filter"], "Pump"))
    [doc] = docs(source(root))
    assert doc.id == "manual.pdf"
    assert "Install the pump" in doc.text and "Replace the filter" in doc.text
    assert doc.text.index("pump") < doc.text.index("filter")
    assert doc.metadata == {"path": "manual.pdf", "pages": 2, "title": "Pump"}


def test_encrypted_pdf_is_a_record_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    encrypted(make_pdf(["secret plans"]), root / "locked.pdf")
    (root / "open.pdf").write_bytes(make_pdf(["public notes"]))
    items = list(source(root))
    [err] = errors(items)
    assert err.record == "locked.pdf" and "encrypted PDF" in err.reason
    assert [d.id for d in docs(items)] == ["open.pdf"]


def test_corrupt_pdf_is_a_record_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    (root / "broken.pdf").write_bytes(make_pdf(["fine"])[:60])
    [err] = errors(source(root))
    assert err.record == "broken.pdf" and "not a readable PDF" in err.reason


def test_pdf_without_text_says_it_needs_ocr(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    root = tmp_path / "pdfs"
    root.mkdir()
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    with (root / "scan.pdf").open("wb") as f:
        writer.write(f)
    [err] = errors(source(root))
    assert err.record == "scan.pdf" and "OCR" in err.reason


# ---------------------------------------------------------------- text_template


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


# ---------------------------------------------------------------- metadata into the payload


def test_named_metadata_fields_reach_the_qdrant_payload(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    path = tmp_path / "rows.jsonl"
    valves = {"id": "d", "title": "Valves", "body": "Valves stop flow.", "lang": "fr",
              "secret": "x", "tags": ["hw", "plumbing"]}  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in [ROWS[0], valves]))
    sink = tmp_path / "qdrant"
    report = embedpipe.backfill(
        str(path), sink=f"qdrant:{sink}", collection="docs",
        text_template="{title}\n\n{body}", metadata_fields=["lang", "tags"], precision="fp32",
    )  # fmt: skip
    assert report.docs_read == 2
    client = QdrantClient(path=str(sink))
    try:
        name = client.get_aliases().aliases[0].collection_name
        points, _ = client.scroll(name, limit=10, with_payload=True)
    finally:
        client.close()
    by_doc = {p.payload["doc_id"]: p.payload for p in points if p.payload}
    assert by_doc["d"]["metadata"] == {"lang": "fr", "tags": ["hw", "plumbing"]}
    assert by_doc["a"]["metadata"] == {"lang": "en"}
    assert by_doc["d"]["text"] == "Valves\n\nValves stop flow."


# ---------------------------------------------------------------- hf: from the local cache


def cache_dataset(cache: Path, repo_id: str, splits: dict[str, dict[str, list[Any]]]) -> None:
    """Put a dataset into a datasets cache exactly where load_dataset(repo_id) leaves one: the
    Parquet builder a Hub download uses prepares Arrow files under OWNER___NAME/default/0.0.0/HASH.
    Only the download is skipped: the data files are local."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo_id.split("/")
    files = {}
    for split, columns in splits.items():
        files[split] = str(cache.parent / f"{split}.parquet")
        pq.write_table(pa.table(columns), files[split])
    builder = Parquet(
        cache_dir=str(cache),
        dataset_name=name,
        config_id="default",
        data_files=files,
        hash="0" * 16,
    )
    builder.download_and_prepare()
    (cache / name).rename(cache / f"{owner}___{name}")


SPLITS = {
    "train": {
        "id": ["t1", "t2"],
        "title": ["Pumps", "Valves"],
        "body": ["move water", "stop flow"],
    },
    "test": {"id": ["x1"], "title": ["Filters"], "body": ["catch grit"]},
}


def test_hf_name_reads_a_dataset_from_the_local_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hf" / "datasets"
    cache.mkdir(parents=True)
    cache_dataset(cache, "acme/pump-docs", SPLITS)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # hf: forces offline itself
    src = source("hf:acme/pump-docs#test", text_template="{title}: {body}")
    assert src.total == 1
    [doc] = docs(src)
    assert (doc.id, doc.text, doc.source) == ("x1", "Filters: catch grit", "hf:acme/pump-docs#test")


def test_hf_name_resolves_through_hf_home_in_a_fresh_process(tmp_path: Path) -> None:
    home = tmp_path / "hf-home"
    (home / "datasets").mkdir(parents=True)
    cache_dataset(home / "datasets", "acme/pump-docs", SPLITS)
    code = (
        "from embedpipe.config import SourceConfig; from embedpipe.sources import open_source\n"
        "src = open_source(SourceConfig(uri='hf:acme/pump-docs', text_field='body'))\n"
        "print(src.uri, [d.id for d in src])"
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hf:acme/pump-docs#train ['t1', 't2']"


def test_hf_name_not_in_the_cache_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(SourceError, match="local Hugging Face cache"):
        source("hf:acme/not-downloaded")
