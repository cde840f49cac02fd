"""Include and exclude globs (embedpipe/sources/globs.py): which files of a directory source
are read, gitignore-style."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.sourcekit import docs, source


@pytest.fixture
def tree(make_corpus) -> Path:  # type: ignore[no-untyped-def]
    return make_corpus(
        {
            "README.md": "root readme",
            "docs/guide.md": "the guide",
            "docs/api/ref.md": "the reference",
            "docs/drafts/wip.md": "unfinished",
            "docs/notes.txt": "plain notes",
            "build/out.md": "generated",
            "src/pkg/build/gen.md": "generated too",
            "src/pkg/mod.md": "module docs",
        }
    )


def ids(root: Path, **kwargs: Any) -> list[str]:
    return sorted(d.id for d in docs(source(root, **kwargs)))


def test_exclude_name_without_slash_prunes_directories_at_any_depth(tree: Path) -> None:
    got = ids(tree, exclude=["build"])
    assert "build/out.md" not in got and "src/pkg/build/gen.md" not in got
    assert "src/pkg/mod.md" in got


def test_exclude_with_slash_is_anchored_at_the_root(tree: Path) -> None:
    got = ids(tree, exclude=["/build"])
    assert "build/out.md" not in got and "src/pkg/build/gen.md" in got


def test_include_star_does_not_cross_directories(tree: Path) -> None:
    assert ids(tree, include=["docs/*.md"]) == ["docs/guide.md"]


def test_include_double_star_spans_directories_and_exclude_cuts_from_it(tree: Path) -> None:
    got = ids(tree, include=["docs/**/*.md"], exclude=["drafts/"])
    assert got == ["docs/api/ref.md", "docs/guide.md"]


def test_include_basename_glob_matches_at_any_depth_within_extensions(tree: Path) -> None:
    got = ids(tree, include=["*.txt", "README.*"])
    assert got == ["README.md", "docs/notes.txt"]


def test_trailing_slash_pattern_matches_directories_only(make_corpus) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus({"logs/a.md": "a dir", "logs.md": "a file named logs.md", "x/logs": "x"})
    assert ids(root, exclude=["logs/"]) == ["logs.md"]


def test_source_total_counts_only_included_files(tree: Path) -> None:
    assert source(tree, include=["docs/"]).total == 4
