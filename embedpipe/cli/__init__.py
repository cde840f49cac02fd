"""The `embedpipe` command: flags parsed into a config, the library called, results rendered.

`commands` defines the commands (`app`) and `main`; `running` the plumbing (one-line errors, exit
codes, a run with its progress and summary); `export` and `generations` the `export`, `eval`,
`promote` and `rollback` commands; `options` the shared flags; `render` what the operator reads;
`progress` the progress bar; `version` `--version`. No rules of its own.

`app` and `main` load lazily so that importing a submodule (render, progress) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedpipe.cli.commands import app, main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from embedpipe.cli import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'embedpipe.cli' has no attribute {name!r}")
