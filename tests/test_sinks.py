"""The Sink contract, once for every sink on real engines (Qdrant Edge, qdrant-client local mode,
FAISS, Parquet), and the registry: capabilities declared as data that match what each sink does.

What only one sink does stays in tests/test_sink_<name>.py.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedpipe.config import SinkConfig
from embedpipe.errors import ConfigError, SinkError
from embedpipe.sinks import (
    ACCEPTED,
    LOCAL_SCHEMES,
    SINKS,
    Sink,
    capabilities_for,
    open_sink,
    rebuild_sink,
)
from embedpipe.sinks.base import RemoteWriter
from embedpipe.types import Embedded
from tests.sinkkit import (
    DIM,
    FP_A,
    FP_B,
    FP_C,
    SINK_KINDS,
    chunks,
    embedded,
    filled,
    generations,
    make_sink,
    unit_vectors,
)

Make = Callable[..., Sink]


@pytest.fixture(params=SINK_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each sink kind in turn."""
    return str(request.param)


@pytest.fixture
def make(kind: str, tmp_path: Path) -> Iterator[Make]:
    """Makes sinks of `kind` on tmp_path (each call a new instance on the same place); every one
    is released (aborted) when the test ends."""
    made: list[Sink] = []

    def build(**options: Any) -> Sink:
        made.append(make_sink(kind, tmp_path, **options))
        return made[-1]

    yield build
    for sink in made:
        sink.abort()


def ids(emb: Embedded) -> list[str]:
    return sorted(c.id for c in emb.chunks)


def top(sink: Sink, vector: np.ndarray) -> str:
    """The chunk id of the best hit."""
    return sink.search(vector, k=1)[0].chunk_id


# -- writing and reading ---------------------------------------------------------------------


def test_write_then_search_ranks_by_cosine_with_the_payload(make: Make) -> None:
    emb = embedded(40)
    sink = filled(make(), emb)
    hits = sink.search(emb.vectors[17], k=5)
    expected = np.argsort(-(emb.vectors @ emb.vectors[17]))[:5]
    assert [h.chunk_id for h in hits] == [emb.chunks[i].id for i in expected]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    c = emb.chunks[17]
    assert (hits[0].doc_id, hits[0].chunk_index, hits[0].text, hits[0].metadata) == (
        c.doc_id,
        c.index,
        c.text,
        c.metadata,
    )


def test_search_with_vectors_gives_each_hit_its_stored_vector(make: Make) -> None:
    emb = embedded(40)
    sink = filled(make(), emb)
    by_id = {c.id: v for c, v in zip(emb.chunks, emb.vectors, strict=True)}
    hits = sink.search(
        emb.vectors[5], k=6, filter={"chunk_index": list(range(0, 40, 2))}, with_vectors=True
    )
    assert len(hits) == 6 and all(h.chunk_index % 2 == 0 for h in hits)
    for hit in hits:
        assert hit.vector is not None and hit.vector.dtype == np.float32
        np.testing.assert_allclose(hit.vector, by_id[hit.chunk_id], atol=1e-6)
    assert all(h.vector is None for h in sink.search(emb.vectors[5], k=3))


def test_rewriting_the_same_chunks_does_not_duplicate_and_the_last_write_wins(make: Make) -> None:
    sink = filled(make(), embedded(20))
    sink.open(DIM, FP_A)
    sink.write(embedded(20, seed=1))  # same chunk ids, new vectors
    sink.close()
    assert sorted(sink.chunk_ids()) == ids(embedded(20))
    hits = sink.search(unit_vectors(20, seed=1)[3], k=40)
    assert len(hits) == len({h.chunk_id for h in hits}) == 20
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_delete_removes_exactly_the_given_ids(make: Make) -> None:
    emb = embedded(20)
    sink = filled(make(), emb)
    gone = [c.id for c in emb.chunks[2:12]] + ["never#0"]  # more than one request of 7
    sink.open(DIM, FP_A)
    sink.delete(gone)
    sink.close()
    assert set(sink.chunk_ids()) == {c.id for c in emb.chunks} - set(gone)
    assert all(h.chunk_id not in gone for h in sink.search(emb.vectors[2], k=20))


def test_a_chunk_written_again_after_its_delete_is_back(make: Make) -> None:
    emb = embedded(4)
    sink = make()
    sink.open(DIM, FP_A)
    sink.write(emb)
    sink.delete([emb.chunks[0].id])
    sink.write(Embedded(emb.chunks[:1], emb.vectors[:1]))
    sink.close()
    assert sorted(sink.chunk_ids()) == ids(emb)


