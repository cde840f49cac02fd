"""The index as a reader sees it: what a run records in the manifest (model, prompts, settings),
queries encoded with the stored query prompt, filters through `query` and `query --where`, and
the library's ergonomics (documents as dicts/tuples/strings, `encode` options, one config type).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embedpipe
from embedpipe.api import as_config, open_index
from embedpipe.config import RunConfig, load_config
from embedpipe.documents import GIVEN, as_document
from embedpipe.errors import ConfigError
from embedpipe.index import Index
from embedpipe.runs.pipeline import Pipeline
from embedpipe.sinks import open_sink
from embedpipe.types import Document, RecordError
from tests.clikit import cli
from tests.sinkkit import SINK_KINDS, sink_uri

PACKAGES = {
    "np1": ("numpy", "numpy arrays are strided views of typed memory buffers"),
    "np2": ("numpy", "broadcasting stretches smaller arrays across larger ones"),
    "sp1": ("scipy", "scipy.optimize minimizes functions of several variables"),
    "sp2": ("scipy", "sparse matrices store only their nonzero entries"),
    "pd1": ("pandas", "a DataFrame is a table of labelled columns"),
    "pd2": ("pandas", "groupby splits a table into groups and aggregates each"),
}


def docs() -> list[dict[str, Any]]:
    """Six one-chunk documents, two per package, the package in their metadata."""
    return [
        {"id": i, "text": text, "metadata": {"pkg": pkg}} for i, (pkg, text) in PACKAGES.items()
    ]


def uri(kind: str, root: Path) -> str:
    return sink_uri(kind, root)


def config(kind: str, root: Path, **model: Any) -> RunConfig:
    return load_config(
        None, {"sink": {"uri": uri(kind, root), "collection": "docs"}, "model": model}
    )


# -- the manifest ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_a_run_records_model_prompts_and_settings_in_the_live_manifest(
    kind: str, tmp_path: Path, fake_encoder: Any
) -> None:
    cfg = config(kind, tmp_path, prefix="passage: ", query_prefix="query: ", name="my-model")
    report = Pipeline(cfg, source=docs(), encoder=fake_encoder).run()
    sink = open_sink(cfg.sink)
    try:
        manifest = sink.manifest()
    finally:
        sink.abort()
    assert manifest["prompts"] == {"passage": "passage: ", "query": "query: "}
    assert (manifest["model"], manifest["dim"]) == ("my-model", 32)
    assert manifest["fingerprint"] == report.fingerprint
    assert manifest["settings"]["chunking"] == cfg.chunking.model_dump()
    assert manifest["settings"]["model"]["prefix"] == "passage: "


def test_an_index_without_a_manifest_or_ledger_knows_nothing_and_says_so_on_search(
    tmp_path: Path, fake_encoder: Any
) -> None:
    index = Index(config("faiss", tmp_path), lambda _: fake_encoder)
    with index, pytest.raises(embedpipe.EmbedpipeError, match="run embedpipe first"):
        assert index.built.model is None and index.query_prompt == ""
        index.search("numpy", k=2)


def test_the_index_encodes_queries_with_the_stored_prompt_unless_overridden(
    tmp_path: Path, fake_encoder: Any
) -> None:
    cfg = config("faiss", tmp_path, prefix="passage: ", query_prefix="query: ")
    Pipeline(cfg, source=docs(), encoder=fake_encoder).run()
    reader = config("faiss", tmp_path)  # no prompts in the reader's config
    with Index(reader, lambda _: fake_encoder) as index:
        assert index.query_prompt == "query: "
        stored = index.embed_queries(["arrays"])[0]
        assert np.allclose(stored, fake_encoder.encode_texts(["arrays"], prefix="query: ")[0])
        assert index.write_config().model.prefix == "passage: "
    with Index(reader, lambda _: fake_encoder, query_prefix="") as index:
        assert index.query_prompt == ""


# -- filters through the library -------------------------------------------------------------


@pytest.mark.parametrize("kind", SINK_KINDS)
def test_search_with_a_filter_keeps_only_what_it_names(
    kind: str, tmp_path: Path, fake_encoder: Any
) -> None:
    cfg = config(kind, tmp_path)
    Pipeline(cfg, source=docs(), encoder=fake_encoder).run()
    with Index(cfg, lambda _: fake_encoder) as index:
        every = index.search("tables of columns", k=6)
        assert len(every) == 6
        scipy = index.search("tables of columns", k=6, filter={"metadata.pkg": "scipy"})
        assert sorted(h.doc_id for h in scipy) == ["sp1", "sp2"]
        two = index.search("arrays", k=6, filter={"doc_id": ["np1", "pd2"], "chunk_index": 0})
        assert sorted(h.doc_id for h in two) == ["np1", "pd2"]


# -- prompts with a real model, through embedpipe.query --------------------------------------


@pytest.fixture(scope="module")
def prompted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> RunConfig:
    """The tiny model's index built with E5-style prompts."""
    root = tmp_path_factory.mktemp("prompted")
    cfg = config(
        "qdrant-edge",
        root,
        name=str(tiny_model),
        prefix="passage: ",
        query_prefix="query: ",
        precision="fp32",
        device="cpu",
    )
    assert embedpipe.backfill(docs(), config=cfg).outcome == "done"
    return cfg


