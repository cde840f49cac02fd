"""An encoder that loads its model only when a chunk needs embedding.

A run must know its fingerprint before it can tell what is new, and the fingerprint needs the
model's identity (its files' hash, max length, pooling) and the vectors' width. All of that is
remembered per model files' hash in the state directory (`models.json`) the first time the model
is loaded; afterwards hashing the model files, which needs neither torch nor
sentence-transformers, finds it. An unchanged re-run therefore never imports torch, never loads
the model, never calibrates: it decides everything from the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from embedpipe.config import ModelConfig
from embedpipe.durable import atomic_write
from embedpipe.encoder import Encoder
from embedpipe.models import ModelIdentity, hash_model_files, resolve_model_path

NOT_LOADED = "not loaded"  # device and precision of a run that embedded nothing
MODELS_FILE = "models.json"


class LazyEncoder:
    """An Encoder (every attribute delegates to it) whose model loads on first real use."""

    def __init__(self, cfg: ModelConfig, load: Callable[[], Encoder]) -> None:
        self.cfg = cfg
        self._load = load
        self._encoder: Encoder | None = None
        self._cache: Path | None = None
        self._known: dict[str, Any] | None = None
        self._key_cached: str | None = None  # every attribute is set here: __getattr__ loads

    def remember_in(self, state_dir: Path) -> None:
        """Keep what a load taught (identity, width) in `state_dir` for later runs."""
        self._cache = state_dir / MODELS_FILE

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def encoder(self) -> Encoder:
        """The real encoder, loaded (and remembered) on first use."""
        if self._encoder is None:
            self._encoder = self._load()
            self._remember(self._encoder)
        return self._encoder

    # -- what a run needs before it knows whether anything must be embedded ---------------------

    def identity(self) -> ModelIdentity:
        known = self._recall()
        return ModelIdentity(**known["identity"]) if known else self.encoder.identity()

    def output_options(self) -> dict[str, Any]:
        known = self._recall()
        return dict(known["output"]) if known else self.encoder.output_options()

    @property
    def dim(self) -> int:
        known = self._recall()
        return int(known["dim"]) if known else self.encoder.dim

    @property
    def name(self) -> str:
        known = self._recall()
        return str(known["name"]) if known else self.encoder.name

    @property
    def device(self) -> str:
        return self._encoder.device if self._encoder is not None else NOT_LOADED

    @property
    def precision(self) -> str:
        return self._encoder.precision if self._encoder is not None else NOT_LOADED

    @property
    def precision_reason(self) -> str:
        return self._encoder.precision_reason if self._encoder is not None else ""

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.encoder, attr)  # tokenizer, encode_batch, ...: the model is needed

    # -- the memory in the state directory ------------------------------------------------------

    def _key(self) -> str:
        """What decides the identity: the model files, and the settings that change vectors."""
        if self._key_cached is None:
            _, path = resolve_model_path(self.cfg.name)
            settings = self.cfg.model_dump(include={"max_seq_length", "normalize", "prefix", "precision",
                                                    "truncate_dim", "quantization"})  # fmt: skip
            self._key_cached = hash_model_files(path) + json.dumps(settings, sort_keys=True)
        return self._key_cached

    def _recall(self) -> dict[str, Any] | None:
        if self._encoder is not None or self._cache is None:
            return None
        if self._known is None:
            self._known = _read(self._cache).get(self._key())
        return self._known

    def _remember(self, encoder: Encoder) -> None:
        if self._cache is None or not self._cache.parent.is_dir():
            return
        entries = _read(self._cache)
        entries[self._key()] = {
            "identity": asdict(encoder.identity()), "output": encoder.output_options(),
            "dim": encoder.dim, "name": encoder.name,
        }  # fmt: skip
        text = json.dumps(entries, indent=1, sort_keys=True)
        atomic_write(self._cache, lambda f: f.write(text.encode()))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


AnyEncoder = Encoder | LazyEncoder  # what a run is given: loaded, or loaded on first use
