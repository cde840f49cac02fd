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
from tests.sinkkit import SINK_KINDS  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def embedpipe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """embedpipe's cache (remembered precision choices, OpenVINO exports) in a session folder,
    unless EMBEDPIPE_CACHE_DIR points elsewhere: tests never read or write the user's cache."""
    path = os.environ.get("EMBEDPIPE_CACHE_DIR") or str(tmp_path_factory.mktemp("embedpipe-cache"))
    os.environ["EMBEDPIPE_CACHE_DIR"] = path
    return Path(path)


@pytest.fixture(scope="session")
def encoder():  # type: ignore[no-untyped-def]
    """The packaged all-MiniLM-L6-v2, fp32 torch on CPU (the reference), loaded once per session."""
    from embedpipe.encoding.encoder import Encoder

    return Encoder(ModelConfig(precision="fp32", backend="torch", device="cpu"))


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, encoder) -> Path:  # type: ignore[no-untyped-def]
    """A second model: a tiny random BERT (dim 32) on MiniLM's tokenizer, saved as a local folder."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder.path))
    bert = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    )
    raw = out / "raw"
    bert.save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=128)
    model = SentenceTransformer(
        modules=[word, models.Pooling(32, pooling_mode="mean"), models.Normalize()]
    )
    model.save(str(out / "st"))
    return out / "st"


@pytest.fixture(scope="session")
def fake_encoder():  # type: ignore[no-untyped-def]
    """A deterministic FakeEncoder (dim 32) on the packaged model's tokenizer: no model load."""
    from tests.fakes import FakeEncoder

    return FakeEncoder()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n 2 --dist loadgroup`), the tests of a module run on one worker, so
    its costly fixtures (a Ray instance, calibrated int8 models, OpenVINO compiles, reference
    vectors) are built once, not once per worker. The Ray crash tests (their command runs join
    the module's Ray instance by its address) are a group of their own, so the Ray scenarios,
    the longest part of the suite, run on both workers."""
    for item in items:
        group = item.nodeid.partition("::")[0]
        if item.get_closest_marker("ray") and item.get_closest_marker("slow"):
            group += ":slow"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def shared_model(encoder, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """New encoders share the session's model (OpenVINO and fp32 torch leave its weights as they
    are) and the session's cache (one export per session)."""
    import embedpipe.encoding.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "_load", lambda path, device: encoder.model)


@pytest.fixture
def fresh_cache(shared_model: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedpipe cache."""
    monkeypatch.setenv("EMBEDPIPE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module", params=SINK_KINDS)
def built(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The stdlib docstrings embedded with the packaged model into each kind of sink (Postgres:
    a real server, tests/pgkit.py), once per test module that asks (tests/ragkit.py)."""
    import embedpipe
    from tests.ragkit import config, records
    from tests.sinkkit import sink_uri

    root = tmp_path_factory.mktemp(request.param)
    cfg = config(sink_uri(request.param, root / "index"))
    assert embedpipe.backfill(records(), config=cfg).outcome == "done"
    return cfg
