"""Models: a name or path resolved to a local folder, and the identity hash of its files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from embedpipe.encoding.models import (
    DEFAULT_MODEL_NAME,
    hash_model_files,
    load_model,
    model_identity,
    pooling_signature,
    resolve_model_path,
)
from embedpipe.errors import ModelError

# hash_model_files of the packaged all-MiniLM-L6-v2, computed before the encoder was split:
# the fingerprint of every index built with the default model depends on it.
PACKAGED_FILES_HASH = "72f6f1492e75a35e18214f9d7e01e273"
HEAVY = ("torch", "sentence_transformers", "transformers")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder shaped like a saved model: config, tokenizer and weight files."""
    root = tmp_path / "model"
    (root / "1_Pooling").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "vocab.txt").write_text("[PAD]\nhello\n")
    (root / "model.safetensors").write_bytes(bytes(range(256)))
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode": "mean"}')
    return root


def test_packaged_model_hash_is_unchanged_and_needs_no_torch() -> None:
    script = (
        "import json, sys\n"
        "from embedpipe.encoding.models import hash_model_files, resolve_model_path\n"
        "name, path = resolve_model_path(None)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps([name, hash_model_files(path), heavy]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    name, files_hash, heavy = json.loads(out.stdout)
    assert (name, files_hash) == (DEFAULT_MODEL_NAME, PACKAGED_FILES_HASH)
    assert heavy == [], f"identity must not import {heavy}"


def test_files_hash_does_not_depend_on_location(model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere" / "copy")
    assert hash_model_files(copy) == hash_model_files(model_dir)


def test_files_hash_ignores_readme_and_cache(model_dir: Path) -> None:
    before = hash_model_files(model_dir)
    (model_dir / "README.md").write_text("# a model card")
    (model_dir / ".cache").mkdir()
    (model_dir / ".cache" / "state.json").write_text("{}")
    (model_dir / "notes.log").write_text("not a model file")
    assert hash_model_files(model_dir) == before


def test_files_hash_changes_with_any_weight_byte(model_dir: Path) -> None:
    before = hash_model_files(model_dir)
    (model_dir / "model.safetensors").write_bytes(bytes([1]) + bytes(range(1, 256)))
    assert hash_model_files(model_dir) != before


def test_files_hash_changes_when_a_file_is_renamed(model_dir: Path) -> None:
    before = hash_model_files(model_dir)
    (model_dir / "vocab.txt").rename(model_dir / "tokens.txt")
    assert hash_model_files(model_dir) != before


def test_a_local_folder_resolves_to_itself(model_dir: Path) -> None:
    assert resolve_model_path(str(model_dir)) == (str(model_dir), model_dir.resolve())


def test_missing_local_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--model"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="never downloads"):
        resolve_model_path("someone/not-cached-model")


def test_a_folder_that_is_no_model_fails_to_load_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"Could not load .* from {tmp_path}"):
        load_model(tmp_path, "cpu")


class _Pooling:
    def get_config_dict(self) -> dict[str, Any]:
        return {"pooling_mode": "mean", "embedding_dimension": 8}


def test_pooling_signature_names_each_module_with_its_sorted_config() -> None:
    signature = pooling_signature([_Pooling(), SimpleNamespace()])
    assert (
        signature == "_Pooling{'embedding_dimension': 8, 'pooling_mode': 'mean'},SimpleNamespace{}"
    )


def test_identity_leaves_the_transformer_out_of_the_pooling(model_dir: Path) -> None:
    identity = model_identity(
        "mine", model_dir, [object(), _Pooling()], max_seq_length=128, normalize=True, prefix="p: "
    )
    assert identity.pooling == pooling_signature([_Pooling()])
    assert identity.files_hash == hash_model_files(model_dir)
    assert (identity.name, identity.max_seq_length, identity.prefix) == ("mine", 128, "p: ")
