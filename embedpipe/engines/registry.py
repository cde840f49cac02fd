"""The engine registry: one line per engine, its name as `engine:` takes it and its class.

An engine class is imported only when `engine_for` makes one (Ray only when asked for), so
reading the registry (the config's description of `engine`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedpipe.engines.base import Engine

# One line per engine: name -> "module:Class" of embedpipe.engines (the class takes no arguments).
ENGINES: dict[str, str] = {
    "local": "local:LocalEngine",  # threads on this machine
    "ray": "ray:RayEngine",  # Ray Data
}


def engine_for(name: str) -> Engine:
    """The engine a config names (RunConfig.engine is one of `ENGINES`)."""
    module, _, cls = ENGINES[name].partition(":")
    engine: Engine = getattr(importlib.import_module(f"embedpipe.engines.{module}"), cls)()
    return engine
