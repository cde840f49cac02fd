"""What the tests of a whole command share: the embedpipe command as its own process, and ways
to read what it printed and left on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests import zygote

FRESH = os.environ.get("EMBEDPIPE_TEST_FRESH") == "1"


def start(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> zygote.Command | subprocess.Popen[str]:
    """`embedpipe ARGS` started as its own process (forked from the test command server, see
    tests/zygote.py): its pid, signals, exit status, stdout and stderr are its own."""
    env = dict(os.environ if env is None else env)
    if FRESH:
        return subprocess.Popen(
            [sys.executable, "-m", "embedpipe", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    return zygote.server().start(list(args), env, cwd or Path.cwd())


def embedpipe(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`embedpipe ARGS` run to its end as its own process, as `subprocess.run` reports it."""
    proc = start(*args, env=env, cwd=cwd)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(9)
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(["embedpipe", *args], proc.returncode, stdout, stderr)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The embedpipe command as cron runs it, offline, on a 200-column terminal width."""
    return embedpipe(*args, cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})


def flat(text: str) -> str:
    """Text with its line wrapping undone, for matching messages the terminal wrapped."""
    return " ".join(text.split())


def tree(root: Path) -> list[Path]:
    """Every path under `root`, itself excluded."""
    return sorted(root.rglob("*"))
