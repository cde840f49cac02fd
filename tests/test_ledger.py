"""The ledger alone (embedpipe/state/ledger.py) and the run's seen-set (planning.Seen), on a real SQLite
file in tmp_path: migrations, chunk states, the unchanged-document rule, generations, status,
stale chunks, and where the ledger lives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from embedpipe.durable import StateLock
from embedpipe.runs.planning import Seen
from embedpipe.state.ledger import (
    DONE,
    LEDGER_FILE,
    MIGRATIONS,
    PENDING,
    Ledger,
    Target,
    state_dir_for,
    target_key,
)
from embedpipe.types import Chunk

KEY = "faiss:/srv/index|docs"
LIVE, NEW, OTHER = Target(KEY, "aaaa1111"), Target(KEY, "bbbb2222"), Target(KEY, "cccc3333")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:  # type: ignore[misc]
    led = Ledger.in_dir(tmp_path / "state")
    yield led
    led.close()


def chunks(doc_id: str, n: int, digest: str = "h") -> list[Chunk]:
    return [Chunk(doc_id, i, f"{doc_id} {i}", [101, 102], 0, 1, f"{digest}{i}") for i in range(n)]


def done(ledger: Ledger, target: Target, *docs: tuple[str, int]) -> None:
    run = ledger.begin_run(target)
    for doc_id, n in docs:
        ledger.mark(target, run, chunks(doc_id, n), DONE)


def remember(ledger: Ledger, target: Target, doc_id: str, doc_hash: str, n_chunks: int) -> None:
    """What a run records after its writes: a document's hash and chunk count."""
    seen = Seen(ledger.path, target)
    seen.add(doc_id, doc_hash)
    seen.set_chunks(doc_id, n_chunks)
    seen.remember()
    seen.close()


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


# -- migrations ------------------------------------------------------------------------------


def test_migrations_from_an_empty_file_reach_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "state" / LEDGER_FILE
    Ledger(path).close()
    assert version(path) == len(MIGRATIONS)
    db = sqlite3.connect(path)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert {"targets", "runs", "chunks", "docs", "generations", "complete_docs"} <= names


def test_reopening_a_migrated_ledger_changes_nothing(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2))
    again = Ledger(ledger.path)
    try:
        assert version(ledger.path) == len(MIGRATIONS)
        assert sorted(again.chunk_ids(LIVE)) == ["a#0", "a#1"]
    finally:
        again.close()


def test_migrating_a_version_1_ledger_keeps_its_live_target_as_a_live_generation(
    tmp_path: Path,
) -> None:
    path = tmp_path / LEDGER_FILE
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO targets VALUES (?, ?, 'm', 8, 1.0)", (KEY, LIVE.fingerprint))
    db.commit()
    db.close()
    led = Ledger(path)
    try:
        assert version(path) == len(MIGRATIONS)
        assert [(g["fingerprint"], g["state"]) for g in led.generations(KEY)] == [
            (LIVE.fingerprint, "live")
        ]
    finally:
        led.close()


# -- chunk states ----------------------------------------------------------------------------


def test_pending_chunks_are_not_counted_as_done(ledger: Ledger) -> None:
    ledger.mark(LIVE, ledger.begin_run(LIVE), chunks("a", 3), PENDING)
    assert ledger.count(LIVE) == 0 and list(ledger.chunk_ids(LIVE)) == []
    assert ledger.count(LIVE, state=PENDING) == 3
    assert sorted(ledger.chunk_ids(LIVE, state=PENDING)) == ["a#0", "a#1", "a#2"]


def test_marking_pending_chunks_done_flips_them(ledger: Ledger) -> None:
    run = ledger.begin_run(LIVE)
    ledger.mark(LIVE, run, chunks("a", 3), PENDING)
    ledger.mark(LIVE, run, chunks("a", 2), DONE)
    assert sorted(ledger.chunk_ids(LIVE)) == ["a#0", "a#1"]
    assert list(ledger.chunk_ids(LIVE, state=PENDING)) == ["a#2"]
    assert ledger.count(LIVE, state=None) == 3


