"""An encoder that loads its model only when a chunk needs embedding.

A run must know its fingerprint before it can tell what is new, and the fingerprint needs the
model's identity (its files' hash, max length, pooling) and the vectors' width. All of that is
remembered per model files' hash in the state directory (`models.json`) the first time the model
is loaded; afterwards hashing the model files, which needs neither torch nor
sentence-transformers, finds it. An unchanged re-run therefore never imports torch, never loads
the model, never calibrates: it decides everything from the ledger.

Chunking needs only the tokenizer and the chunk limit: the tokenizer is loaded alone from the
model's folder (`models.load_tokenizer`) and the limit is the remembered identity's (or the
tokenizer's own), so a dry run, or an edit before its first batch, loads no weights. When the
model does load, its tokenizer and limit are checked against those the chunks were made with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from embedpipe.config import ModelConfig
from embedpipe.durable import atomic_write
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.models import (
    ModelIdentity,
    hash_model_files,
    load_tokenizer,
    pooling_without_weights,
    resolve_model_path,
    same_tokenizer,
)
from embedpipe.encoding.torchless import recall
from embedpipe.errors import ModelError
from embedpipe.types import NOT_LOADED, Batch

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
        self._resolved: tuple[str, Path] | None = None
        self._files: str | None = None
        self._tokenizer: Any = None  # loaded alone, before the model
        self._alone = True  # whether loading the tokenizer alone may still be tried
        self._limit: int | None = None  # the max_seq_length handed out before the model loaded
        # Vectors a caller already has from this model: chunk id -> (its text, its vector).
        self.given: Mapping[str, tuple[str, np.ndarray]] = {}

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
            encoder = self._load()
            self._check(encoder)
            self._encoder = encoder
            self._remember(encoder)
        return self._encoder

    def encode_batch(self, batch: Batch) -> np.ndarray:
        """The batch's vectors: the `given` ones of chunks whose id and text match, unencoded
        (a batch of only those loads no model); the model's for the others (a batch mixing
        both is encoded whole, then the given vectors put in)."""
        given = [self.given.get(c.id) for c in batch.chunks]
        keep = [g is not None and g[0] == c.text for g, c in zip(given, batch.chunks, strict=True)]
        if given and all(keep):
            return np.stack([np.asarray(g[1], dtype=np.float32) for g in given if g is not None])
        vectors: np.ndarray = self.encoder.encode_batch(batch)
        for i, g in enumerate(given):
            if keep[i] and g is not None:
                vectors[i] = g[1]
        return vectors

    # -- what a run needs before it knows whether anything must be embedded ---------------------

    @property
    def knows_identity(self) -> bool:
        """Whether identity, output options and width are at hand without loading the model."""
        return self._encoder is not None or self._recall() is not None

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
        return str(known["name"]) if known else self._model()[0]  # as Encoder names it

    def identity_unloaded(self) -> tuple[ModelIdentity, dict[str, Any]] | None:
        """Identity and output options worked out from the model's folder, as the loaded model
        would give them but without loading its weights (for a dry run with nothing remembered);
        None when only the loaded model can tell: truncate_dim and int8 inference need it, and
        so do modules and tokenizers other than sentence-transformers' own."""
        cfg = self.cfg
        if (
            cfg.truncate_dim is not None
            or cfg.precision == "int8"
            or self._alone_tokenizer() is None
        ):
            return None
        name, path = self._model()
        pooling = pooling_without_weights(path)
        if pooling is None:
            return None
        identity = ModelIdentity(
            name=name,
            files_hash=self._files_hash(),
            max_seq_length=self.max_seq_length,
            pooling=pooling,
            normalize=cfg.normalize,
            prefix=cfg.prefix,
        )
        return identity, {"quantization": cfg.quantization} if cfg.quantization != "none" else {}

    # -- what chunking needs: the tokenizer and the limit, no weights ---------------------------

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer: loaded alone while the model is not (the model's own when it
        cannot be), and then kept, so every chunk of a run comes from the same one."""
        alone = self._alone_tokenizer()
        return alone if alone is not None else self.encoder.tokenizer

    def _alone_tokenizer(self) -> Any:
        """The tokenizer loaded alone from the model's folder, once; None when it cannot be."""
        if self._tokenizer is None and self._encoder is None and self._alone:
            self._alone = False
            known = self._recall()
            if not (known and known.get("own_tokenizer")):  # see _check
                self._tokenizer = self._recorded_tokenizer() or load_tokenizer(
                    self._model()[1], self.cfg.max_seq_length
                )
        return self._tokenizer

    def _recorded_tokenizer(self) -> Any:
        """The model's tokenizer through `tokenizers` alone (transformers imports torch), where
        a torch-loaded encoder recorded that its `tokenizer.json` is the model's own for these
        settings (`embedpipe.encoding.torchless`); None otherwise."""
        ready = recall(self.cfg, self._files_hash)
        return ready.fast_tokenizer(self._model()[1]) if ready is not None else None

    @property
    def max_seq_length(self) -> int:
        """Most tokens one chunk may have, as the loaded Encoder says it: remembered in its
        identity, else the limit of the tokenizer loaded alone."""
        if self._encoder is not None:
            return self._encoder.max_seq_length
        known = self._recall()
        if known:
            limit = int(known["identity"]["max_seq_length"])
        else:
            tokenizer = self.tokenizer  # loads the model when the tokenizer cannot load alone
            if self._encoder is not None:
                return self._encoder.max_seq_length
            limit = int(self.cfg.max_seq_length or tokenizer.model_max_length)
        self._limit = limit
        return limit

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id, which the batcher pads with."""
        return int(self.tokenizer.pad_token_id or 0)

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
        return getattr(self.encoder, attr)  # encode_batch, batch_token_budget, ...: the model

    # -- the memory in the state directory ------------------------------------------------------

    def _model(self) -> tuple[str, Path]:
        """The model's display name and folder."""
        if self._resolved is None:
            self._resolved = resolve_model_path(self.cfg.name)
        return self._resolved

    def _check(self, encoder: Encoder) -> None:
        """Chunks made before the load must be the model's: same tokenizer, same limit."""
        where = f"{self._model()[1]}"
        if self._tokenizer is not None and not same_tokenizer(self._tokenizer, encoder.tokenizer):
            self._remember(encoder, own_tokenizer=True)
            raise ModelError(
                f"The tokenizer loaded alone from {where} differs from the model's, so this run's "
                "chunks would not be the model's; nothing was embedded: run again (runs on this "
                "state directory now chunk with the model's own tokenizer)"
            )
        if self._limit is not None and self._limit != encoder.max_seq_length:
            raise ModelError(
                f"The model in {where} takes {encoder.max_seq_length} tokens, but this run chunked "
                f"for {self._limit} (as remembered in {self._cache or MODELS_FILE}, or read from the "
                f"model's folder); nothing was embedded: delete {MODELS_FILE} in the state "
                "directory and run again"
            )

    def _key(self) -> str:
        """What decides the identity: the model files, and the settings that change vectors."""
        if self._key_cached is None:
            settings = self.cfg.model_dump(
                include={
                    "max_seq_length",
                    "normalize",
                    "prefix",
                    "precision",
                    "truncate_dim",
                    "quantization",
                }
            )
            self._key_cached = self._files_hash() + json.dumps(settings, sort_keys=True)
        return self._key_cached

    def _files_hash(self) -> str:
        if self._files is None:
            self._files = hash_model_files(self._model()[1])
        return self._files

    def _recall(self) -> dict[str, Any] | None:
        if self._encoder is not None or self._cache is None:
            return None
        if self._known is None:
            self._known = _read(self._cache).get(self._key())
        return self._known

    def _remember(self, encoder: Encoder, *, own_tokenizer: bool = False) -> None:
        if self._cache is None or not self._cache.parent.is_dir():
            return
        entries = _read(self._cache)
        own = own_tokenizer or bool(entries.get(self._key(), {}).get("own_tokenizer"))
        entries[self._key()] = {
            "identity": asdict(encoder.identity()),
            "output": encoder.output_options(),
            "dim": encoder.dim,
            "name": encoder.name,
            **({"own_tokenizer": True} if own else {}),
        }
        text = json.dumps(entries, indent=1, sort_keys=True)
        atomic_write(self._cache, lambda f: f.write(text.encode()))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


AnyEncoder = Encoder | LazyEncoder  # what a run is given: loaded, or loaded on first use


def run_identity(encoder: AnyEncoder, *, dry_run: bool) -> tuple[ModelIdentity, dict[str, Any]]:
    """Identity and output options for a run's fingerprint. A dry run with nothing remembered
    works them out from the model's folder rather than load the model, unless only the loaded
    model can tell."""
    if dry_run and isinstance(encoder, LazyEncoder) and not encoder.knows_identity:
        unloaded = encoder.identity_unloaded()
        if unloaded is not None:
            return unloaded
    return encoder.identity(), encoder.output_options()
