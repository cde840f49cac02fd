"""Compare what the ledger says is embedded with what the sink holds, generation by generation.

Every generation the ledger knows is compared: the live one and staged ones (a held re-embed, or
the first run that failed before it went live). The sink's live generation is the truth for the
live pointer: a crash between the sink's swap and the ledger's `set_live` is repaired by
relinking the ledger, never by touching the sink.

A generation whose drop a crash interrupted (marked `dropping`) is not compared: repair finishes
its drop. Otherwise repair never builds, swaps in or drops a generation: it deletes orphaned points from a
generation both sides know, forgets missing chunks in the ledger (so the next run re-embeds
them) and relinks the live pointer. When it cannot tell which side is right, it refuses.
"""

from __future__ import annotations

from typing import Any

from embedpipe.errors import EmbedpipeError
from embedpipe.promotion import finish_drops
from embedpipe.runs.commit import relink
from embedpipe.sinks.base import Sink
from embedpipe.sinks.sparse import sparse_kind
from embedpipe.state.ledger import PENDING, Ledger, Target


def reconcile(sink: Sink, ledger: Ledger, key: str, *, repair: bool) -> dict[str, Any]:
    """Drift between `ledger` and `sink` for the index `key`; with `repair`, make them agree."""
    served = sink.live_fingerprint()
    live = ledger.live(key)
    relink_to = None
    if served is not None and (live is None or not live["fingerprint"].startswith(served)):
        known = ledger.generation(key, served)
        if known is None:
            raise EmbedpipeError(
                f"Cannot decide: the sink {sink.uri} serves generation {served[:12]} of {key}, "
                f"which the ledger at {ledger.path} does not know. Nothing was changed; point "
                "--state at the ledger that built it, or re-run backfill to rebuild the index"
            )
        relink_to = known["fingerprint"]
    # A drop a crash interrupted is no generation to compare: repair finishes it.
    dropping = [g["fingerprint"] for g in ledger.generations(key) if g["state"] == "dropping"]
    if repair and dropping:
        finish_drops(sink, ledger, key)
    generations = [g for g in ledger.generations(key) if g["state"] != "dropping"]
    if relink_to is not None and live is not None:  # relinking forgets the replaced generation
        generations = [g for g in generations if g["fingerprint"] != live["fingerprint"]]
    if not generations and not dropping:
        raise EmbedpipeError(
            f"The ledger at {ledger.path} knows no index {key} and the sink serves none: "
            "nothing to reconcile"
        )
    if repair and relink_to is not None:
        relink(ledger, key, served)
        generations = [g for g in ledger.generations(key) if g["state"] != "dropping"]
    serving = relink_to or (live["fingerprint"] if live else None)
    compared = [_compare(sink, ledger, key, g, serving) for g in generations]
    if repair:
        for gen in compared:
            _repair(sink, ledger, key, gen)
    empty = {"in_ledger": 0, "in_sink": 0, "pending": 0, "missing": [], "orphaned": []}
    main = next((g for g in compared if g["live"]), compared[0] if compared else empty)
    return {
        **{k: main[k] for k in ("in_ledger", "in_sink", "pending", "missing", "orphaned")},
        "target": key,
        "relink": relink_to,
        "generations": compared,
        "dropping": dropping,
        "sparse": sparse_kind(sink.manifest()) if served is not None else None,
        "repaired": repair and (relink_to is not None or bool(dropping) or _drifted(compared)),
    }


def drifted(result: dict[str, Any]) -> bool:
    """Whether a reconcile result found anything to repair."""
    return result["relink"] is not None or _drifted(result["generations"])


def _drifted(generations: list[dict[str, Any]]) -> bool:
    return any(g["missing"] or g["orphaned"] for g in generations)


def _compare(
    sink: Sink, ledger: Ledger, key: str, gen: dict[str, Any], serving: str | None
) -> dict[str, Any]:
    """One generation: chunk ids done in the ledger vs present in the sink."""
    fp = gen["fingerprint"]
    target = Target(key, fp)
    in_sink = set(sink.chunk_ids(fp))
    done = set(ledger.chunk_ids(target))
    pending = set(ledger.chunk_ids(target, state=PENDING))
    return {
        "fingerprint": fp,
        "live": fp == serving,
        "state": gen["state"],
        "dim": gen["dim"],
        "in_ledger": len(done),
        "in_sink": len(in_sink),
        "pending": len(pending),
        "missing": sorted(done - in_sink),
        "orphaned": sorted(in_sink - done - pending),
    }


def _repair(sink: Sink, ledger: Ledger, key: str, gen: dict[str, Any]) -> None:
    """Delete this generation's orphans from the sink and forget its missing chunks."""
    target = Target(key, gen["fingerprint"])
    if gen["orphaned"]:  # the sink has this generation, so open() attaches to it
        sink.open(int(gen["dim"]), gen["fingerprint"])
        try:
            sink.delete(gen["orphaned"])
            sink.close(promote=False)
        except BaseException:
            sink.abort()
            raise
    if gen["missing"]:
        ledger.forget(target, gen["missing"])