def test_query_uses_the_stored_query_prompt_by_default(prompted: RunConfig) -> None:
    reader = {"sink": prompted.sink.uri, "collection": "docs", "device": "cpu"}
    plain = embedpipe.query("typed memory", k=6, **reader)
    prompted_hits = embedpipe.query("typed memory", k=6, query_prefix="query: ", **reader)
    bare = embedpipe.query("typed memory", k=6, query_prefix="", **reader)
    assert [(h.chunk_id, round(h.score, 5)) for h in plain] == [
        (h.chunk_id, round(h.score, 5)) for h in prompted_hits
    ]
    assert [round(h.score, 5) for h in plain] != [round(h.score, 5) for h in bare]


def test_a_change_of_passage_prompt_is_a_new_fingerprint(tiny_model: Path, tmp_path: Path) -> None:
    base = {"name": str(tiny_model), "precision": "fp32", "device": "cpu"}
    first = embedpipe.backfill(docs(), config=config("faiss", tmp_path, **base), dry_run=True)
    other = config("faiss", tmp_path, prefix="passage: ", **base)
    second = embedpipe.backfill(docs(), config=other, dry_run=True)
    same_query = config("faiss", tmp_path, query_prefix="query: ", **base)
    third = embedpipe.backfill(docs(), config=same_query, dry_run=True)
    assert first.fingerprint != second.fingerprint
    assert first.fingerprint == third.fingerprint  # the query prompt does not change vectors


