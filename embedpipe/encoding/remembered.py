"""What `auto` chose on this machine for a model, remembered so that every run chooses the same.

`model.backend: auto` and `model.precision: auto` are decided by capability and a parity check
(`embedpipe.encoding.precision.choose`), once per machine and model, then kept in `choices.json` in
embedpipe's cache directory: `$EMBEDPIPE_CACHE_DIR`, else `$XDG_CACHE_HOME/embedpipe`, else
`~/.cache/embedpipe`. The key names the machine (architecture, CPU model, native bf16, the torch,
transformers and OpenVINO versions), the model (its files' hash and pooling) and what was asked;
another CPU, a library upgrade or another model decides afresh. Delete the file to decide again.
Exported OpenVINO models live beside it (`embedpipe.encoding.openvino`).

A cache that cannot be written is no error: the run decides afresh and the log says why.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import xxhash

from embedpipe.durable import atomic_write

log = logging.getLogger(__name__)

CHOICES_FILE = "choices.json"
# Bumped when the rules in embedpipe.encoding.precision change, so older decisions are not reused.
RULES_VERSION = 1


def cache_dir() -> Path:
    """embedpipe's cache directory (exported models, remembered choices); not created here."""
    if env := os.environ.get("EMBEDPIPE_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embedpipe"


def package_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed (no import)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` says."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine(native_bf16: bool) -> dict[str, Any]:
    """What about this machine and its libraries can change a choice."""
    return {
        "arch": platform.machine(),
        "cpu": cpu_name(),
        "native_bf16": native_bf16,
        **{lib: package_version(lib) for lib in ("torch", "transformers", "openvino")},
        "rules": RULES_VERSION,
    }


@dataclass(frozen=True, slots=True)
class Remembered:
    """A remembered choice: backend, precision, the reason given then, and when."""

    backend: str
    precision: str
    reason: str
    decided: str


class Choices:
    """The remembered choices in one JSON file (`cache_dir()/choices.json` by default)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / CHOICES_FILE

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        """A short stable key for `parts` (machine, model, what was asked)."""
        blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
        return xxhash.xxh3_128_hexdigest(blob)

    def recall(self, parts: dict[str, Any]) -> Remembered | None:
        """The choice remembered for `parts`, None when there is none (or the file is unreadable)."""
        entry = self._read().get(self.key(parts))
        if not isinstance(entry, dict):
            return None
        try:
            return Remembered(**entry["choice"])
        except (KeyError, TypeError):
            return None

    def remember(self, parts: dict[str, Any], backend: str, precision: str, reason: str) -> None:
        """Keep a choice for `parts`; a cache that cannot be written only costs a log line."""
        today = dt.date.today().isoformat()
        entries = self._read()
        entries[self.key(parts)] = {
            "key": parts,
            "choice": {
                "backend": backend,
                "precision": precision,
                "reason": reason,
                "decided": today,
            },
        }
        text = json.dumps(entries, indent=1, sort_keys=True, ensure_ascii=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda f: f.write(text.encode()))
        except OSError as exc:
            log.warning("could not remember the precision choice in %s: %s", self.path, exc)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