def test_chunks_are_kept_apart_by_fingerprint(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2))
    assert ledger.count(NEW, state=None) == 0 and ledger.doc_chunks(NEW, "a") == {}


def test_doc_chunks_gives_each_index_its_hash_and_state(ledger: Ledger) -> None:
    run = ledger.begin_run(LIVE)
    ledger.mark(LIVE, run, chunks("a", 2), DONE)
    ledger.mark(LIVE, run, chunks("a", 3, digest="x")[2:], PENDING)
    assert ledger.doc_chunks(LIVE, "a") == {0: ("h0", DONE), 1: ("h1", DONE), 2: ("x2", PENDING)}


def test_forget_removes_only_the_named_chunks(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 3))
    ledger.forget(LIVE, ["a#1"])
    assert sorted(ledger.chunk_ids(LIVE)) == ["a#0", "a#2"]


# -- the unchanged-document rule (complete_docs) ---------------------------------------------


def test_unchanged_doc_gives_the_chunk_count_when_every_chunk_is_done(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2))
    remember(ledger, LIVE, "a", "doc-hash", 2)
    assert ledger.unchanged_doc(LIVE, "a", "doc-hash") == 2


def test_unchanged_doc_is_none_while_a_chunk_is_pending(ledger: Ledger) -> None:
    run = ledger.begin_run(LIVE)
    ledger.mark(LIVE, run, chunks("a", 1), DONE)
    ledger.mark(LIVE, run, chunks("a", 2)[1:], PENDING)
    remember(ledger, LIVE, "a", "doc-hash", 2)
    assert ledger.unchanged_doc(LIVE, "a", "doc-hash") is None


def test_unchanged_doc_is_none_for_another_text(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2))
    remember(ledger, LIVE, "a", "doc-hash", 2)
    assert ledger.unchanged_doc(LIVE, "a", "edited-hash") is None


def test_unchanged_doc_is_none_when_a_chunk_is_missing(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2))
    remember(ledger, LIVE, "a", "doc-hash", 2)
    ledger.forget(LIVE, ["a#1"])
    assert ledger.unchanged_doc(LIVE, "a", "doc-hash") is None


def test_unchanged_doc_ignores_leftover_chunks_beyond_its_count(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 3))  # a#2 is left from a longer text, not deleted yet
    remember(ledger, LIVE, "a", "doc-hash", 2)
    assert ledger.unchanged_doc(LIVE, "a", "doc-hash") == 2


def test_unchanged_docs_lists_only_complete_documents(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2), ("b", 1))
    remember(ledger, LIVE, "a", "ha", 2)
    remember(ledger, LIVE, "b", "hb", 2)  # b's second chunk was never written
    assert list(ledger.unchanged_docs(LIVE)) == [("a", "ha", 2)]


# -- generations ------------------------------------------------------------------------------


def test_set_live_moves_the_live_pointer_to_the_new_generation(ledger: Ledger) -> None:
    ledger.set_live(LIVE, "m", 8)
    ledger.begin_generation(NEW, "m2", 16)
    done(ledger, NEW, ("a", 3))
    ledger.set_live(NEW, "m2", 16)
    assert ledger.live(KEY) is not None
    assert (ledger.live(KEY)["fingerprint"], ledger.live(KEY)["dim"]) == (NEW.fingerprint, 16)  # type: ignore[index]
    assert [g["fingerprint"] for g in ledger.generations(KEY) if g["state"] == "live"] == [
        NEW.fingerprint
    ]
    assert ledger.count(NEW) == 3


def test_set_live_keeps_a_generation_still_being_built(ledger: Ledger) -> None:
    ledger.set_live(LIVE, "m", 8)
    ledger.begin_generation(NEW, "m", 8)  # held or interrupted: resumable by its next run
    done(ledger, NEW, ("a", 2))
    ledger.begin_generation(OTHER, "m", 8)
    ledger.set_live(OTHER, "m", 8)
    assert ledger.count(NEW) == 2
    gen = ledger.generation(KEY, NEW.fingerprint)
    assert gen is not None and gen["state"] != "live"


