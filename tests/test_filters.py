"""Metadata filters: the one definition of what a filter means (keys, values, any-of, AND), the
`--where` syntax, and FAISS's selector search that still returns k hits when k chunks pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedpipe.errors import ConfigError
from embedpipe.sinks.faiss import FaissSink
from embedpipe.sinks.filters import (
    Condition,
    Rows,
    conditions,
    parse,
    parse_where,
    payload_matches,
)
from tests.sinkkit import FP_A, embedded, filled, unit_vectors


def test_a_filter_is_one_condition_per_key_each_any_of_its_values() -> None:
    assert conditions({"doc_id": "a", "metadata.pkg": ["x", "y"]}) == (
        Condition("doc_id", ("a",)),
        Condition("metadata.pkg", ("x", "y")),
    )
    assert conditions(None) == conditions({}) == ()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"pkg": "x"}, r"cannot filter on 'pkg' \(did you mean metadata.pkg\?\): use doc_id"),
        ({"metadata.": "x"}, "cannot filter on 'metadata.'"),
        ({"text": "x"}, "cannot filter on 'text'"),
        ({"doc_id": []}, "lists no value"),
        ({"metadata.score": 0.5}, "values are strings, integers or booleans"),
        ({"metadata.x": None}, "values are strings, integers or booleans"),
    ],
)
def test_a_filter_that_cannot_be_matched_says_why(where: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        conditions(where)


def test_where_flags_and_keys_and_any_of_values_typed_both_ways() -> None:
    assert parse_where(["doc_id=a.md", "metadata.pkg=numpy,scipy", "chunk_index=0"]) == {
        "$and": [
            {"doc_id": {"$in": ["a.md"]}},
            {"metadata.pkg": {"$in": ["numpy", "scipy"]}},
            {"chunk_index": {"$in": ["0", 0]}},
        ]
    }
    assert parse_where(["metadata.ok=true"]) == {"metadata.ok": {"$in": ["true", True]}}
    metadata = ['{"pkg": "a"}', '{"pkg": "b"}', '{"pkg": "c"}']
    table = pa.table({"doc_id": ["a", "b", "c"], "metadata": metadata})
    both = parse(parse_where(["metadata.pkg=a,b", "metadata.pkg=b,c"]))
    assert Rows(table).mask(both).tolist() == [False, True, False]  # both flags hold: b only


@pytest.mark.parametrize("flag", ["doc_id", "=x", "doc_id=", "pkg=x"])
def test_a_malformed_where_flag_is_a_usage_error(flag: str) -> None:
    with pytest.raises(ConfigError):
        parse_where([flag])


def test_payload_matching_follows_qdrant_lists_nesting_and_types() -> None:
    payload = {"doc_id": "a", "metadata": {"tags": ["x", "y"], "n": 3, "deep": {"k": "v"}}}
    assert payload_matches(payload, conditions({"metadata.tags": "y", "doc_id": "a"}))
    assert payload_matches(payload, conditions({"metadata.deep.k": ["v", "w"]}))
    assert not payload_matches(payload, conditions({"metadata.n": "3"}))
    assert not payload_matches(payload, conditions({"metadata.missing": "x"}))


def test_rows_mask_a_table_with_metadata_as_json() -> None:
    table = pa.table(
        {
            "doc_id": ["a", "b", "c"],
            "chunk_index": pa.array([0, 1, 0], pa.int64()),
            "metadata": ['{"t": ["x"]}', '{"t": "y", "n": 1}', "{}"],
        }
    )
    rows = Rows(table)
    assert rows.mask(conditions({"chunk_index": 0})).tolist() == [True, False, True]
    assert rows.mask(conditions({"chunk_index": "0"})).tolist() == [False, False, False]
    assert rows.mask(conditions({"metadata.t": ["x", "y"]})).tolist() == [True, True, False]
    assert rows.mask(conditions({"metadata.t": "y", "doc_id": "a"})).tolist() == [False] * 3


@pytest.mark.parametrize("factory", ["IVF8,Flat", "PQ4x4", "HNSW8", "Flat"])
def test_faiss_returns_k_filtered_hits_whatever_the_index_type(
    tmp_path: Path, factory: str
) -> None:
    emb = embedded(400)  # 100 documents, 4 chunks each
    sink = filled(FaissSink(tmp_path, "docs", index_factory=factory, nprobe=1), emb, FP_A)
    query = unit_vectors(1, seed=7)[0]
    wanted = {"doc0", "doc50", "doc99"}
    hits = sink.search(query, k=10, filter={"doc_id": sorted(wanted)})
    assert len(hits) == 10  # 12 chunks pass: an IVF probing 1 list, or PQ, still finds 10
    assert {h.doc_id for h in hits} <= wanted
    exact = sorted(
        (i for i, c in enumerate(emb.chunks) if c.doc_id in wanted),
        key=lambda i: -float(emb.vectors[i] @ query),
    )
    if factory == "Flat":
        assert [h.chunk_id for h in hits] == [emb.chunks[i].id for i in exact[:10]]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
