"""What the export layout tests share (tests/test_export_layouts.py for Qdrant,
tests/test_export_postgres_layouts.py for Postgres): six short documents with two user fields
(team, year), embedded once per module with the packaged model into Qdrant Edge, and the
LangChain embeddings that query them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import embedpipe
from embedpipe.config import RunConfig, load_config
from embedpipe.integrations.langchain import EmbedpipeEmbeddings

TEXTS = [
    ("pager", "ops", 2021, "Rotate the on-call pager every Monday and page the secondary."),
    ("deploy", "ops", 2023, "Deploy the service with a blue-green rollout and watch the errors."),
    ("backup", "ops", 2022, "Back up the database nightly and test a restore every month."),
    ("pricing", "sales", 2023, "Quote enterprise pricing per seat with a yearly discount."),
    ("leads", "sales", 2021, "Qualify inbound leads within a day and book a demo call."),
    ("hiring", "people", 2022, "Interview candidates in two rounds and reply within a week."),
]


def records() -> list[dict[str, Any]]:
    """TEXTS as records: id, text, metadata {team, year}."""
    return [
        {"id": doc, "text": text, "metadata": {"team": team, "year": year}}
        for doc, team, year, text in TEXTS
    ]


def config(uri: str) -> RunConfig:
    """A config of collection "docs" at `uri`, the model in fp32 on the CPU."""
    return load_config(
        None,
        {
            "sink": {"uri": uri, "collection": "docs"},
            "model": {"precision": "fp32", "device": "cpu"},
        },
    )


@pytest.fixture(scope="module", name="built")
def built_index(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """The six documents embedded with the packaged model into Qdrant Edge."""
    cfg = config(f"qdrant-edge:{tmp_path_factory.mktemp('edge') / 'index'}")
    assert embedpipe.backfill(records(), config=cfg).outcome == "done"
    return cfg


@pytest.fixture(scope="module", name="langchain_embeddings")
def langchain_query_embeddings(built: RunConfig) -> Iterator[EmbedpipeEmbeddings]:
    """The index's own model as LangChain embeddings (queries for every store)."""
    embeddings = EmbedpipeEmbeddings(sink=built.sink.uri, collection="docs", device="cpu")
    yield embeddings
    if embeddings.index is not None:
        embeddings.index.close()
