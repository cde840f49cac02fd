"""What the operator reads on the terminal (embedpipe/cli/render.py): the run summary's colours
and grouped record errors, and `status` with times, durations, outcomes and model names."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from embedpipe.cli import app, render
from embedpipe.types import NOT_LOADED, RecordError, RunReport

RED, YELLOW = "\x1b[31m", "\x1b[33m"


def rendered(r: RunReport) -> list[str]:
    """The summary as a colour terminal gets it, one string per line."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard", width=200)
    render.print_summary(console, r)
    return buf.getvalue().splitlines()


def finished(**kwargs: object) -> RunReport:
    r = RunReport(outcome="done", collection="docs", docs_read=3, chunks_embedded=3, seconds=2.0)
    for key, value in kwargs.items():
        setattr(r, key, value)
    return r


def test_notes_print_in_the_normal_colour_and_skipped_records_in_yellow() -> None:
    r = finished(notes=["precision fp32: bf16 is not native on this CPU"])
    r.errors.append(RecordError("c.jsonl", "line 2", "malformed JSON"))
    lines = rendered(r)
    [note] = [line for line in lines if "precision fp32" in line]
    [skipped] = [line for line in lines if "malformed JSON" in line]
    assert RED not in note and YELLOW not in note
    assert YELLOW in skipped


def test_record_errors_with_the_same_reason_are_one_line() -> None:
    r = finished()
    reason = "no text field 'text_body' (fields present: id, pkg, section, body)"
    r.errors += [RecordError("c.jsonl", f"line {i}", reason) for i in range(1, 61)]
    r.errors.append(RecordError("c.jsonl", "line 61", "malformed JSON"))
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(rendered(r)))
    assert text.count(reason) == 1 and text.count("malformed JSON") == 1
    assert re.search(
        r"skipped 60 records: no text field .* line 1, .* line 2, .* line 3 and 57 more\)", text
    )


def test_summary_shows_wall_time_with_start_up_apart() -> None:
    text = re.sub(
        r"\x1b\[[0-9;]*m", "", "\n".join(rendered(finished(startup_seconds=22.0, seconds=64.5)))
    )
    assert "86.5s: start-up 22.0s (model load) + run 64.5s" in text


def test_a_run_that_loaded_no_model_says_why_instead_of_a_device() -> None:
    plain = re.compile(r"\x1b\[[0-9;]*m")
    unchanged = finished(
        model="all-MiniLM-L6-v2",
        device=NOT_LOADED,
        precision=NOT_LOADED,
        chunks_embedded=0,
        startup_seconds=0.3,
    )
    text = plain.sub("", "\n".join(rendered(unchanged)))
    assert "all-MiniLM-L6-v2, not loaded: nothing needed embedding" in text
    assert "on not loaded" not in text and "(model load)" not in text
    dry = finished(model="all-MiniLM-L6-v2", device=NOT_LOADED, precision=NOT_LOADED, dry_run=True)
    assert "not loaded: a dry run only counts" in plain.sub("", "\n".join(rendered(dry)))


@pytest.mark.slow
def test_status_shows_run_times_durations_outcome_and_model_name(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("The json module encodes Python objects as JSON text.")
    sink = f"faiss:{tmp_path / 'index'}"
    done = CliRunner().invoke(app, ["backfill", str(docs), "--sink", sink, "--precision", "fp32"])
    assert done.exit_code == 0, done.output
    result = CliRunner().invoke(app, ["status", "--sink", sink])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "model sentence-transformers/all-MiniLM-L6-v2 (packaged)" in text
    assert "model=default" not in text
    day = time.strftime("%Y-%m-%d")
    assert re.search(
        rf"run 1 done: started {day} \d\d:\d\d:\d\d, ended \d\d:\d\d:\d\d \(\d+\.\ds\)", text
    ), text
    rows = json.loads(CliRunner().invoke(app, ["status", "--sink", sink, "--json"]).stdout)
    assert rows[0]["model_name"].startswith("sentence-transformers/all-MiniLM-L6-v2")