def test_set_live_forgets_chunks_of_a_fingerprint_with_no_generation(ledger: Ledger) -> None:
    done(ledger, NEW, ("a", 2))  # written without begin_generation (an older ledger's rows)
    ledger.set_live(LIVE, "m", 8)
    assert ledger.count(NEW, state=None) == 0


def test_generations_lists_the_live_one_first_with_its_counts(ledger: Ledger) -> None:
    ledger.begin_generation(NEW, "m2", 16)
    done(ledger, NEW, ("a", 1))
    ledger.begin_generation(LIVE, "m", 8)
    done(ledger, LIVE, ("a", 2), ("b", 1))
    ledger.set_live(LIVE, "m", 8)
    gens = ledger.generations(KEY)
    assert [(g["fingerprint"], g["chunks"], g["documents"]) for g in gens] == [
        (LIVE.fingerprint, 3, 2),
        (NEW.fingerprint, 1, 1),
    ]
    assert [g["state"] == "live" for g in gens] == [True, False]
    assert gens[0]["promoted"] is not None and gens[1]["promoted"] is None


def test_generation_is_found_by_a_unique_prefix(ledger: Ledger) -> None:
    ledger.set_live(LIVE, "m", 8)
    ledger.begin_generation(NEW, "m2", 16)
    gen = ledger.generation(KEY, "bbbb")
    assert gen is not None and (gen["fingerprint"], gen["model"], gen["dim"]) == (
        NEW.fingerprint,
        "m2",
        16,
    )


def test_generation_with_an_ambiguous_prefix_is_none(ledger: Ledger) -> None:
    ledger.begin_generation(Target(KEY, "abc1"), "m", 8)
    ledger.begin_generation(Target(KEY, "abc2"), "m", 8)
    assert ledger.generation(KEY, "abc") is None
    assert ledger.generation(KEY, "abc2") is not None


def test_generation_unknown_to_the_ledger_is_none(ledger: Ledger) -> None:
    ledger.set_live(LIVE, "m", 8)
    assert ledger.generation(KEY, "ffff") is None
    assert ledger.generation("qdrant:/elsewhere|docs", "aaaa") is None


def test_documents_counts_those_with_a_done_chunk(ledger: Ledger) -> None:
    run = ledger.begin_run(LIVE)
    ledger.mark(LIVE, run, chunks("a", 2) + chunks("b", 1), DONE)
    ledger.mark(LIVE, run, chunks("c", 1), PENDING)
    assert ledger.documents(LIVE) == 2


# -- status ----------------------------------------------------------------------------------


def test_status_shows_a_run_whose_lock_is_free_as_interrupted_with_its_commit_time(
    ledger: Ledger,
) -> None:
    ledger.set_live(LIVE, "m", 8)
    run = ledger.begin_run(LIVE)
    ledger.mark(LIVE, run, chunks("a", 2), DONE)  # then the process died: no end_run
    (status,) = ledger.status()
    (last, *_) = status["runs"]
    assert last["id"] == run and last["outcome"] == "interrupted" and last["ended"] is None
    assert last["committed"] is not None and last["committed"] >= last["started"]
    assert (status["chunks"], status["documents"]) == (2, 1)


def test_status_shows_a_run_whose_lock_is_held_as_running(ledger: Ledger) -> None:
    ledger.set_live(LIVE, "m", 8)
    ledger.begin_run(LIVE)
    with StateLock(ledger.path.parent):
        (status,) = ledger.status()
    assert status["runs"][0]["outcome"] == "running"


def test_status_shows_an_ended_run_with_its_counts(ledger: Ledger) -> None:
    ledger.set_live(LIVE, "m", 8)
    run = ledger.begin_run(LIVE)
    ledger.end_run(run, "done", {"chunks_embedded": 5, "chunks_skipped": 2})
    (last, *_) = ledger.status()[0]["runs"]
    assert (last["outcome"], last["chunks_embedded"], last["chunks_skipped"]) == ("done", 5, 2)
    assert last["ended"] is not None and last["committed"] is None