def test_query_where_on_the_command_line(prompted: RunConfig, tmp_path: Path) -> None:
    args = ["query", "arrays", "--sink", prompted.sink.uri, "--collection", "docs", "--json"]
    done = cli(
        *args,
        "--where",
        "metadata.pkg=pandas,scipy",
        "--where",
        "chunk_index=0",
        "-k",
        "6",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(h["doc_id"] for h in json.loads(done.stdout)) == ["pd1", "pd2", "sp1", "sp2"]
    wrong = cli(*args, "--where", "pkg=numpy", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "did you mean metadata.pkg" in " ".join(wrong.stderr.split())


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["metadata.pkg!=pandas"], ["np1", "np2", "sp1", "sp2"]),
        (["metadata.pkg!=pandas,numpy"], ["sp1", "sp2"]),
        (["doc_id=pd1|metadata.pkg=scipy"], ["pd1", "sp1", "sp2"]),
        (["!metadata.pkg=numpy,scipy"], ["pd1", "pd2"]),
        (["metadata.pkg!=numpy", "end<=48"], ["pd1", "sp2"]),  # 42 and 48 characters long
        (['{"$or": [{"doc_id": "np1"}, {"doc_id": {"$in": ["np2"]}}]}'], ["np1", "np2"]),
    ],
)
def test_query_where_operators_on_the_command_line(
    prompted: RunConfig, tmp_path: Path, flags: list[str], expected: list[str]
) -> None:
    args = ["query", "arrays", "--sink", prompted.sink.uri, "--collection", "docs", "--json"]
    where = [part for flag in flags for part in ("--where", flag)]
    done = cli(*args, *where, "-k", "6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(h["doc_id"] for h in json.loads(done.stdout)) == expected


def test_query_where_on_a_field_no_chunk_has_names_the_fields_there(
    prompted: RunConfig, tmp_path: Path
) -> None:
    args = ["query", "arrays", "--sink", prompted.sink.uri, "--collection", "docs"]
    done = cli(*args, "--where", "metadata.year>=2020", cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    message = " ".join(done.stderr.split())
    assert "'year'" in message and "the metadata fields there are pkg" in message, message


# -- ergonomics ---------------------------------------------------------------------------------


def test_documents_may_be_dicts_tuples_or_strings_and_bad_items_are_counted() -> None:
    assert as_document({"id": "a", "text": "t", "metadata": {"x": 1}}, 1) == Document(
        "a", "t", {"x": 1}
    )
    assert as_document(("b", "t2"), 2) == Document("b", "t2")
    assert as_document((3, "t3", {"y": 2}), 3) == Document("3", "t3", {"y": 2})
    assert as_document("plain", 4).text == "plain" and len(as_document("plain", 4).id) == 32
    for bad, reason in [
        ({"id": "x"}, "no 'text' key"),
        ({"text": "t", "pkg": "x"}, "put them under 'metadata'"),
        (("a", 5), "text is int"),
        (42, "int is not a document"),
        ({"text": "t", "metadata": "m"}, "metadata is str"),
    ]:
        error = as_document(bad, 7)
        assert isinstance(error, RecordError) and (error.source, error.record) == (GIVEN, "#7")
        assert reason in error.reason


def test_backfill_takes_dicts_and_tuples_and_counts_a_bad_item(
    tmp_path: Path, fake_encoder: Any
) -> None:
    cfg = config("parquet", tmp_path)
    items: list[Any] = [*docs()[:3], ("t1", "a tuple document"), {"id": "bad"}]
    report = Pipeline(cfg, source=items, encoder=fake_encoder).run()
    assert (report.docs_read, report.docs_failed, report.chunks_embedded) == (4, 1, 4)
    assert report.docs_total == 5


def test_encode_takes_a_batch_size_a_prompt_and_normalize() -> None:
    texts = ["alpha", "beta gamma", "delta"]
    whole = embedpipe.encode(texts)
    assert np.allclose(embedpipe.encode(texts, batch_size=1), whole, atol=1e-5)
    prompted = embedpipe.encode(texts, prompt="query: ")
    assert not np.allclose(prompted, whole, atol=1e-3)
    raw = embedpipe.encode(texts, normalize=False)  # MiniLM normalises in its own last module
    assert raw.shape == whole.shape and np.allclose(raw, whole, atol=1e-5)
    assert embedpipe.encode([]).shape == (0, 384)
    with pytest.raises(ConfigError, match="batch_size=0"):
        embedpipe.encode(texts, batch_size=0)


def test_one_config_argument_type_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"sink:\n  uri: faiss:{tmp_path / 'i'}\n  collection: c\n")
    from_path = as_config(str(path), {"collection": "d"})
    from_object = as_config(load_config(path), {"collection": "d"})
    assert from_path == from_object and from_path.sink.collection == "d"
    assert as_config(from_path) is from_path
    with open_index(path) as index:
        assert index.config.sink.collection == "c"


def test_reconcile_names_a_foreign_point_by_its_id_and_deletes_it_only_with_repair(
    tmp_path: Path, fake_encoder: Any
) -> None:
    from qdrant_client import QdrantClient, models

    cfg = config("qdrant", tmp_path)
    Pipeline(cfg, source=docs(), encoder=fake_encoder).run()
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        physical = client.get_aliases().aliases[0].collection_name
        foreign = "3f9a1c52-7d7e-4c55-9a47-1e2b3c4d5e6f"
        point = models.PointStruct(id=foreign, vector=[0.1] * 32, payload={"page_content": "x"})
        client.upsert(physical, points=[point])
    finally:
        client.close()
    found = embedpipe.api.reconcile(cfg)
    assert found["orphaned"] == [f"point:{foreign}"] and not found["repaired"]
    assert embedpipe.api.reconcile(cfg)["orphaned"] == [f"point:{foreign}"]  # still there
    repaired = embedpipe.api.reconcile(cfg, repair=True)
    assert repaired["repaired"]
    assert embedpipe.api.reconcile(cfg)["orphaned"] == []
