"""The promotion rule: when a new generation may replace the live one, and how the ledger's live
pointer is re-derived from what the sink serves. Written once; every engine's run calls it.

A new generation (a model or chunking change) replaces the live index only when it holds at
least `promote.min_fraction` of the live generation's documents, or the run is forced. Otherwise
it stays staged (complete, resumable) and the live index keeps serving: an empty or unmounted
source can never swap in an empty index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from embedpipe.sinks.base import Sink
from embedpipe.state.ledger import Ledger, Target


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a run's generation goes live, and why, in words for the operator."""

    promote: bool
    reason: str
    live_documents: int | None = None
    staged_documents: int | None = None
    in_place: bool = False  # an incremental run on the live generation: nothing to promote
    live_metrics: dict[str, float] = field(default_factory=dict)  # the quality gate's scores
    staged_metrics: dict[str, float] = field(default_factory=dict)
    hint: str | None = None  # what the operator can do when held, when not the documents rule's

    def to_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promote,
            "reason": self.reason,
            "live": {"documents": self.live_documents, **self.live_metrics},
            "staged": {"documents": self.staged_documents, **self.staged_metrics},
        }


def verdict(
    ledger: Ledger, target: Target, served: str | None, *, min_fraction: float, force: bool
) -> Verdict:
    """Decide whether the generation `target` names may go live; `served` is the fingerprint (or
    its prefix) the sink serves now. Call after the run's writes and deletes are committed."""
    live = ledger.live(target.key)
    if live is not None and live["fingerprint"] == target.fingerprint:
        return Verdict(True, "incremental run on the live generation", in_place=True)
    staged = ledger.documents(target)
    known = ledger.generation(target.key, target.fingerprint)
    if live is not None and known is not None and known["demoted"] and not force:
        return Verdict(
            False,
            f"an operator's rollback (or promote) took generation {target.fingerprint[:12]} off "
            "live, and a run does not undo that",
            ledger.documents(Target(target.key, live["fingerprint"])),
            staged,
            hint=f"run `embedpipe promote --to {target.fingerprint[:12]}` (or pass --force) to "
            "make it live again, or change the job's configuration to the live generation's",
        )
    if live is None:
        if served is None or target.fingerprint.startswith(served):
            return Verdict(True, "first generation of this index", None, staged)
        if force:
            return Verdict(True, "forced over a generation this ledger does not know", None, staged)
        return Verdict(
            False,
            f"the sink serves generation {served[:12]}, which the ledger does not know (another "
            "--state, or a lost state directory?), so it cannot tell what promoting would lose",
            None,
            staged,
        )
    held = ledger.documents(Target(target.key, live["fingerprint"]))
    if held == 0 or staged >= min_fraction * held:
        return Verdict(True, f"holds {staged} of the live {held} documents", held, staged)
    if force:
        return Verdict(True, f"forced with {staged} of the live {held} documents", held, staged)
    return Verdict(
        False,
        f"it holds {staged} of the {held} documents the live index serves "
        f"({staged / held:.0%}, below promote.min_fraction {min_fraction:.0%})",
        held,
        staged,
    )


def relink(ledger: Ledger, target_key: str, served: str | None) -> str | None:
    """Point the ledger's live pointer at the generation the sink serves, when the two disagree
    and the ledger knows that generation (a crash between the sink's swap and the ledger's
    `set_live` leaves them apart). Returns the fingerprint it relinked to, or None."""
    if served is None:
        return None
    live = ledger.live(target_key)
    if live is not None and live["fingerprint"].startswith(served):
        return None
    gen = ledger.generation(target_key, served)
    if gen is None:
        return None
    ledger.set_live(Target(target_key, gen["fingerprint"]), gen["model"], gen["dim"])
    return str(gen["fingerprint"])


def held_message(v: Verdict, fingerprint: str) -> str:
    """What the operator reads when a generation is held: by the quality gate (with both
    generations' scores), else by the rule that held it (the documents rule: then the source is
    the usual suspect; an operator's rollback: then `promote --to` brings it back)."""
    if v.staged_metrics or v.reason.startswith("the quality gate"):
        scores = ", ".join(
            f"{name} {v.staged_metrics[name]:.3f} vs live {v.live_metrics.get(name, 0):.3f}"
            for name in v.staged_metrics
        )
        return (
            f"The quality gate held the new generation {fingerprint[:12]}: {v.reason}"
            + (f" ({scores})" if scores else "")
            + ". The live index keeps serving; the new generation is kept staged. Check the "
            "model and the queries file, or run `embedpipe promote` (or pass --force) to "
            "promote it anyway"
        )
    hint = v.hint or "Check the source (empty or unmounted?), or pass --force to promote it anyway"
    return (
        f"Held the new generation {fingerprint[:12]}: {v.reason}. The live index keeps serving; "
        f"the new generation is kept staged, and a re-run resumes it. {hint}"
    )


def drop_generation(sink: Sink, ledger: Ledger, target: Target) -> None:
    """Drop a generation that is not live, crash-safely: the ledger marks it `dropping` first,
    the sink deletes it, then the ledger forgets it. A kill in between leaves a generation no
    command serves, promotes or compares; the next drop (`finish_drops`) completes it."""
    ledger.dropping(target)
    sink.drop(target.fingerprint)
    ledger.forget_generation(target)


def finish_drops(sink: Sink, ledger: Ledger, key: str) -> list[str]:
    """Complete the drops a crash interrupted (generations marked `dropping`); returns their
    fingerprints."""
    left = [g["fingerprint"] for g in ledger.generations(key) if g["state"] == "dropping"]
    for fingerprint in left:
        drop_generation(sink, ledger, Target(key, fingerprint))
    return left
