"""Start-up only for what the work needs (issue 24): with a remembered OpenVINO choice, queries
and incremental runs encode on the cached export with the model's tokenizer.json through
`tokenizers`, and import neither torch nor sentence-transformers (embedpipe/encoding/torchless.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from embedpipe.config import ModelConfig
from embedpipe.encoding import encoder as encoder_module
from embedpipe.encoding import torchless
from embedpipe.encoding.chunking import Chunker
from embedpipe.encoding.encoder import Encoder, ExportedEncoder, exported_encoder
from embedpipe.encoding.models import tokenizer_json
from embedpipe.encoding.precision import cosines
from embedpipe.encoding.remembered import CHOICES_FILE, cache_dir
from embedpipe.encoding.tokenizer import FastTokenizer
from embedpipe.types import Document
from tests.corpuskit import corpus_files

pytestmark = pytest.mark.skipif(
    find_spec("openvino") is None or find_spec("tokenizers") is None,
    reason="needs the openvino extra: pip install 'embedpipe[openvino]' (scripts/test.sh does)",
)

# Varied texts: empty, whitespace, unicode of several scripts, emoji, accents, ligatures, a
# text far longer than the model takes (truncated), markup, and prompts before a text.
TEXTS = [
    "",
    "   ",
    "Hello world",
    "naïve café Ünïcödé — 東京は日本の首都です。 🤖 emoji ﬁ ligature Straße İstanbul",
    "Привет, мир! مرحبا بالعالم שלום עולם नमस्ते दुनिया",
    "retry " * 700,
    "query: how do I configure retries?",
    "passage: \t\nline one\n\nline two  ",
    "def f(x):\n    return x ** 2  # <b>bold</b> &amp; {json: [1, 2]}",
    "A" * 3000,
]
PROMPTS = ["", "query: ", "Represent this sentence for searching relevant passages: "]


def fast_for(encoder: Encoder) -> FastTokenizer:
    """The FastTokenizer a torch-loaded encoder would record for its model."""
    settings = torchless.tokenizer_settings(encoder.tokenizer, encoder.path, encoder.max_seq_length)
    assert settings is not None, "the packaged model's tokenizer.json is its own tokenizer"
    file = tokenizer_json(encoder.path)
    assert file is not None
    return FastTokenizer.from_file(file, **settings)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_fast_tokenizer_gives_the_models_own_ids_and_masks(
    encoder: Encoder, prompt: str
) -> None:
    fast, own = fast_for(encoder), encoder.tokenizer
    texts = [prompt + t for t in TEXTS]
    padded = dict(
        padding=True,
        truncation=True,
        max_length=encoder.max_seq_length,
        return_tensors="np",
        return_token_type_ids=False,
    )
    ours, theirs = fast(texts, **padded), own(texts, **padded)
    assert ours["input_ids"].shape[1] == encoder.max_seq_length  # the long texts were truncated
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
    # The chunker's calls: offsets without special tokens, then unpadded ids with them.
    windows = dict(
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    ours_w, theirs_w = fast(texts, **windows), own(texts, **windows)
    assert ours_w["input_ids"] == theirs_w["input_ids"]
    assert [[tuple(o) for o in row] for row in ours_w["offset_mapping"]] == [
        [tuple(o) for o in row] for row in theirs_w["offset_mapping"]
    ]
    unpadded = dict(return_attention_mask=False, return_token_type_ids=False, verbose=False)
    assert fast(texts, **unpadded)["input_ids"] == own(texts, **unpadded)["input_ids"]
    assert fast.num_special_tokens_to_add(pair=False) == own.num_special_tokens_to_add(pair=False)
    assert fast.pad_token_id == own.pad_token_id


@pytest.mark.parametrize("prefix", ["", "passage: "])
def test_chunks_are_identical_with_the_fast_tokenizer(
    encoder: Encoder, stdlib_docs: Path, prefix: str
) -> None:
    docs = [Document(p.name, p.read_text()) for p in sorted(stdlib_docs.glob("*.md"))]
    docs += [Document(f"t{i}", text) for i, text in enumerate(TEXTS)]
    docs.append(Document("mixed", "\n\n".join(TEXTS) * 40))  # several windows' worth
    settings = dict(
        chunk_tokens=64, overlap_tokens=8, max_seq_length=encoder.max_seq_length, prefix=prefix
    )
    ours = list(Chunker(fast_for(encoder), **settings).chunk_many(docs))  # type: ignore[arg-type]
    theirs = list(Chunker(encoder.tokenizer, **settings).chunk_many(docs))  # type: ignore[arg-type]
    assert len(ours) > 100
    assert ours == theirs


@pytest.mark.usefixtures("fresh_cache")
def test_the_export_alone_encodes_like_sentence_transformers(reference_model: object) -> None:
    cfg = ModelConfig(backend="openvino", precision="fp32", device="cpu")
    loaded = Encoder(cfg)  # exports, and records what a torch-free process needs
    alone = exported_encoder(cfg)
    assert isinstance(alone, ExportedEncoder)
    assert (alone.backend, alone.precision, alone.dim) == ("openvino", "fp32", loaded.dim)
    assert alone.identity() == loaded.identity()
    ours = alone.encode_texts(TEXTS)
    reference = reference_model.encode(TEXTS, convert_to_numpy=True)  # type: ignore[attr-defined]
    assert cosines(ours, reference).min() >= 0.999
    np.testing.assert_allclose(ours, loaded.encode_texts(TEXTS), atol=1e-5)


@pytest.mark.usefixtures("fresh_cache")
def test_an_export_recorded_from_a_copy_of_the_model_keeps_this_configs_name(
    tmp_path: Path,
) -> None:
    """Records are keyed by the model's files: a copy elsewhere (another checkout, a test) makes
    the same record, and the fingerprint must still carry the name this config gives."""
    import shutil

    cfg = ModelConfig(backend="openvino", precision="fp32", device="cpu")
    copy = tmp_path / "model-copy"
    shutil.copytree(Encoder(cfg).path, copy)
    Encoder(cfg.model_copy(update={"name": str(copy)}))  # records the copy's export
    alone = exported_encoder(cfg)
    assert isinstance(alone, ExportedEncoder)
    assert alone.identity().name == "sentence-transformers/all-MiniLM-L6-v2"
    assert alone.identity() == Encoder(cfg).identity()


@pytest.mark.parametrize("native_bf16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
@pytest.mark.usefixtures("fresh_cache")
def test_a_remembered_auto_choice_is_run_from_the_export_on_either_cpu(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    """What the CPU and OpenVINO report is injected, so both branches run on any machine."""
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr("embedpipe.encoding.precision.cpu_flags_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(torchless, "gpu_present", lambda: False)
    cfg = ModelConfig()  # auto everything, as a nightly run
    loaded = Encoder(cfg)  # the first run: a parity check against torch decides
    assert loaded.backend == "openvino"
    choices = json.loads((cache_dir() / CHOICES_FILE).read_text())
    assert any("min cosine" in e["choice"]["reason"] for e in choices.values())
    alone = exported_encoder(cfg)
    assert isinstance(alone, ExportedEncoder)
    assert (alone.backend, alone.precision) == (loaded.backend, loaded.precision)
    assert "torch not loaded" in alone.precision_reason
    assert cosines(alone.encode_texts(TEXTS), loaded.encode_texts(TEXTS)).min() >= 0.9999
    # Queries on the index this run writes ask for fp32: the same export, on either CPU.
    queries = exported_encoder(cfg.model_copy(update={"precision": "fp32"}))
    assert isinstance(queries, ExportedEncoder) and queries.precision == "fp32"
    assert queries.identity() == Encoder(cfg.model_copy(update={"precision": "fp32"})).identity()
    # Another machine (the other CPU flags), a GPU that `device: auto` might pick, or a forgotten
    # choice: the torch way decides.
    monkeypatch.setattr(
        "embedpipe.encoding.precision.cpu_flags_native_bf16", lambda: not native_bf16
    )
    assert exported_encoder(cfg) is None
    monkeypatch.setattr("embedpipe.encoding.precision.cpu_flags_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(torchless, "gpu_present", lambda: True)
    assert exported_encoder(cfg) is None
    monkeypatch.setattr(torchless, "gpu_present", lambda: False)
    assert exported_encoder(cfg) is not None
    (cache_dir() / CHOICES_FILE).unlink()
    assert exported_encoder(cfg) is None
    assert exported_encoder(cfg.model_copy(update={"precision": "fp32"})) is None


@pytest.mark.usefixtures("fresh_cache")
def test_a_torch_choice_is_not_run_from_an_export() -> None:
    Encoder(ModelConfig(backend="torch", precision="fp32", device="cpu"))
    assert exported_encoder(ModelConfig(backend="torch", precision="fp32", device="cpu")) is None
    assert not (cache_dir() / "openvino" / torchless.READY_FILE).exists()


# -- whole processes -------------------------------------------------------------------------

IMPORTED = """
import json, sys
print(json.dumps({m: m in sys.modules for m in ("torch", "sentence_transformers", "transformers",
                                                  "pandas")}))
