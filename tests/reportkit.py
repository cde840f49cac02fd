"""What the metrics, log and report tests share: a RunReport with every counter set, and one real
backfill through the CLI with JSON logs, a report and a metrics file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from embedpipe import logs
from embedpipe.cli import app
from embedpipe.types import RecordError, RunReport

FILES = {
    "a.md": "The json module encodes Python objects as JSON text.\n\nUse json.dumps and json.loads.",
    "b.md": "Knead the dough for ten minutes, let it rise for an hour, then bake.",
    "c.txt": "Simmer onions, carrots and celery in stock; season with salt and pepper.",
}


def report(outcome: str = "done", **kwargs: Any) -> RunReport:
    """A finished run of collection docs: 40 chunks embedded in 2 s, one record error."""
    r = RunReport(
        collection="docs",
        outcome=outcome,
        chunks_embedded=40,
        chunks_skipped=2,
        chunks_deleted=1,
        tokens_embedded=4000,
        seconds=2.0,
        **kwargs,
    )
    r.errors.append(RecordError("corpus", "bad.txt", "not UTF-8 text"))
    return r


# The one CLI backfill of this test session, once a test has asked for it.
_CLI_RUN: dict[str, Any] = {}


def cli_backfill(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real backfill through the CLI with JSON logs, a report and a metrics file, run once per
    session whichever test files ask for it: {"result": the CliRunner result, "tmp": its folder}."""
    if not _CLI_RUN:
        _CLI_RUN.update(_backfill(tmp_path_factory.mktemp("obs")))
    return _CLI_RUN


def _backfill(tmp: Path) -> dict[str, Any]:
    root = tmp / "corpus"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(text)
    (root / "bad.txt").write_bytes(b"caf\xe9")
    args = [
        "backfill",
        str(root),
        "--sink",
        f"faiss:{tmp / 'index'}",
        "--collection",
        "docs",
        "--report",
        str(tmp / "run.json"),
        "--metrics",
        str(tmp / "m.prom"),
        "--log-format",
        "json",
        "--max-batch-tokens",
        "256",
        "--precision",
        "fp32",
    ]
    result = CliRunner().invoke(app, args)
    logs.configure("text")
    return {"result": result, "tmp": tmp}
