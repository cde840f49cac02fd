"""Nothing heavy before it is needed: an unchanged re-run decides everything from the ledger and
never imports torch or loads the model; a dry run chunks with the tokenizer loaded alone and
never loads the model either (embedpipe/encoding/lazy.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

import embedpipe
from embedpipe.config import ModelConfig, load_config
from embedpipe.encoding.lazy import MODELS_FILE, NOT_LOADED, LazyEncoder
from embedpipe.encoding.models import same_tokenizer
from embedpipe.errors import ModelError
from embedpipe.state.ledger import state_dir_for
from tests.corpuskit import config, corpus_files

PROBE = """
import json, sys
import embedpipe
from embedpipe.config import load_config
report = embedpipe.run(load_config(None, json.loads(sys.argv[1])), dry_run=sys.argv[2] == "dry")
print(json.dumps({"torch": "torch" in sys.modules, "sentence_transformers": "sentence_transformers"
                  in sys.modules, "embedded": report.chunks_embedded, "skipped": report.chunks_skipped,
                  "device": report.device, "fingerprint": report.fingerprint,
                  "outcome": report.outcome, "tokens_planned": report.tokens_planned,
                  "real_tokens": report.real_tokens}))
"""


def probe(cfg: embedpipe.RunConfig, *, dry_run: bool = False) -> dict[str, object]:
    """Run `cfg` (a dry run when asked) in a fresh process and say what it imported."""
    data = json.dumps(cfg.model_dump(exclude_unset=True))
    mode = "dry" if dry_run else "run"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, data, mode], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_unchanged_rerun_imports_no_torch_and_keeps_the_fingerprint(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(6))
    cfg = config(root, "faiss", tmp_path)
    first = probe(cfg)
    assert first["embedded"]  # torch, or a cached OpenVINO export without it (test_torchless.py)
    assert (state_dir_for(cfg.sink.uri, None) / MODELS_FILE).is_file()
    again = probe(cfg)
    assert again["fingerprint"] == first["fingerprint"]
    assert (again["embedded"], again["skipped"]) == (0, first["embedded"])
    assert not again["torch"] and not again["sentence_transformers"]
    assert again["device"] == NOT_LOADED


def test_an_edit_loads_the_model_and_embeds_only_the_change(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(6)
    root = make_corpus(files)
    cfg = config(root, "faiss", tmp_path)
    probe(cfg)
    (root / "doc00.md").write_text(files["doc00.md"].replace("A second paragraph", "An edited end"))
    edited = probe(cfg)
    # The model loaded (torch, or its cached OpenVINO export without torch: test_torchless.py).
    assert edited["embedded"] == 1 and edited["device"] == "cpu"


def test_same_fingerprint_with_and_without_the_model_loaded(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(3))
    cfg = config(root, "faiss", tmp_path)
    loaded = embedpipe.run(cfg)  # in-process: the model cache may already hold the model
    recalled = probe(cfg)
    assert recalled["fingerprint"] == loaded.fingerprint and recalled["embedded"] == 0


def edit(root: Path, files: dict[str, str]) -> None:
    """One document changed, one added."""
    (root / "doc00.md").write_text(files["doc00.md"].replace("A second paragraph", "An edited end"))
    (root / "doc99.md").write_text("# About kites\n\n" + "Kites fly on strings in wind. " * 40)


def test_a_dry_run_on_edits_loads_no_model_and_counts_what_the_run_then_embeds(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files = corpus_files(6)
    root = make_corpus(files)
    cfg = config(root, "faiss", tmp_path)
    probe(cfg)
    edit(root, files)
    dry = probe(cfg, dry_run=True)
    assert dry["outcome"] == "dry-run" and dry["embedded"] > 2
    assert not dry["sentence_transformers"] and dry["device"] == NOT_LOADED
    real = probe(cfg)
    assert real["device"] == "cpu"
    assert (dry["embedded"], dry["tokens_planned"]) == (real["embedded"], real["real_tokens"])
    assert dry["fingerprint"] == real["fingerprint"]


def test_a_first_dry_run_on_a_new_state_directory_loads_no_model(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # Chunks up to 512 tokens asked: the model's 256 must cap them, unloaded as loaded.
    text = " ".join(
        f"Sentence {i} says something about rivers and their long history." for i in range(300)
    )
    root = make_corpus({f"long{i}.md": f"# Rivers {i}\n\n{text}" for i in range(3)})
    data = {
        "source": {"uri": str(root)},
        "sink": {"uri": f"faiss:{tmp_path / 'faiss'}", "collection": "docs"},
        "chunking": {"chunk_tokens": 512, "overlap_tokens": 0},
    }
    cfg = load_config(None, data)
    dry = probe(cfg, dry_run=True)  # nothing remembered: identity from the model's folder
    assert dry["device"] == NOT_LOADED and dry["outcome"] == "dry-run"
    assert not (state_dir_for(cfg.sink.uri, None) / MODELS_FILE).exists()  # only loads teach
    real = probe(cfg)
    assert real["device"] == "cpu" and dry["fingerprint"] == real["fingerprint"]
    assert (dry["embedded"], dry["tokens_planned"]) == (real["embedded"], real["real_tokens"])
    assert int(str(dry["embedded"])) * 256 >= int(str(dry["tokens_planned"])) > 3 * 512  # capped


def test_the_tokenizer_and_identity_worked_out_unloaded_are_the_models(tiny_model: Path) -> None:
    from embedpipe.encoding.encoder import Encoder

    fp32 = {"precision": "fp32", "backend": "torch", "device": "cpu"}
    texts = ["Kites fly on strings.", "Ünïcode, CJK 河流 and emoji 🪁 " * 40]
    for loaded in (  # not the session's `encoder`: a test may have changed its limit
        Encoder(ModelConfig(**fp32)),  # 256 tokens, from its sentence_bert_config.json
        Encoder(ModelConfig(max_seq_length=64, **fp32)),
        Encoder(ModelConfig(name=str(tiny_model), prefix="passage: ", **fp32)),  # 128 tokens
    ):
        lazy = LazyEncoder(loaded.cfg, lambda loaded=loaded: loaded)
        assert lazy.identity_unloaded() == (loaded.identity(), loaded.output_options())
        assert lazy.max_seq_length == loaded.max_seq_length
        assert lazy.pad_id == loaded.pad_id and not lazy.loaded
        assert lazy.tokenizer(texts)["input_ids"] == loaded.tokenizer(texts)["input_ids"]
        assert same_tokenizer(lazy.tokenizer, loaded.tokenizer)
        assert lazy.encoder is loaded  # the check on loading passes


def test_a_model_unlike_what_the_run_chunked_with_fails_before_encoding(fake_encoder) -> None:  # type: ignore[no-untyped-def]
    shorter = copy.copy(fake_encoder)
    shorter._max_seq_length = 128
    lazy = LazyEncoder(ModelConfig(), lambda: shorter)
    assert lazy.max_seq_length == 256
    with pytest.raises(ModelError, match="takes 128 tokens, but this run chunked for 256"):
        lazy.encoder  # noqa: B018


def test_a_tokenizer_unlike_the_models_fails_once_then_the_models_own_is_used(
    fake_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # A cache without a torch-free record: the tokenizer alone is transformers' (encoding/models.py).
    monkeypatch.setenv("EMBEDPIPE_CACHE_DIR", str(tmp_path / "cache"))
    lazy = LazyEncoder(ModelConfig(), lambda: other)
    lazy.remember_in(tmp_path)
    other = fake_encoder.with_tokenizer(copy.deepcopy(lazy.tokenizer))
    other.tokenizer.add_tokens(["kiteword"])
    with pytest.raises(ModelError, match=r"tokenizer loaded alone .* differs"):
        lazy.encoder  # noqa: B018
    again = LazyEncoder(ModelConfig(), lambda: other)
    again.remember_in(tmp_path)
    assert again.tokenizer is other.tokenizer and again.loaded
