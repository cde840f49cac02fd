"""The promotion step's rule (embedpipe/promotion/__init__.py: verdict, relink, held_message),
on a real ledger in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedpipe.config import SinkConfig
from embedpipe.promotion import held_message, relink, verdict
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Sink
from embedpipe.state.ledger import DONE, Ledger, Target
from embedpipe.types import Chunk

KEY = "faiss:/srv/index|docs"
LIVE, NEW = Target(KEY, "aaaa1111"), Target(KEY, "bbbb2222")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:  # type: ignore[misc]
    led = Ledger.in_dir(tmp_path / "state")
    yield led
    led.close()


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    return open_sink(SinkConfig(uri=f"faiss:{tmp_path / 'index'}", collection="docs"))


def built(ledger: Ledger, target: Target, n_docs: int) -> None:
    """A generation with one done chunk for each of n_docs documents."""
    ledger.begin_generation(target, "m", 8)
    docs = [Chunk(f"d{i}", 0, "t", [1], 0, 1, "h") for i in range(n_docs)]
    ledger.mark(target, ledger.begin_run(target), docs, DONE)


def live(ledger: Ledger, target: Target, n_docs: int) -> None:
    built(ledger, target, n_docs)
    ledger.set_live(target, "m", 8)


# -- verdict ---------------------------------------------------------------------------------


def test_first_generation_promotes(ledger: Ledger) -> None:
    built(ledger, NEW, 3)
    v = verdict(ledger, NEW, None, min_fraction=0.9, force=False)
    assert v.promote and v.reason == "first generation of this index" and v.staged_documents == 3


def test_first_generation_promotes_when_the_sink_already_serves_it(ledger: Ledger) -> None:
    built(ledger, NEW, 3)  # a crash after the sink's swap, before the ledger's
    assert verdict(ledger, NEW, NEW.fingerprint[:4], min_fraction=0.9, force=False).promote


def test_incremental_run_on_the_live_generation_promotes_in_place(ledger: Ledger) -> None:
    live(ledger, LIVE, 10)
    v = verdict(ledger, LIVE, LIVE.fingerprint, min_fraction=0.9, force=False)
    assert v.promote and v.reason == "incremental run on the live generation"


def test_new_generation_with_enough_documents_promotes(ledger: Ledger) -> None:
    live(ledger, LIVE, 10)
    built(ledger, NEW, 9)
    v = verdict(ledger, NEW, LIVE.fingerprint, min_fraction=0.9, force=False)
    assert v.promote and (v.live_documents, v.staged_documents) == (10, 9)


def test_new_generation_below_min_fraction_is_held_with_the_reason(ledger: Ledger) -> None:
    live(ledger, LIVE, 10)
    built(ledger, NEW, 3)
    v = verdict(ledger, NEW, LIVE.fingerprint, min_fraction=0.9, force=False)
    assert not v.promote
    assert v.reason == (
        "it holds 3 of the 10 documents the live index serves (30%, below promote.min_fraction 90%)"
    )
    assert v.to_dict() == {
        "promoted": False,
        "reason": v.reason,
        "live": {"documents": 10},
        "staged": {"documents": 3},
    }


def test_held_message_names_the_generation_and_the_way_out(ledger: Ledger) -> None:
    live(ledger, LIVE, 10)
    v = verdict(ledger, NEW, LIVE.fingerprint, min_fraction=0.9, force=False)
    message = held_message(v, NEW.fingerprint)
    assert message.startswith(f"Held the new generation {NEW.fingerprint}: it holds 0 of the 10")
    assert "--force" in message and "live index keeps serving" in message


def test_force_promotes_a_generation_below_min_fraction(ledger: Ledger) -> None:
    live(ledger, LIVE, 10)
    built(ledger, NEW, 3)
    v = verdict(ledger, NEW, LIVE.fingerprint, min_fraction=0.9, force=True)
    assert v.promote and v.reason == "forced with 3 of the live 10 documents"


def test_a_served_generation_the_ledger_does_not_know_holds_the_new_one(ledger: Ledger) -> None:
    built(ledger, NEW, 3)
    v = verdict(ledger, NEW, "ffff9999", min_fraction=0.9, force=False)
    assert not v.promote
    assert "serves generation ffff9999, which the ledger does not know" in v.reason


def test_force_promotes_over_a_served_generation_the_ledger_does_not_know(ledger: Ledger) -> None:
    built(ledger, NEW, 3)
    v = verdict(ledger, NEW, "ffff9999", min_fraction=0.9, force=True)
    assert v.promote and v.reason.startswith("forced over a generation")


# -- relink ----------------------------------------------------------------------------------


def test_relink_points_the_ledger_at_the_known_generation_the_sink_serves(ledger: Ledger) -> None:
    live(ledger, LIVE, 2)
    built(ledger, NEW, 2)  # promoted by the sink; the ledger's set_live never ran
    assert relink(ledger, KEY, NEW.fingerprint[:4]) == NEW.fingerprint
    assert ledger.live(KEY) is not None and ledger.live(KEY)["fingerprint"] == NEW.fingerprint  # type: ignore[index]
    assert ledger.count(NEW) == 2


def test_no_relink_when_the_ledger_already_agrees(ledger: Ledger) -> None:
    live(ledger, LIVE, 2)
    assert relink(ledger, KEY, LIVE.fingerprint[:4]) is None


def test_no_relink_to_a_generation_the_ledger_does_not_know(ledger: Ledger) -> None:
    live(ledger, LIVE, 2)
    assert relink(ledger, KEY, "ffff9999") is None
    assert ledger.live(KEY)["fingerprint"] == LIVE.fingerprint  # type: ignore[index]


def test_no_relink_when_the_sink_serves_nothing(ledger: Ledger) -> None:
    live(ledger, LIVE, 2)
    assert relink(ledger, KEY, None) is None
