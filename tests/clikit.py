"""What the tests of a whole command share: the embedpipe command in a fresh interpreter, and
ways to read what it printed and left on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The embedpipe command in a fresh interpreter, as cron runs it."""
    return subprocess.run(
        [sys.executable, "-m", "embedpipe", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )  # fmt: skip


def flat(text: str) -> str:
    """Text with its line wrapping undone, for matching messages the terminal wrapped."""
    return " ".join(text.split())


def tree(root: Path) -> list[Path]:
    """Every path under `root`, itself excluded."""
    return sorted(root.rglob("*"))