"""
FIRST = """
import embedpipe, sys
report = embedpipe.backfill(sys.argv[1], sink=sys.argv[2], collection="docs",
                            chunk_tokens=24, overlap_tokens=0)
assert report.chunks_embedded, report
print(json.dumps(report.precision))
""".replace("import embedpipe", "import json, embedpipe")
LIBRARY = """
import embedpipe, json, sys
with embedpipe.open_index(sink=sys.argv[2], collection="docs") as index:
    hits = [h.chunk_id for h in index.search("how are retries configured?", k=3)]
again = embedpipe.query("how are retries configured?", sink=sys.argv[2], collection="docs", k=3)
assert [h.chunk_id for h in again] == hits
print(json.dumps(hits))
"""
LANGCHAIN = """
import json, sys
from embedpipe.integrations.langchain import EmbedpipeVectorStore
store = EmbedpipeVectorStore(sink=sys.argv[2], collection="docs")
found = store.similarity_search("how are retries configured?", k=3)
print(json.dumps([d.metadata["chunk_id"] for d in found]))
"""
CLI = """
import json, sys
from typer.testing import CliRunner
from embedpipe.cli import app
result = CliRunner().invoke(app, ["query", "how are retries configured?", "--sink", sys.argv[2],
                                  "--collection", "docs", "-k", "3", "--json"])
