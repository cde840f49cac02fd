"""Nothing heavy before it is needed: an unchanged re-run decides everything from the ledger and
never imports torch or loads the model (embedpipe/lazymodel.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import embedpipe
from embedpipe.lazymodel import MODELS_FILE, NOT_LOADED
from embedpipe.ledger import state_dir_for
from tests.test_incremental import config, corpus_files

PROBE = """
import json, sys
import embedpipe
from embedpipe.config import load_config
report = embedpipe.run(load_config(None, json.loads(sys.argv[1])))
print(json.dumps({"torch": "torch" in sys.modules, "sentence_transformers": "sentence_transformers"
                  in sys.modules, "embedded": report.chunks_embedded, "skipped": report.chunks_skipped,
                  "device": report.device, "fingerprint": report.fingerprint}))
"""


def probe(cfg: embedpipe.RunConfig) -> dict[str, object]:
    """Run `cfg` in a fresh process and say what it imported."""
    data = json.dumps(cfg.model_dump(exclude_unset=True))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, data], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_unchanged_rerun_imports_no_torch_and_keeps_the_fingerprint(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(6))
    cfg = config(root, "faiss", tmp_path)
    first = probe(cfg)
    assert first["torch"] and first["embedded"]
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
    assert edited["torch"] and edited["embedded"] == 1 and edited["device"] == "cpu"


def test_same_fingerprint_with_and_without_the_model_loaded(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(corpus_files(3))
    cfg = config(root, "faiss", tmp_path)
    loaded = embedpipe.run(cfg)  # in-process: the model cache may already hold the model
    recalled = probe(cfg)
    assert recalled["fingerprint"] == loaded.fingerprint and recalled["embedded"] == 0
