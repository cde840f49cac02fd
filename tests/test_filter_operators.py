"""Issue 25 item 5: every filter operator on every sink (real Qdrant Edge, qdrant-client local
mode, FAISS, Parquet and Postgres), each against an answer worked out by hand on a six-document
corpus with numeric, date and string (and list) metadata; a filter on a field no chunk has is an
error naming it and the fields there, not an empty result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedpipe.errors import ConfigError
from embedpipe.sinks.filters import parse_where
from embedpipe.types import Chunk, Embedded
from tests.pgkit import pg_server  # noqa: F401 (fixture `pg`)
from tests.sinkkit import FP_A, SINK_KINDS, filled, make_sink, unit_vectors

# doc -> metadata. d4's time is 2023-06-30T22:00Z; d5 has no year and a date that is no date.
CORPUS: dict[str, dict[str, Any]] = {
    "d0": {"year": 2019, "when": "2019-06-30", "team": "ops", "score": 0.5},
    "d1": {"year": 2020, "when": "2020-01-01", "team": "sre", "score": 1.5},
    "d2": {"year": 2021, "when": "2021-03-04T10:00:00Z", "team": ["ops", "dev"], "score": 2.5},
    "d3": {"year": 2022, "when": "2022-12-31", "team": "dev", "score": 3.5},
    "d4": {"year": 2023, "when": "2023-07-01T00:00:00+02:00", "team": "sre", "score": 4.5},
    "d5": {"when": "someday", "team": "ops", "score": -1},
}

# filter -> the documents that pass it, worked out by hand from CORPUS
CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"metadata.year": {"$gt": 2020}}, {"d2", "d3", "d4"}),
    ({"metadata.year": {"$gte": 2020}}, {"d1", "d2", "d3", "d4"}),
    ({"metadata.year": {"$lt": 2021}}, {"d0", "d1"}),
    ({"metadata.year": {"$lte": 2021}}, {"d0", "d1", "d2"}),
    ({"metadata.year": {"$gte": 2020, "$lt": 2022}}, {"d1", "d2"}),
    ({"metadata.score": {"$gt": 1.5, "$lte": 4}}, {"d2", "d3"}),
    ({"metadata.score": {"$lt": 0}}, {"d5"}),
    ({"metadata.when": {"$gte": "2021-01-01"}}, {"d2", "d3", "d4"}),
    ({"metadata.when": {"$lt": "2020-01-01"}}, {"d0"}),
    ({"metadata.when": {"$lt": "2023-07-01"}}, {"d0", "d1", "d2", "d3", "d4"}),
    ({"metadata.when": {"$gt": "2021-03-04T09:59:59Z"}}, {"d2", "d3", "d4"}),
    ({"metadata.when": {"$gt": "2021-03-04T10:00:00Z"}}, {"d3", "d4"}),
    ({"metadata.team": "dev"}, {"d2", "d3"}),
    ({"metadata.team": {"$eq": "sre"}}, {"d1", "d4"}),
    ({"metadata.team": {"$ne": "ops"}}, {"d1", "d3", "d4"}),
    ({"metadata.team": {"$in": ["sre", "dev"]}}, {"d1", "d2", "d3", "d4"}),
    ({"metadata.team": {"$nin": ["ops", "sre"]}}, {"d3"}),
    ({"metadata.year": {"$ne": 2020}}, {"d0", "d2", "d3", "d4", "d5"}),
    ({"$or": [{"metadata.team": "sre"}, {"metadata.year": {"$lt": 2020}}]}, {"d0", "d1", "d4"}),
    (
        {"$and": [{"metadata.year": {"$gte": 2020}}, {"metadata.team": {"$ne": "sre"}}]},
        {"d2", "d3"},
    ),
    ({"$not": {"metadata.year": {"$gte": 2021}}}, {"d0", "d1", "d5"}),
    ({"$not": {"$or": [{"metadata.team": "ops"}, {"metadata.year": 2022}]}}, {"d1", "d4"}),
    ({"doc_id": {"$ne": "d0"}, "metadata.year": {"$lt": 2021}}, {"d1"}),
    (
        {
            "$or": [
                {"doc_id": ["d5"]},
                {"$and": [{"metadata.team": "ops"}, {"metadata.year": 2021}]},
            ]
        },
        {"d2", "d5"},
    ),
]


def corpus() -> Embedded:
    docs = sorted(CORPUS)
    chunks = [
        Chunk(
            doc_id=d,
            index=0,
            text=f"text of {d}",
            token_ids=[1],
            start=0,
            end=9,
            content_hash=f"h{d}",
            metadata=CORPUS[d],
        )
        for d in docs
    ]
    return Embedded(chunks, unit_vectors(len(docs), seed=3))


@pytest.fixture(scope="module", params=SINK_KINDS)
def sink(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "postgres":
        request.getfixturevalue("pg")
    root = tmp_path_factory.mktemp(f"filters-{request.param}")
    filled_sink = filled(make_sink(request.param, root), corpus(), FP_A)
    yield filled_sink
    filled_sink.close_served() if hasattr(filled_sink, "close_served") else None


def passing(sink: Any, filter: dict[str, Any]) -> set[str]:
    hits = sink.search(np.asarray(unit_vectors(1, seed=9)[0]), k=10, filter=filter)
    return {h.doc_id for h in hits}


@pytest.mark.parametrize(("filter", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_each_operator_keeps_exactly_the_documents_worked_out_by_hand(
    sink: Any, filter: dict[str, Any], expected: set[str]
) -> None:
    assert passing(sink, filter) == expected


WHERE = [
    (["metadata.year>2020"], {"d2", "d3", "d4"}),
    (["metadata.year>=2020", "metadata.year<2022"], {"d1", "d2"}),
    (["metadata.when<=2020-01-01"], {"d0", "d1"}),
    (["metadata.team!=ops"], {"d1", "d3", "d4"}),
    (["metadata.team=ops,sre"], {"d0", "d1", "d2", "d4", "d5"}),
    (["metadata.team!=ops,sre"], {"d3"}),
    (["metadata.team=sre|metadata.year<2020"], {"d0", "d1", "d4"}),
    (["!metadata.year>=2021"], {"d0", "d1", "d5"}),
    (["metadata.score<=0.5"], {"d0", "d5"}),
    (['{"$or": [{"doc_id": "d3"}, {"metadata.year": {"$lte": 2019}}]}'], {"d0", "d3"}),
]


@pytest.mark.parametrize(("flags", "expected"), WHERE, ids=[" ".join(w[0]) for w in WHERE])
def test_where_flags_keep_the_documents_worked_out_by_hand(
    sink: Any, flags: list[str], expected: set[str]
) -> None:
    assert passing(sink, parse_where(flags)) == expected


def test_a_filter_on_a_field_no_chunk_has_names_it_and_the_fields_there(sink: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        passing(sink, {"$or": [{"metadata.team": "ops"}, {"metadata.yeer": {"$gte": 2020}}]})
    message = str(caught.value)
    assert "'yeer'" in message
    assert "score, team, when, year" in message


def test_a_field_some_chunks_lack_is_no_error(sink: Any) -> None:
    assert passing(sink, {"metadata.year": {"$lt": 0}}) == set()  # d5 has no year: not an error


def test_an_empty_index_answers_a_filter_on_any_field_with_nothing(tmp_path: Path) -> None:
    kind = "faiss"
    empty = make_sink(kind, tmp_path)
    filled(empty, Embedded([], np.zeros((0, 16), np.float32)), FP_A)
    assert empty.search(unit_vectors(1)[0], k=3, filter={"metadata.any": 1}) == []


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"metadata.year": {"$gte": "soon"}}, r"a range takes a number or an ISO 8601 date"),
        ({"metadata.year": {"$between": [1, 2]}}, r"unknown operator '\$between'"),
        ({"$xor": []}, r"unknown filter operator '\$xor'"),
        ({"$or": []}, r"\$or takes a non-empty list"),
        ({"metadata.team": {"$ne": ["a", "b"]}}, r"\$ne on 'metadata.team' takes one value"),
        ({"year": {"$gt": 1}}, r"did you mean metadata.year"),
    ],
)
def test_a_filter_that_cannot_be_matched_is_refused_before_any_search(
    filter: dict[str, Any], message: str
) -> None:
    from embedpipe.sinks.filters import parse

    with pytest.raises(ConfigError, match=message):
        parse(filter)


@pytest.mark.parametrize("flag", ["metadata.year>", "year>=x", "metadata.year>=soon", "{bad"])
def test_a_bad_where_flag_says_how_to_write_one(flag: str) -> None:
    with pytest.raises(ConfigError, match=r"--where|cannot compare|did you mean"):
        parse_where([flag])