def test_search_before_any_run_says_to_run_embedpipe(make: Make) -> None:
    with pytest.raises(SinkError, match="run embedpipe first"):
        make().search(unit_vectors(1)[0], k=1)


@pytest.mark.parametrize("call", ["write", "delete"])
def test_a_change_before_open_says_to_open_first(make: Make, call: str) -> None:
    sink = make()
    with pytest.raises(SinkError, match=r"not open: call open\(dim, fingerprint\) first"):
        if call == "write":
            sink.write(embedded(1))
        else:
            sink.delete(["a#0"])


def test_dimension_mismatch_is_a_clear_error_and_data_survives(make: Make) -> None:
    emb = embedded(6)
    sink = filled(make(), emb)
    with pytest.raises(SinkError, match=r"dimension 16, the model gives 8: choose another"):
        sink.open(8, FP_A)
    sink.abort()
    assert top(sink, emb.vectors[1]) == emb.chunks[1].id


def test_a_second_writer_is_refused_until_the_first_closes(make: Make) -> None:
    first = make()
    first.open(DIM, FP_A)
    with pytest.raises(SinkError):
        make().open(DIM, FP_A)
    first.close()
    second = make()
    second.open(DIM, FP_A)
    second.write(embedded(2))
    second.close()
    assert len(list(second.chunk_ids())) == 2


# -- generations: in place, re-embed, promotion, resume -----------------------------------------


def test_reopen_with_the_same_fingerprint_attaches_in_place(make: Make) -> None:
    first = embedded(10, doc="first")
    sink = filled(make(), first)
    more = embedded(5, seed=9, doc="more")
    sink.open(DIM, FP_A)
    sink.write(more)
    assert len(list(sink.chunk_ids())) == 15  # the run sees its own writes
    sink.close()
    assert top(sink, more.vectors[0]) == more.chunks[0].id
    assert sorted(sink.chunk_ids(FP_A)) == sorted(ids(first) + ids(more))
    assert generations(sink) == {FP_A}


def test_writes_in_place_publish_even_without_promote(make: Make) -> None:
    sink = filled(make(), embedded(6))
    more = embedded(3, seed=4, doc="more")
    sink.open(DIM, FP_A)
    sink.write(more)
    sink.close(promote=False)
    assert top(sink, more.vectors[1]) == more.chunks[1].id


def test_a_new_fingerprint_is_invisible_until_close_then_swapped_and_the_old_dropped(
    make: Make,
) -> None:
    sink = filled(make(), embedded(10, doc="old"))
    assert sink.capabilities.aliases  # what makes a re-embed atomic
    new = embedded(10, seed=5, doc="new")
    sink.open(DIM, FP_B)
    sink.write(new)
    assert top(sink, new.vectors[0]).startswith("old")
    assert FP_A.startswith(sink.live_fingerprint() or "-")
    sink.close()
    assert top(sink, new.vectors[0]) == new.chunks[0].id
    assert generations(sink) == {FP_B}
    assert list(sink.chunk_ids(FP_A)) == []


def test_keep_previous_keeps_the_replaced_generation(make: Make) -> None:
    old = embedded(5, doc="old")
    sink = filled(make(keep_previous=True), old)
    filled(sink, embedded(5, seed=2, doc="new"), FP_B)
    assert generations(sink) == {FP_A, FP_B}
    assert sorted(sink.chunk_ids(FP_A)) == ids(old)


def test_close_without_promote_keeps_the_live_one_serving_until_a_later_promotion(
    make: Make,
) -> None:
    old = embedded(8, doc="old")
    new = embedded(8, seed=3, doc="new")
    sink = filled(make(), old)
    sink.open(DIM, FP_B)
    sink.write(new)
    sink.close(promote=False)
    assert top(sink, new.vectors[0]).startswith("old")
    assert FP_A.startswith(sink.live_fingerprint() or "-")
    assert sorted(sink.chunk_ids(FP_B)) == ids(new)  # staged, complete
    sink.open(DIM, FP_B)  # a later run (or `promote`) with nothing left to write
    sink.close()
    assert FP_B.startswith(sink.live_fingerprint() or "-")
    assert top(sink, new.vectors[0]) == new.chunks[0].id
    assert generations(sink) == {FP_B}


