"""Fault injection for the crash tests: named points where a run can be killed on purpose."""

from __future__ import annotations

import os
import signal

_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """EMBEDPIPE_CRASH_AT=NAME:N kills this process with SIGKILL the Nth time it passes NAME.

    Costs one environment lookup when unset. Points: plan, sink-write, ledger-commit, sink-delete,
    close (before the sink's close), swap (a sink moved its public name, the replaced generation
    not yet dropped), set-live (the sink serves the new generation, the ledger not yet told),
    drop (a generation being dropped is out of the sink's sight, not yet deleted), ray-wave.
    """
    spec = os.environ.get("EMBEDPIPE_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point == name:
        _crash_counts[name] = _crash_counts.get(name, 0) + 1
        if _crash_counts[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