assert result.exit_code == 0, result.output
print(json.dumps([h["chunk_id"] for h in json.loads(result.output)]))
"""
INCREMENTAL = """
import embedpipe, json, sys
report = embedpipe.backfill(sys.argv[1], sink=sys.argv[2], collection="docs",
                            chunk_tokens=24, overlap_tokens=0)
print(json.dumps([report.chunks_embedded, report.precision, report.notes]))
"""


def in_process(script: str, corpus: Path, sink: str, cache: Path) -> tuple[object, dict[str, bool]]:
    """Run `script` in a fresh Python: (its printed JSON, which heavy modules it imported)."""
    env = {**os.environ, "EMBEDPIPE_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", script + IMPORTED, str(corpus), sink],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-2]), json.loads(lines[-1])


def in_process_steps(
    scripts: list[str], corpus: Path, sink: str, cache: Path
) -> list[tuple[object, dict[str, bool]]]:
    """`in_process` for several scripts run one after the other in one fresh Python: each one's
    printed JSON and the heavy modules imported so far (a module once imported stays)."""
    together = "".join(script + IMPORTED for script in scripts)
    env = {**os.environ, "EMBEDPIPE_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", together, str(corpus), sink],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()[-2 * len(scripts) :]]
    return list(zip(lines[::2], lines[1::2], strict=True))


@pytest.mark.parametrize("kind", ["qdrant-edge", "faiss"])
def test_queries_and_an_incremental_run_import_no_torch_once_the_choice_is_remembered(
    make_corpus, tmp_path: Path, kind: str
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(6)
    root = make_corpus(files)
    sink, cache = f"{kind}:{tmp_path / kind}", tmp_path / "cache"
    # The first run on this machine loads the model and checks parity against torch; no query
    # has run yet: the first query process after a nightly run is the one users meet.
    precision, imported = in_process(FIRST, root, sink, cache)
    assert imported["torch"] and imported["sentence_transformers"]
    assert precision in ("bf16", "fp32")  # OpenVINO's choice on this CPU
    choices = json.loads((cache / CHOICES_FILE).read_text())
    assert any("min cosine" in e["choice"]["reason"] for e in choices.values())
    # The library, LangChain and the CLI in one process, what it imported looked at after each.
    served = in_process_steps([LIBRARY, LANGCHAIN, CLI], root, sink, cache)
    first = served[0][0]
    assert isinstance(first, list) and len(first) == 3
    for script, (hits, imported) in zip(("library", "langchain", "cli"), served, strict=True):
        assert hits == first, script
        assert not imported["torch"] and not imported["sentence_transformers"], script
        assert not imported["transformers"], script
        assert kind != "faiss" or not imported["pandas"], script
    (root / "doc00.md").write_text(files["doc00.md"].replace("A second paragraph", "An edited end"))
    (embedded, _, notes), imported = in_process(INCREMENTAL, root, sink, cache)
    assert embedded == 1
    assert not imported["torch"] and not imported["sentence_transformers"]
    assert any("torch not loaded" in note for note in notes)
    # Forgetting the choice decides afresh, with torch.
    (cache / CHOICES_FILE).unlink()
    hits, imported = in_process(LIBRARY, root, sink, cache)
    assert imported["torch"] and hits == first
