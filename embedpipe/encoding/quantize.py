"""Output quantization: the int8 or binary codes of each stored vector, as float32 rows.

Both are fixed functions of one vector, never of the batch or of calibration data, so a chunk gets
the same stored vector in every run however it was batched. The results stay float32 arrays, so
every sink stores them unchanged and cosine / inner-product search works as before:

- int8: each vector is scaled so its largest |component| is 127 and rounded; the stored vector
  is those integer codes re-normalised, so `round(v * 127 / max|v|)` gives the int8 codes back
  exactly (a downstream int8 store loses nothing more).
- binary: the sign of each component (> 0 -> +1, else -1, the bit of
  `sentence_transformers.quantization.quantize_embeddings(..., "binary")`) re-normalised to
  ±1/sqrt(dim); `v > 0` gives the bits back.

Queries are not quantized: a float query against quantized documents ranks better than a
quantized query does (asymmetric search). Matryoshka truncation happens earlier, in the encoder,
for documents and queries alike.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Quantization = Literal["none", "int8", "binary"]
QUANTIZATIONS: tuple[str, ...] = ("none", "int8", "binary")
INT8_LEVEL = 127  # symmetric codes in [-127, 127]: -128 would make the scale asymmetric


def quantize(vectors: np.ndarray, kind: str, *, normalize: bool) -> np.ndarray:
    """Float32 rows holding `kind`'s codes (see the module docstring), re-normalised when asked."""
    if kind == "none":
        return vectors
    if kind == "int8":
        peak = np.abs(vectors).max(axis=1, keepdims=True)
        scale = np.where(peak > 0, peak / INT8_LEVEL, 1.0)
        codes = np.rint(vectors / scale)
        out = codes if normalize else codes * scale  # unnormalised: keep each vector's magnitude
    elif kind == "binary":
        out = np.where(vectors > 0, 1.0, -1.0)
    else:
        raise ValueError(f"Unknown quantization {kind!r}: use one of {', '.join(QUANTIZATIONS)}")
    out = out.astype(np.float32)
    return _unit(out) if normalize else out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
