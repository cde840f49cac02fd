"""Generation folders behind a public symlink (sinks/generations.py): a public name that points
outside the sink is refused, and nothing the sink did not create is ever deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.clikit import embedpipe as command
from tests.clikit import flat
from tests.corpuskit import corpus_files


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge", "parquet"])
def test_a_public_name_linked_outside_the_sink_is_refused_and_nothing_is_deleted(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(4))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "old_index").mkdir(parents=True)
    (elsewhere / "old_index" / "manifest.json").write_text('{"fingerprint": "abc"}\n')
    (elsewhere / "unrelated.txt").write_text("not embedpipe's\n")
    before = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    sink = tmp_path / kind
    sink.mkdir()
    (sink / "docs").symlink_to(elsewhere / "old_index")

    env = {**os.environ, "EMBEDPIPE_PROMOTE__KEEP_PREVIOUS": "0"}
    args = ["backfill", str(root), "--sink", f"{kind}:{sink}", "--collection", "docs"]
    result = command(*args, env=env)

    assert result.returncode != 0, result.stdout
    said = flat(result.stderr)
    assert f"{sink / 'docs'} is a symlink to {elsewhere / 'old_index'}" in said, said
    assert "Traceback" not in result.stderr
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == before
    assert (sink / "docs").is_symlink()