# -- the run's seen-set ------------------------------------------------------------------------


def test_seen_refuses_a_second_document_with_the_same_id(ledger: Ledger) -> None:
    seen = Seen(ledger.path, LIVE)
    try:
        assert seen.add("a", "h1") is True
        assert seen.add("a", "h2") is False
    finally:
        seen.close()


def test_seen_is_private_to_its_connection(ledger: Ledger) -> None:
    one, other = Seen(ledger.path, LIVE), Seen(ledger.path, LIVE)
    try:
        one.add("a")
        assert other.add("a") is True
    finally:
        one.close()
        other.close()


def test_stale_is_the_chunks_beyond_a_seen_documents_new_count(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 3), ("b", 2))
    seen = Seen(ledger.path, LIVE)
    try:
        seen.add("a")
        seen.set_chunks("a", 1)
        assert sorted(seen.stale(full=False)) == ["a#1", "a#2"]  # b unlisted: kept
    finally:
        seen.close()


def test_stale_with_full_adds_every_chunk_of_an_unlisted_document(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 3), ("b", 2))
    seen = Seen(ledger.path, LIVE)
    try:
        seen.add("a")
        seen.set_chunks("a", 1)
        assert sorted(seen.stale(full=True)) == ["a#1", "a#2", "b#0", "b#1"]
    finally:
        seen.close()


def test_stale_keeps_a_seen_document_whose_count_is_unknown(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 2))
    seen = Seen(ledger.path, LIVE)
    try:
        seen.add("a")  # it failed to read: no chunk count
        assert seen.stale(full=True) == []
    finally:
        seen.close()


def test_stale_looks_only_at_its_own_generation(ledger: Ledger) -> None:
    done(ledger, NEW, ("b", 2))
    seen = Seen(ledger.path, LIVE)
    try:
        assert seen.stale(full=True) == []
    finally:
        seen.close()


def test_remember_records_documents_with_a_hash_and_a_count_only(ledger: Ledger) -> None:
    done(ledger, LIVE, ("a", 1), ("b", 1), ("c", 1))
    seen = Seen(ledger.path, LIVE)
    seen.add("a", "ha")
    seen.set_chunks("a", 1)
    seen.add("b")  # a known document that failed to read: no hash
    seen.set_chunks("b", 1)
    seen.add("c", "hc")  # admitted but never chunked: no count
    seen.remember()
    seen.close()
    assert list(ledger.unchanged_docs(LIVE)) == [("a", "ha", 1)]


# -- where the ledger lives --------------------------------------------------------------------


def test_a_local_sinks_state_goes_next_to_it(tmp_path: Path) -> None:
    assert state_dir_for(f"faiss:{tmp_path}/index", None) == tmp_path / "index.state"


def test_a_relative_local_sink_gets_an_absolute_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert state_dir_for("qdrant-edge:./idx", None) == tmp_path / "idx.state"


def test_an_explicit_state_dir_wins(tmp_path: Path) -> None:
    assert state_dir_for(f"faiss:{tmp_path}/index", "/var/lib/ep") == Path("/var/lib/ep")


def test_a_servers_state_is_named_by_host_and_port_without_credentials() -> None:
    where = state_dir_for("qdrant+https://admin:sekrit@db.example:6333/?api_key=KEY", None)
    assert where == Path(".embedpipe/state/db.example_6333")


def test_a_servers_state_includes_its_path_prefix() -> None:
    where = state_dir_for("qdrant+http://db.example:6333/team/a", None)
    assert where == Path(".embedpipe/state/db.example_6333_team_a")


def test_target_key_makes_a_local_path_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert target_key("faiss:./idx", "docs") == f"faiss:{tmp_path}/idx|docs"


def test_target_key_redacts_passwords_and_api_keys() -> None:
    key = target_key("qdrant+https://admin:sekrit@db.example:6333/?api_key=KEY", "docs")
    assert "sekrit" not in key and "KEY" not in key
    assert key == "qdrant+https://admin:***@db.example:6333/?api_key=***|docs"
