"""`embedpipe init`: the commented config it writes loads, documents what the source needs, and
is never written over without --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedpipe.cli import app
from embedpipe.config import DEFAULT_SINK, load_config


@pytest.mark.parametrize(
    ("source", "sink"),
    [
        (None, None),
        ("./docs", "faiss:./index"),
        ("corpus.jsonl", "qdrant+https://qdrant.example:6333"),
        ("data/part.parquet", "qdrant:./.embedpipe/qdrant"),
        ("hf:acme/pump-docs#train", "faiss:/srv/index"),
    ],
)
def test_init_writes_a_config_that_load_config_accepts(
    source: str | None, sink: str | None, tmp_path: Path
) -> None:
    out = tmp_path / "embedpipe.yaml"
    args = ["init", "-o", str(out)]
    args += ["--source", source] if source else []
    args += ["--sink", sink] if sink else []
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = load_config(out)
    assert cfg.source.uri == (source or "./corpus")
    assert cfg.sink.uri == (sink or DEFAULT_SINK)
    assert out.read_text().count("#") > 20  # commented


def test_init_for_a_record_source_documents_text_template(tmp_path: Path) -> None:
    text = CliRunner().invoke(app, ["init", "--source", "rows.jsonl"]).stdout
    assert "text_template" in text and "include:" not in text


def test_init_for_a_directory_documents_include_and_exclude() -> None:
    text = CliRunner().invoke(app, ["init", "--source", "./docs"]).stdout
    assert "include: []" in text and "exclude: []" in text


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "embedpipe.yaml"
    out.write_text("keep: me\n")
    result = CliRunner().invoke(app, ["init", "-o", str(out)])
    assert result.exit_code == 2 and out.read_text() == "keep: me\n"
    assert CliRunner().invoke(app, ["init", "-o", str(out), "--force"]).exit_code == 0


def test_init_rejects_a_sink_without_location() -> None:
    assert CliRunner().invoke(app, ["init", "--sink", "faiss:"]).exit_code == 2
