"""Execution engines: where chunking, encoding and writing run. One protocol (`Engine`); the
rules (runs/planning.py) and the commit order (runs/commit.py) are the same for every engine.

Adding an engine: a module with a class implementing `Engine.stream`, and a line in
`registry.ENGINES` (and its name in `RunConfig.engine`, which a test checks).

Importing this package stays cheap: `Engine` and `RunContext` (base.py) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedpipe.engines.registry import ENGINES, engine_for

if TYPE_CHECKING:
    from embedpipe.engines.base import Engine, RunContext

__all__ = ["ENGINES", "Engine", "RunContext", "engine_for"]


def __getattr__(name: str) -> Any:
    if name in ("Engine", "RunContext"):
        from embedpipe.engines import base

        return getattr(base, name)
    raise AttributeError(f"module 'embedpipe.engines' has no attribute {name!r}")
