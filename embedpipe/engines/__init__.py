"""Execution engines: where chunking, encoding and writing run. One protocol (`Engine`); the
rules (runs/planning.py) and the commit order (runs/commit.py) are the same for every engine.

Adding an engine: a module with a class implementing `Engine.stream`, and a line in `engine_for`.
"""

from __future__ import annotations

from embedpipe.engines.base import Engine, RunContext


def engine_for(name: str) -> Engine:
    """The engine a config names; Ray is imported only when asked for."""
    if name == "ray":
        from embedpipe.engines.ray import RayEngine

        return RayEngine()
    from embedpipe.engines.local import LocalEngine

    return LocalEngine()


__all__ = ["Engine", "RunContext", "engine_for"]
