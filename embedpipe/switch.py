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
from embedpipe.ledger import Ledger, Target
from embedpipe.promotion import relink
from embedpipe.sinks.base import Sink

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
    it replaces becomes previous; previous generations past `keep_previous` are dropped."""
    relink(ledger, key, sink.live_fingerprint())
    gen = generation(ledger, key, which)
    if gen["state"] == "building":
        raise EmbedpipeError(
            f"Generation {gen['fingerprint'][:12]} of {key} is not complete: re-run the job that "
            "builds it (it resumes), then promote it"
        )
    before = ledger.live(key)
    if before is None or before["fingerprint"] != gen["fingerprint"]:
        sink.promote(gen["fingerprint"])
        target = Target(key, gen["fingerprint"])
        ledger.set_live(target, gen["model"], int(gen["dim"]))
        for fingerprint in ledger.previous_beyond(key, keep_previous):
            sink.drop(fingerprint)
            ledger.forget_generation(Target(key, fingerprint))
    already = before is not None and before["fingerprint"] == gen["fingerprint"]
    return {
        "target": key, "live": gen["fingerprint"], "model": gen["model"],
        "replaced": before["fingerprint"] if before and not already else None,
        "already_live": already,
    }  # fmt: skip
