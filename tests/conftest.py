"""Shared fixtures: the real packaged model, a real corpus built from the stdlib documentation."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpus  # noqa: E402  (scripts/corpus.py)

from embedpipe.config import ModelConfig  # noqa: E402


@pytest.fixture(scope="session")
def encoder():  # type: ignore[no-untyped-def]
    """The packaged all-MiniLM-L6-v2, fp32 on CPU, loaded once per session."""
    from embedpipe.encoder import Encoder

    return Encoder(ModelConfig(precision="fp32", device="cpu"))


@pytest.fixture(scope="session")
def reference_model(encoder):  # type: ignore[no-untyped-def]
    """A plain SentenceTransformer on the same weights: the reference for parity."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder.path), device="cpu")


@pytest.fixture(scope="session")
def stdlib_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real corpus: pydoc text of a few stdlib modules, one Markdown file each."""
    out = tmp_path_factory.mktemp("stdlib-docs")
    corpus.write_docs(out, modules=6)
    return out


@pytest.fixture
def make_corpus(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write {relative path: text} files into a fresh directory and return it."""

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "corpus"
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    return make
