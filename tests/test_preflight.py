"""Before the model loads (embedpipe/runs/preflight.py): a source whose first records all fail the
same way stops the run with one line; anything else goes on to the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedpipe.config import SourceConfig
from embedpipe.errors import SourceError
from embedpipe.runs.preflight import check_first_records
from embedpipe.sources import open_source

ROW = {"id": "x", "pkg": "json", "section": "intro", "body": "The json module encodes objects."}


def jsonl(tmp_path: Path, rows: list[dict[str, str]], text_field: str = "text_body") -> object:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return open_source(SourceConfig(uri=str(path), text_field=text_field))


def rows(n: int) -> list[dict[str, str]]:
    return [{**ROW, "id": f"d{i}"} for i in range(n)]


def test_a_field_no_record_has_stops_with_one_line_naming_the_fields_present(
    tmp_path: Path,
) -> None:
    with pytest.raises(SourceError) as caught:
        check_first_records(jsonl(tmp_path, rows(60)), 20)
    message = str(caught.value)
    assert message.startswith(
        "no record has text field 'text_body' (fields present: id, pkg, section, body)"
    )
    assert "first 20 records" in message and "\n" not in message


def test_a_good_record_among_the_first_lets_the_run_go_on(tmp_path: Path) -> None:
    mixed = rows(30)
    mixed[7] = {**ROW, "id": "good", "text_body": "a record with the field"}
    check_first_records(jsonl(tmp_path, mixed), 20)


def test_different_reasons_let_the_run_go_on(tmp_path: Path) -> None:
    varied = [*rows(10), *({"id": f"n{i}", "text_body": None} for i in range(20))]
    check_first_records(jsonl(tmp_path, varied), 20)  # type: ignore[arg-type]


def test_a_source_shorter_than_the_limit_is_left_to_the_run(tmp_path: Path) -> None:
    check_first_records(jsonl(tmp_path, rows(5)), 20)


def test_a_limit_of_zero_turns_the_check_off(tmp_path: Path) -> None:
    check_first_records(jsonl(tmp_path, rows(60)), 0)


def test_a_source_read_once_is_not_read_ahead() -> None:
    from embedpipe.types import RecordError

    once = (RecordError("gen", f"item {i}", "no text field 'x'") for i in range(30))
    check_first_records(once, 20)
    assert len(list(once)) == 30  # nothing consumed
