"""A deterministic stand-in for the Encoder, for rule tests that need no model.

`FakeEncoder` has every attribute the pipeline and the local engine read on an `Encoder`
(embedpipe/runs/pipeline.py, engines/local.py): identity and output options for the fingerprint,
name/device/precision for the report, the packaged model's real fast tokenizer (the chunker needs
its offsets), the token budget, and `encode_batch`. Its vectors are the mean of a fixed random
unit vector per token id (special tokens nearly silent), normalised: equal texts give equal vectors, texts sharing words point
the same way, and nothing loads torch weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash

from embedpipe.encoding.models import ModelIdentity, resolve_model_path
from embedpipe.types import Batch

FAKE_NAME = "fake-encoder"
# [CLS]/[SEP] open and close every chunk: nearly silent, so two texts meet on their words.
SPECIAL_WEIGHT = 0.05


class FakeEncoder:
    """`Pipeline(config, encoder=FakeEncoder())`: the Encoder's surface, vectors from token ids."""

    def __init__(self, dim: int = 32, *, seed: int = 0, max_seq_length: int = 256) -> None:
        from transformers import AutoTokenizer

        _name, self.path = resolve_model_path(None)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.name, self.dim, self.seed = FAKE_NAME, dim, seed
        self.device, self.precision, self.precision_reason = "cpu", "fp32", ""
        self.token_cap: int | None = None
        self.oom_backoffs = 0
        self._max_seq_length = max_seq_length
        table = np.random.default_rng(seed).standard_normal((len(self.tokenizer), dim))
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        table[self.tokenizer.all_special_ids] *= SPECIAL_WEIGHT  # content words decide direction
        self._table = table.astype(np.float32)

    def with_tokenizer(self, tokenizer: Any) -> FakeEncoder:
        """A copy that tokenises with `tokenizer` (a TokenizerSpy), vectors unchanged."""
        twin = copy.copy(self)
        twin.tokenizer = tokenizer
        return twin

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def identity(self) -> ModelIdentity:
        """A dataclass like the real one, so `fingerprint()` hashes it the same way."""
        recipe = f"{FAKE_NAME}:{self.dim}:{self.seed}".encode()
        return ModelIdentity(
            name=FAKE_NAME,
            files_hash=xxhash.xxh3_128_hexdigest(recipe),
            max_seq_length=self.max_seq_length,
            pooling="mean-of-token-vectors",
            normalize=True,
            prefix="",
        )

    def output_options(self) -> dict[str, Any]:
        return {}

    def batch_token_budget(self, requested: int) -> int:
        return requested

    def encode_batch(self, batch: Batch) -> np.ndarray:
        return self.encode_ids(batch.input_ids, batch.attention_mask)

    def encode_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(n, dim) float32 unit vectors: the masked mean of the token ids' table rows."""
        if len(input_ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        mask = attention_mask[..., None].astype(np.float32)
        summed = (self._table[input_ids] * mask).sum(axis=1)
        norms = np.linalg.norm(summed, axis=1, keepdims=True)
        return (summed / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode_texts(self, texts: Sequence[str], *, prefix: str | None = None) -> np.ndarray:
        """Vectors for raw texts (queries), tokenised like the real encoder does."""
        enc = self.tokenizer(
            [(prefix or "") + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="np",
        )
        return self.encode_ids(enc["input_ids"], enc["attention_mask"])


class TokenizerSpy:
    """The real tokenizer, noting every text it is called on (what the chunker tokenised)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.texts: list[str] = []

    def __call__(self, text: str | list[str], *args: Any, **kwargs: Any) -> Any:
        self.texts.extend([text] if isinstance(text, str) else text)
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)
