"""File permissions (embedpipe/state/permissions.py): state and sink files are private to their owner unless
state_mode opens them to the group, and a run puts the process umask back."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import embedpipe
from embedpipe.config import load_config
from embedpipe.errors import ConfigError, SourceError
from embedpipe.state.ledger import state_dir_for
from embedpipe.types import Document
from tests.clikit import tree
from tests.corpuskit import config, corpus_files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def private(path: Path) -> bool:
    return mode(path) & 0o077 == 0


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge"])
def test_run_leaves_state_and_sink_private_to_the_owner(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(4)), kind, tmp_path)
    old = os.umask(0o022)
    try:
        embedpipe.run(cfg)
        assert os.umask(0o022) == 0o022  # the run put the process umask back
    finally:
        os.umask(old)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    assert (mode(state), mode(state / "ledger.sqlite")) == (0o700, 0o600)
    sink_paths = tree(tmp_path / kind)
    assert sink_paths and [p for p in sink_paths if not p.is_symlink() and not private(p)] == []


def test_state_mode_opens_the_state_dir_to_the_group(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(4)), "faiss", tmp_path, state_mode="0750")
    embedpipe.run(cfg)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    assert (mode(state), mode(state / "ledger.sqlite")) == (0o750, 0o640)


def test_existing_open_state_dir_is_tightened(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(4)), "faiss", tmp_path)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "ledger.sqlite").touch()
    os.chmod(state / "ledger.sqlite", 0o644)  # an empty file is a fresh SQLite database
    embedpipe.run(cfg)
    assert (mode(state), mode(state / "ledger.sqlite")) == (0o700, 0o600)


def test_umask_is_restored_after_a_failed_run(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(1)), "faiss", tmp_path)

    def broken() -> Iterator[Document]:
        yield Document(id="a", text="one document, then the source breaks")
        raise SourceError("the source broke")

    old = os.umask(0o022)
    try:
        with pytest.raises(SourceError, match="the source broke"):
            embedpipe.run(cfg, source=broken())
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


@pytest.mark.parametrize("value", ["0600", 700, "rwx", "01777", True])
def test_state_mode_must_be_octal_and_keep_the_owner_rwx(value: object) -> None:
    with pytest.raises(ConfigError, match="state_mode"):
        load_config(None, {"state_mode": value})


@pytest.mark.parametrize(("value", "want"), [("0750", "0750"), ("750", "0750"), (0o750, "0750")])
def test_state_mode_reads_octal_strings_and_numbers(value: object, want: str) -> None:
    assert load_config(None, {"state_mode": value}).state_mode == want
