"""Output precision on the real model and real sinks: Matryoshka truncation, int8 / binary codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import embedpipe
from embedpipe.config import ModelConfig, load_config
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.quantize import quantize
from embedpipe.errors import ModelError
from embedpipe.sinks import open_sink
from tests.corpuskit import FILES as PIPELINE_FILES

FILES = {
    **{
        name: PIPELINE_FILES[name]
        for name in ("python/json.md", "python/argparse.md", "cooking/bread.md", "cooking/soup.txt")
    },
    "garden/tomatoes.md": "Water tomatoes in the morning and tie the stems to a cane as they grow.",
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus München. 東京の天気は晴れです。",
    "Rotate the keys every ninety days and keep the previous key valid for one more day.",
]


@pytest.fixture(scope="module")
def encoder_128() -> Encoder:
    return Encoder(ModelConfig(precision="fp32", device="cpu", truncate_dim=128))


def backfill(root: Path, uri: str, **options: object) -> embedpipe.RunReport:
    return embedpipe.backfill(str(root), sink=uri, collection="docs", precision="fp32", **options)


def stored_vectors(parquet_dir: Path) -> np.ndarray:
    return np.array(pq.read_table(parquet_dir / "docs")["vector"].to_pylist(), dtype=np.float32)


def test_truncate_dim_gives_unit_vectors_equal_to_the_truncated_reference(
    encoder_128: Encoder, reference_model
) -> None:  # type: ignore[no-untyped-def]
    mine = encoder_128.encode_texts(TEXTS)
    ref = reference_model.encode(TEXTS, truncate_dim=128, normalize_embeddings=True)
    assert encoder_128.dim == 128 and mine.shape == (len(TEXTS), 128)
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(mine * ref, axis=1)) >= 0.999


def test_truncate_dim_above_the_model_dim_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"truncate_dim=1000 .* 384 dimensions"):
        Encoder(ModelConfig(precision="fp32", device="cpu", truncate_dim=1000))


def test_unset_output_options_leave_the_fingerprint_as_it_was(encoder) -> None:  # type: ignore[no-untyped-def]
    assert encoder.output_options() == {}
    assert encoder.dim == 384


def test_int8_vectors_are_their_codes_renormalised(encoder) -> None:  # type: ignore[no-untyped-def]
    q = quantize(encoder.encode_texts(TEXTS), "int8", normalize=True)
    codes = q * 127 / np.abs(q).max(axis=1, keepdims=True)
    assert np.allclose(codes, np.rint(codes), atol=1e-3)
    assert np.abs(np.rint(codes)).max() == 127
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def test_binary_vectors_hold_two_values_with_the_sign_of_the_float_vector(encoder) -> None:  # type: ignore[no-untyped-def]
    floats = encoder.encode_texts(TEXTS)
    q = quantize(floats, "binary", normalize=True)
    assert np.allclose(np.unique(q), [-1 / np.sqrt(384), 1 / np.sqrt(384)])
    assert np.array_equal(q > 0, floats > 0)


@pytest.mark.parametrize("kind", ["int8", "binary"])
def test_quantization_of_a_vector_does_not_depend_on_its_batch(encoder, kind: str) -> None:  # type: ignore[no-untyped-def]
    floats = encoder.encode_texts(TEXTS)
    alone = np.concatenate([quantize(floats[i : i + 1], kind, normalize=True) for i in range(3)])
    assert np.array_equal(quantize(floats, kind, normalize=True), alone)


@pytest.mark.parametrize(
    ("kind", "truncate_dim", "quantization"),
    [
        ("faiss", 128, "none"),
        ("faiss", None, "int8"),
        ("qdrant-edge", None, "binary"),
        ("qdrant-edge", 128, "int8"),
    ],
)
def test_retrieval_finds_the_right_document_with_output_options(
    kind: str, truncate_dim: int | None, quantization: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    uri = f"{kind}:{tmp_path / kind}"
    report = backfill(make_corpus(FILES), uri, truncate_dim=truncate_dim, quantization=quantization)
    assert report.outcome == "done" and report.chunks_embedded == len(FILES)
    # The query names no option: it is truncated to the live index's width, and stays float.
    hits = embedpipe.query("how do I bake bread?", sink=uri, collection="docs", k=3)
    assert hits[0].doc_id == "cooking/bread.md"
    hits = embedpipe.query("parse command line flags", sink=uri, collection="docs", k=3)
    assert hits[0].doc_id == "python/argparse.md"


def test_parquet_stores_the_codes_of_each_quantization(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    backfill(root, f"parquet:{tmp_path / 'b'}", quantization="binary", truncate_dim=64)
    binary = stored_vectors(tmp_path / "b")
    assert binary.shape == (len(FILES), 64)
    assert np.allclose(np.unique(binary), [-1 / 8, 1 / 8])
    backfill(root, f"parquet:{tmp_path / 'i'}", quantization="int8")
    int8 = stored_vectors(tmp_path / "i")
    codes = int8 * 127 / np.abs(int8).max(axis=1, keepdims=True)
    assert int8.shape == (len(FILES), 384) and np.allclose(codes, np.rint(codes), atol=1e-3)


def test_changing_an_output_option_re_embeds_everything_into_a_new_index(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root, uri = make_corpus(FILES), f"faiss:{tmp_path / 'faiss'}"
    plain = backfill(root, uri)
    int8 = backfill(root, uri, quantization="int8")
    again = backfill(root, uri, quantization="int8")
    short = backfill(root, uri, quantization="int8", truncate_dim=128)
    assert len({plain.fingerprint, int8.fingerprint, short.fingerprint}) == 3
    assert again.fingerprint == int8.fingerprint
    assert [r.chunks_embedded for r in (plain, int8, again, short)] == [
        len(FILES),
        len(FILES),
        0,
        len(FILES),
    ]
    cfg = load_config(None, {"sink": {"uri": uri, "collection": "docs"}})
    sink = open_sink(cfg.sink)
    try:
        assert len(set(sink.chunk_ids())) == len(FILES)  # the new index only, nothing twice
    finally:
        sink.abort()
    assert [(t["dim"], t["chunks"]) for t in embedpipe.status(cfg)] == [(128, len(FILES))]
    hits = embedpipe.query("tie tomato stems", sink=uri, collection="docs", k=1)
    assert hits[0].doc_id == "garden/tomatoes.md"