def test_abort_keeps_the_live_index_and_unfinished_writes_for_resume(make: Make) -> None:
    old = embedded(10)
    new = embedded(10, seed=3, doc="new")
    sink = filled(make(), old)
    sink.open(DIM, FP_B)
    sink.write(new)
    sink.abort()
    assert sorted(sink.chunk_ids()) == ids(old)
    assert top(sink, old.vectors[4]) == old.chunks[4].id
    sink.open(DIM, FP_B)  # the next run with that fingerprint resumes what was acknowledged
    assert sorted(sink.chunk_ids()) == ids(new)
    sink.close()
    assert sorted(sink.chunk_ids()) == ids(new)


def test_an_aborted_first_run_publishes_nothing_and_the_next_resumes_it(make: Make) -> None:
    emb = embedded(7)
    sink = make()
    sink.open(DIM, FP_A)
    sink.write(emb)
    sink.abort()
    assert sink.live_fingerprint() is None
    assert sorted(sink.chunk_ids(FP_A)) == ids(emb)
    sink.open(DIM, FP_A)
    sink.close()
    assert top(sink, emb.vectors[2]) == emb.chunks[2].id


def test_live_fingerprint_names_the_served_generation(make: Make) -> None:
    sink = make()
    assert sink.live_fingerprint() is None
    filled(sink, embedded(3))
    served = sink.live_fingerprint()
    assert served is not None and len(served) >= 12 and FP_A.startswith(served)
    filled(sink, embedded(3, seed=1), FP_B)
    assert FP_B.startswith(sink.live_fingerprint() or "-")


def test_chunk_ids_of_a_fingerprint_it_lacks_are_none_and_create_nothing(make: Make) -> None:
    sink = make()
    assert list(sink.chunk_ids(FP_C)) == [] and list(sink.chunk_ids()) == []
    filled(sink, embedded(4))
    assert list(sink.chunk_ids(FP_C)) == []
    assert generations(sink) == {FP_A}


def test_count_is_the_points_of_a_generation_and_zero_for_one_it_lacks(make: Make) -> None:
    sink = make()
    assert sink.count(FP_A) == 0
    filled(sink, embedded(12))
    sink.open(DIM, FP_A)
    sink.delete([c.id for c in chunks(12)[:3]])
    sink.close()
    sink.open(DIM, FP_B)  # a staged generation, its writes acknowledged, not closed
    sink.write(embedded(5, seed=1, doc="new"))
    sink.abort()
    assert (sink.count(FP_A), sink.count(FP_B), sink.count(FP_C)) == (9, 5, 0)
    assert generations(sink) == {FP_A, FP_B}


def test_a_kill_right_after_the_swap_leaves_the_new_generation_served(
    kind: str, make: Make, tmp_path: Path
) -> None:
    script = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from tests.sinkkit import FP_B, embedded, filled, make_sink
