"""Choosing and switching generations outside a run: `promote` a staged (or kept previous)
generation regardless of the gate, `rollback` to the previous one, and the generation a name
means (live, staged, previous, or a fingerprint prefix) for `eval`.

A switch is the sink's atomic swap (symlink rename, alias move) followed by the ledger's live
pointer; a crash between the two is repaired from the sink (`promotion.relink`) by the next run,
switch or `reconcile --repair`, so exactly one generation is live and the ledger agrees.
"""

from __future__ import annotations

from typing import Any

from embedpipe.errors import EmbedpipeError
from embedpipe.promotion import drop_generation, finish_drops, relink
from embedpipe.sinks.base import Sink
from embedpipe.state.ledger import Ledger, Target

NAMED = ("live", "staged", "previous")


def generation(ledger: Ledger, key: str, which: str) -> dict[str, Any]:
    """The generation `which` names: live, staged / previous (the most recent), or a prefix."""
    gens = ledger.generations(key)
    if which in NAMED:
        found = [g for g in gens if g["state"] == which]
        found.sort(key=lambda g: g["promoted"] or g["created"], reverse=True)
    else:
        found = [g for g in gens if g["fingerprint"].startswith(which)]
    if not found or (which not in NAMED and len(found) > 1):
        have = ", ".join(f"{g['state']} {g['fingerprint'][:12]}" for g in gens) or "none"
        raise EmbedpipeError(
            f"No {'single ' if found else ''}generation '{which}' of {key} (the ledger has: {have}): "
            "name one by state (live, staged, previous) or by fingerprint"
        )
    return found[0]


def switch(sink: Sink, ledger: Ledger, key: str, which: str, keep_previous: int) -> dict[str, Any]:
    """Make the generation `which` names live: the sink swaps, then the ledger follows; the one
    it replaces becomes previous, marked demoted (no run promotes it again on its own);
    previous generations past `keep_previous` are dropped.

    Idempotent: `which` is resolved as the ledger names it before the ledger is re-derived from
    the sink, so running a switch that was killed after its swap again finishes it (the ledger
    follows the sink) instead of switching once more."""
    finish_drops(sink, ledger, key)
    named = generation(ledger, key, which)
    was = ledger.live(key)
    relinked = relink(ledger, key, sink.live_fingerprint()) is not None
    gen = ledger.generation(key, named["fingerprint"]) or named
    if gen["state"] == "building":
        raise EmbedpipeError(
            f"Generation {gen['fingerprint'][:12]} of {key} is not complete: re-run the job that "
            "builds it (it resumes), then promote it"
        )
    before = ledger.live(key)
    replaced = None
    if before is None or before["fingerprint"] != gen["fingerprint"]:
        check_data(sink, ledger, key, gen)
        sink.promote(gen["fingerprint"])
        ledger.set_live(Target(key, gen["fingerprint"]), gen["model"], int(gen["dim"]))
        replaced = before
    elif relinked and was is not None and was["fingerprint"] != gen["fingerprint"]:
        replaced = was  # a killed switch's swap was done: the ledger now follows it
    if replaced is not None:
        ledger.demote(Target(key, replaced["fingerprint"]))
    for fingerprint in ledger.previous_beyond(key, keep_previous):
        drop_generation(sink, ledger, Target(key, fingerprint))
    return {
        "target": key,
        "live": gen["fingerprint"],
        "model": gen["model"],
        "replaced": replaced["fingerprint"] if replaced else None,
        "already_live": replaced is None and before is not None,
    }


def check_data(sink: Sink, ledger: Ledger, key: str, gen: dict[str, Any]) -> None:
    """Refuse to swap in a generation whose data the sink no longer holds (deleted segments, a
    restore from an older backup): what the ledger lists as done must be in it, by the sink's
    cheap count, as a run's open checks it."""
    fingerprint = gen["fingerprint"]
    claimed = ledger.count(Target(key, fingerprint))
    held = sink.count(fingerprint)
    if held < claimed:
        raise EmbedpipeError(
            f"Generation {fingerprint[:12]} of {key}: the sink {sink.uri} holds {held:,} of the "
            f"{claimed:,} chunks the ledger at {ledger.path} lists (was its data deleted?). "
            "Nothing was switched; `embedpipe reconcile` shows the drift, and re-running the job "
            "that builds it (or `reconcile --repair` then that job) rebuilds it"
        )
