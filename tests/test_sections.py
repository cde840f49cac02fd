"""Config sections (embedpipe/config/sections.py): a sink collection is a plain name, so it stays inside
the sink folder, wherever it is set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedpipe.config import COLLECTION_RULE, load_config
from embedpipe.errors import ConfigError
from tests.clikit import cli, flat, tree

BAD_COLLECTIONS = ["../../x", "<b>c</b>", "a/b", ".hidden", "", "x" * 129, "two words"]


@pytest.mark.parametrize("name", BAD_COLLECTIONS)
def test_collection_outside_the_rule_is_a_config_error_naming_it(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"sink": {"collection": name}})
    assert COLLECTION_RULE in str(exc.value)


def test_collection_rule_applies_to_environment_and_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sink\.collection"):
        load_config(None, environ={"EMBEDPIPE_SINK__COLLECTION": "../../x"})
    path = tmp_path / "c.yaml"
    path.write_text("sink:\n  collection: ../up\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: sink.collection")):
        load_config(path)


@pytest.mark.parametrize("name", ["docs", "Docs-2024.v1_a", "7", "x" * 128])
def test_collection_inside_the_rule_is_accepted(name: str) -> None:
    assert load_config(None, {"sink": {"collection": name}}).sink.collection == name


@pytest.mark.parametrize("name", ["../../x", "<b>c</b>"])
def test_cli_collection_that_escapes_the_sink_exits_2_and_creates_nothing(
    name: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus({"a.md": "hello"})
    work = tmp_path / "work"
    work.mkdir()
    done = cli(
        "backfill",
        str(root),
        "--sink",
        f"faiss:{work / 'a' / 'sink'}",
        "--collection",
        name,
        cwd=work,
    )
    assert done.returncode == 2, done.stderr
    assert COLLECTION_RULE in flat(done.stderr)
    assert tree(tmp_path) == [tmp_path / "corpus", root / "a.md", work]