sink = filled(make_sink({kind!r}, Path({str(tmp_path)!r})), embedded(6, doc="old"))
os.environ["EMBEDPIPE_CRASH_AT"] = "swap:1"
filled(sink, embedded(6, seed=1, doc="new"), FP_B)
"""
    env = {k: v for k, v in os.environ.items() if k != "EMBEDPIPE_CRASH_AT"}
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert killed.returncode == -9, killed.stderr
    sink = make()
    assert FP_B.startswith(sink.live_fingerprint() or "-")
    assert generations(sink) == {FP_A, FP_B}  # the replaced one is not dropped yet
    assert top(sink, embedded(6, seed=1).vectors[0]) == chunks(6, "new")[0].id


# -- capabilities: declared as data, matching behaviour -----------------------------------------


def test_every_scheme_makes_a_sink_declaring_its_registry_capabilities(tmp_path: Path) -> None:
    for scheme, entry in SINKS.items():
        where = tmp_path / scheme if entry.capabilities.local_path else "//localhost:6333"
        sink = open_sink(SinkConfig(uri=f"{scheme}:{where}", collection="c"))
        assert sink.capabilities == entry.capabilities == capabilities_for(sink.uri), scheme
        assert sink.uri.partition(":")[0] == scheme
    assert not any(tmp_path.iterdir())  # nothing on disk (or on a server) before open()


def test_the_accepted_forms_and_local_schemes_come_from_the_registry() -> None:
    forms = [kind.form for kind in SINKS.values()]
    assert ", ".join(forms[:-1]) + " or " + forms[-1] == ACCEPTED
    assert tuple(s for s, k in SINKS.items() if k.capabilities.local_path) == LOCAL_SCHEMES
    assert set(LOCAL_SCHEMES) >= {"qdrant-edge", "qdrant", "faiss", "parquet"}
    assert capabilities_for("qdrant+https://h:6333") == SINKS["qdrant+https"].capabilities
    assert capabilities_for("pinecone://x") is None


@pytest.mark.parametrize("uri", ["pinecone://x", "qdrant", "faiss:", "/just/a/path"])
def test_open_sink_rejects_an_unknown_uri_listing_the_accepted_forms(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"qdrant:PATH, qdrant\+http://HOST:PORT.*faiss:DIR"):
        open_sink(SinkConfig(uri=uri))


def test_importing_sinks_does_not_import_qdrant_client_or_faiss() -> None:
    code = "import sys, embedpipe.sinks; print('qdrant_client' in sys.modules or 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_local_path_sinks_keep_everything_under_their_path(make: Make, tmp_path: Path) -> None:
    sink = filled(make(), embedded(3))
    if not sink.capabilities.local_path:  # a server's sink: nothing in the test's folder
        assert not any(tmp_path.rglob("*"))
        return
    assert sink.uri.partition(":")[2].startswith(str(tmp_path))
    assert any(tmp_path.rglob("*"))


def test_rebuildable_sinks_rebuild_from_what_they_keep_and_the_others_refuse(
    make: Make, tmp_path: Path
) -> None:
    emb = embedded(30)
    sink = filled(make(), emb)
    cfg = SinkConfig(uri=sink.uri, collection="docs")
    if sink.capabilities.rebuildable:
        before = sink.search(emb.vectors[5], k=5)
        rebuild_sink(cfg)
        assert sink.search(emb.vectors[5], k=5) == before
    else:
        with pytest.raises(SinkError, match="cannot be rebuilt"):
            sink.rebuild()
        with pytest.raises(ConfigError, match=r"cannot be rebuilt: only faiss:DIR keeps"):
            rebuild_sink(cfg)


def test_concurrent_writer_sinks_hand_out_a_picklable_writer_the_others_refuse(
    make: Make,
) -> None:
    old = embedded(4, doc="old")
    new = embedded(12, seed=5, doc="new")
    sink = filled(make(), old)
    with pytest.raises(SinkError):  # not open, or never
        sink.remote_writer()
    sink.open(DIM, FP_B)  # a re-embed: the remote writes must stay invisible until close
    if not sink.capabilities.concurrent_writers:
        with pytest.raises(SinkError, match=r"one process only|takes no concurrent writers"):
            sink.remote_writer()
        return
    sink.write(Embedded(new.chunks[:6], new.vectors[:6]))
    writer = pickle.loads(pickle.dumps(sink.remote_writer()))
    assert isinstance(writer, RemoteWriter)
    writer.write(Embedded(new.chunks[6:], new.vectors[6:]))
    writer.close()
    writer.close()
    assert top(sink, new.vectors[9]).startswith("old")
    sink.close()
    assert sorted(sink.chunk_ids()) == ids(new)
    assert top(sink, new.vectors[9]) == new.chunks[9].id


# -- filters: pushed down by every sink, the same answers --------------------------------------


def tagged(n: int = 40) -> Embedded:
    """`n` chunks of ten documents whose metadata has a package, a year (an int), tags (a list)
    and a nested field, to filter on."""
    emb = embedded(n)
    for i, c in enumerate(emb.chunks):
        c.metadata = {
            "pkg": ["numpy", "scipy", "pandas"][i % 3],
            "year": 2020 + i % 4,
            "tags": ["even", "all"] if i % 2 == 0 else ["all"],
            "info": {"lang": "en" if i < n // 2 else "de"},
        }
    return emb


def expected_ids(
    emb: Embedded, vector: np.ndarray, keep: Callable[[Any], bool], k: int
) -> list[str]:
    """What an exact search restricted to the chunks `keep` passes returns."""
    order = np.argsort(-(emb.vectors @ vector), kind="stable")
    return [emb.chunks[i].id for i in order if keep(emb.chunks[i])][:k]


FILTER_CASES: list[tuple[dict[str, Any], Callable[[Any], bool]]] = [
    ({"doc_id": "doc3"}, lambda c: c.doc_id == "doc3"),
    ({"doc_id": ["doc1", "doc7"]}, lambda c: c.doc_id in ("doc1", "doc7")),
    ({"chunk_index": 2}, lambda c: c.index == 2),
    ({"metadata.pkg": "scipy"}, lambda c: c.metadata["pkg"] == "scipy"),
    ({"metadata.year": [2021, 2023]}, lambda c: c.metadata["year"] in (2021, 2023)),
    ({"metadata.tags": "even"}, lambda c: "even" in c.metadata["tags"]),
    ({"metadata.info.lang": "de"}, lambda c: c.metadata["info"]["lang"] == "de"),
    (
        {"metadata.pkg": ["numpy", "pandas"], "chunk_index": [0, 1]},
        lambda c: c.metadata["pkg"] in ("numpy", "pandas") and c.index in (0, 1),
    ),
]


@pytest.mark.parametrize(
    ("where", "keep"), FILTER_CASES, ids=[str(where)[:40] for where, _ in FILTER_CASES]
)
def test_a_filter_returns_the_exact_top_k_among_the_chunks_it_passes(
    make: Make, where: dict[str, Any], keep: Callable[[Any], bool]
) -> None:
    emb = tagged()
    sink = filled(make(), emb)
    query = unit_vectors(1, seed=42)[0]
    hits = sink.search(query, k=6, filter=where)
    assert [h.chunk_id for h in hits] == expected_ids(emb, query, keep, 6)
    assert all(keep(next(c for c in emb.chunks if c.id == h.chunk_id)) for h in hits)


def test_a_string_never_matches_a_number_and_no_match_is_no_hits(make: Make) -> None:
    sink = filled(make(), tagged())
    query = unit_vectors(1, seed=1)[0]
    assert sink.search(query, k=5, filter={"metadata.year": "2021"}) == []
    assert sink.search(query, k=5, filter={"doc_id": "nope"}) == []
    assert len(sink.search(query, k=5, filter={"metadata.year": ["2021", 2021]})) == 5


def test_a_filter_on_an_unknown_key_says_which_keys_work(make: Make) -> None:
    sink = filled(make(), tagged(8))
    with pytest.raises(ConfigError, match=r"cannot filter on 'pkg' \(did you mean metadata.pkg"):
        sink.search(unit_vectors(1)[0], k=3, filter={"pkg": "numpy"})


def test_a_filter_sees_writes_in_place_and_not_deleted_chunks(make: Make) -> None:
    emb = tagged(12)
    sink = filled(make(), emb)
    sink.open(DIM, FP_A)
    sink.delete([c.id for c in emb.chunks if c.doc_id == "doc1"][:2])
    sink.close()
    hits = sink.search(emb.vectors[4], k=10, filter={"doc_id": "doc1"})
    assert sorted(h.chunk_id for h in hits) == ["doc1#2", "doc1#3"]


# -- reading back what is stored (export) -------------------------------------------------------


def test_points_read_back_every_chunk_with_its_payload_and_vector(make: Make) -> None:
    emb = tagged(30)
    sink = filled(make(), emb)
    read = [
        (c, v) for batch in sink.points() for c, v in zip(batch.chunks, batch.vectors, strict=True)
    ]
    by_id = {c.id: (c, v) for c, v in read}
    assert sorted(by_id) == ids(emb) and len(read) == 30
    for chunk, vector in zip(emb.chunks, emb.vectors, strict=True):
        got, stored = by_id[chunk.id]
        assert (got.doc_id, got.index, got.text, got.content_hash, got.metadata) == (
            chunk.doc_id,
            chunk.index,
            chunk.text,
            chunk.content_hash,
            chunk.metadata,
        )
        assert (got.start, got.end) == (chunk.start, chunk.end)
        assert float(stored @ vector) == pytest.approx(1.0, abs=1e-6)


def test_points_of_a_staged_generation_and_of_one_it_lacks(make: Make) -> None:
    sink = filled(make(), embedded(6, doc="old"))
    new = embedded(5, seed=2, doc="new")
    sink.open(DIM, FP_B)
    sink.write(new)
    sink.close(promote=False)
    staged = [c.id for batch in sink.points(FP_B) for c in batch.chunks]
    assert sorted(staged) == ids(new)
    assert list(sink.points(FP_C)) == []
    assert all(c.doc_id.startswith("old") for b in sink.points() for c in b.chunks)
