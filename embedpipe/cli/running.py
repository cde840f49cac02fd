"""The CLI's plumbing: a config that does not load is a usage error, every error is one line,
and one run is executed with its progress on stderr, its summary and its exit code.

Exit codes: 0 done (bad records skipped and reported), 1 failed, held or interrupted, 2 usage.
Colours: notes in the normal colour, warnings in yellow, errors in red.
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from embedpipe import api, logs
from embedpipe.cli import render
from embedpipe.cli.progress import Mode, RunProgress
from embedpipe.config import RunConfig, load_config
from embedpipe.errors import ConfigError, EmbedpipeError
from embedpipe.types import RunReport

T = TypeVar("T")
console = Console(stderr=True)  # progress, summaries, errors
out = Console()  # what a command answers: query hits, status, JSON
log = logging.getLogger("embedpipe.cli")
DEBUG = False  # --debug: tracebacks for errors, which are otherwise one line


class HelpGroup(TyperGroup):
    """Typer's command group, its --help and every command's shown without a value (typer
    would show `<bool>`: a flag takes none), and each command's summary in the group's list
    as one paragraph, whatever line breaks its docstring has."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag(super().get_help_option(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _flag(command.get_help_option(ctx))  # cached on the command: its own help uses it
            if command.short_help is None and command.help:
                command.short_help = summary(command.help)
        return command


def summary(help_text: str) -> str:
    """A docstring's first paragraph on one line: typer's command list keeps the docstring's
    line breaks, which wrapped the summary mid-sentence."""
    return " ".join(inspect.cleandoc(help_text).split("\n\n")[0].split())


def _flag(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


def load(path: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """The config from `path`, the environment and the flags; a usage error when it is wrong."""
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        usage(str(exc))


def usage(message: str) -> NoReturn:
    """Print a usage error and exit 2."""
    error(message)
    raise typer.Exit(2)


def guard(fn: Callable[[], T]) -> T:
    """`fn()`, its errors turned into one line and exit 2 (usage) or 1."""
    try:
        return fn()
    except ConfigError as exc:
        usage(str(exc))
    except EmbedpipeError as exc:
        if DEBUG:
            console.print_exception()
        error(str(exc))
        raise typer.Exit(1) from None


def error(message: str) -> None:
    """One red line on stderr, or an error event with --log-format json."""
    if logs.json_enabled():
        logs.event(log, "error", message, level=logging.ERROR)
    else:
        # One line however wide the terminal (grep-able in cron logs); the message is not markup.
        console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """One yellow line on stderr."""
    console.print(f"[yellow]{escape(message)}[/]", soft_wrap=True, highlight=False)


def progress_mode(*, quiet: bool) -> Mode:
    """A bar on a terminal, plain lines otherwise (cron), none when quiet or logging JSON."""
    if quiet or logs.json_enabled():
        return "off"
    return "bar" if console.is_terminal else "lines"


def execute(
    cfg: RunConfig,
    *,
    dry_run: bool,
    force: bool,
    log_format: str = "text",
    quiet: bool = False,
    every: float = 10.0,
) -> None:
    """Run `cfg` with progress on stderr, then the summary; exit 1 unless it was done."""
    if log_format not in ("text", "json"):
        usage(f"Unknown --log-format {log_format!r}: use text or json")
    logs.configure("json" if log_format == "json" else "text")
    stop = threading.Event()
    stop_on_signals(stop)
    with RunProgress(console, progress_mode(quiet=quiet), every) as shown:

        def work() -> RunReport:
            return api.run(
                cfg,
                progress=shown.update,
                dry_run=dry_run,
                force=force,
                stop=stop,
                raise_on_failure=False,
            )

        report = guard(work)
    began = report.run_id is not None  # else it failed before the run began: a lock, the ledger
    if began and not logs.json_enabled() and not quiet:  # JSON: the run_end event says it all
        render.print_summary(console, report)
    if report.outcome not in ("done", "dry-run"):
        error(report.reason or f"the run ended {report.outcome}")
        raise typer.Exit(1)
    if report.errors and (cfg.strict or report.docs_read == 0):
        error(f"{len(report.errors)} record(s) failed and --strict or nothing was read: exit 1")
        raise typer.Exit(1)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM: finish the batch in flight, then stop; a second one stops at once."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        warn(f"{signal.Signals(signum).name}: finishing the batch in flight, then stopping")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
