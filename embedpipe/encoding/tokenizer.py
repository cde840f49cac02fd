"""The model's fast tokenizer through the `tokenizers` library alone: no transformers, no torch.

transformers' fast tokenizers are a Python wrapper around a `tokenizers.Tokenizer` read from the
model's `tokenizer.json`; each call sets the wrapped tokenizer's truncation and padding, encodes,
and converts. `FastTokenizer` does the same for the calls embedpipe makes (the chunker's and the
encoder's), so a process that runs the cached OpenVINO export never imports transformers (whose
`AutoTokenizer` imports torch: ~5 s). It is used only where a torch-loaded encoder found the
model's own tokenizer to be that `tokenizer.json` (`embedpipe.encoding.torchless`), and tests hold it to
the model's own ids and attention masks.

The wrapped tokenizer is never reconfigured after it is made: each (truncation, padding) a call
asks for gets its own configured copy, so threads may share one FastTokenizer.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class FastTokenizer:
    """A `tokenizers.Tokenizer` answering the transformers calls embedpipe makes.

    `model_max_length` is the most tokens a chunk may have (the model's max_seq_length),
    `pad_token_id`/`pad_token` what batches are padded with, on the right, and truncation cuts
    on the right, as transformers does by default.
    """

    is_fast = True  # offsets are available (the chunker asks)

    def __init__(
        self,
        tokenizer: Any,
        *,
        model_max_length: int,
        pad_token_id: int,
        pad_token: str,
        model_input_names: Sequence[str] = ("input_ids", "attention_mask"),
    ) -> None:
        self._base = tokenizer
        self.model_max_length = model_max_length
        self.pad_token_id = pad_token_id
        self.pad_token = pad_token
        self.model_input_names = list(model_input_names)
        self._configured: dict[tuple[int | None, bool], Any] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> FastTokenizer:
        """A copy with a lock and configured tokenizers of its own (a query copy, see
        `Encoder._tokenize`): a lock cannot be copied."""
        return FastTokenizer(
            copy.deepcopy(self._base, memo),
            model_max_length=self.model_max_length,
            pad_token_id=self.pad_token_id,
            pad_token=self.pad_token,
            model_input_names=self.model_input_names,
        )

    @classmethod
    def from_file(cls, path: Path, **settings: Any) -> FastTokenizer:
        """The tokenizer in a `tokenizer.json` with `settings` (see the class)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), **settings)

    @property
    def backend_tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` as read from the file (as transformers names it)."""
        return self._base

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens the post-processor adds to one sequence (or a pair)."""
        return int(self._base.num_special_tokens_to_add(pair))

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        padding: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_offsets_mapping: bool = False,
        return_attention_mask: bool = True,
        return_token_type_ids: bool | None = None,
        verbose: bool = True,
    ) -> dict[str, Any]:
        """Encode one text or a batch as a transformers fast tokenizer would: `input_ids`,
        `attention_mask` (unless declined), `offset_mapping` (when asked); numpy int64 arrays
        with `return_tensors="np"` (a batch padded to its longest with `padding=True`).
        `token_type_ids` are never returned (embedpipe never asks for them)."""
        if return_tensors not in (None, "np"):
            raise ValueError(f"FastTokenizer returns lists or numpy arrays, not {return_tensors!r}")
        single = isinstance(text, str)
        texts = [text] if isinstance(text, str) else list(text)
        limit = (max_length or self.model_max_length) if truncation else None
        encodings = self._tokenizer(limit, padding).encode_batch(
            texts, add_special_tokens=add_special_tokens
        )
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        if return_tensors == "np":
            return {k: np.array(v, dtype=np.int64) for k, v in out.items()}
        return {k: v[0] for k, v in out.items()} if single else out

    def _tokenizer(self, limit: int | None, padding: bool) -> Any:
        """The base tokenizer configured for `limit` (None: no truncation) and `padding`."""
        key = (limit, padding)
        found = self._configured.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._configured:
                from tokenizers import Tokenizer

                tok = Tokenizer.from_str(self._base.to_str())
                tok.no_truncation()
                tok.no_padding()
                if limit is not None:
                    tok.enable_truncation(
                        limit, stride=0, strategy="longest_first", direction="right"
                    )
                if padding:
                    tok.enable_padding(
                        direction="right",
                        pad_id=self.pad_token_id,
                        pad_type_id=0,
                        pad_token=self.pad_token,
                    )
                self._configured[key] = tok
            return self._configured[key]
