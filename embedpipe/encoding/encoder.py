"""encode(Batch) -> vectors: the forward passes, CUDA out-of-memory splitting and output options.

The encoder takes the chunker's token ids as they are: text is tokenised once, by the chunker.
The model runs on torch (the transformer in the chosen precision, pooling and normalisation in
float32) or, on CPUs, on OpenVINO (the whole model exported once: `embedpipe.encoding.openvino`); both
stay within the parity bar (cosine >= 0.999 to fp32 `SentenceTransformer.encode`), except int8,
which is only ever asked for (`embedpipe.encoding.int8`). Which model and what identifies it live in
`embedpipe.encoding.models`; device, backend, precision and threads in `embedpipe.encoding.precision`.

This module imports neither pydantic nor the config: anything with the attributes of
`ModelSettings` configures it, so the GPU check runs it on machines without the full install.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from embedpipe.encoding import torchless
from embedpipe.encoding.int8 import Int8Stats, int8_model
from embedpipe.encoding.models import (
    ModelIdentity,
    checked_truncate_dim,
    hash_model_files,
    load_model,
    model_identity,
    pooling_signature,
    resolve_model_path,
)
from embedpipe.encoding.openvino import HINTS, OpenVinoExport, OpenVinoModel, openvino_dir
from embedpipe.encoding.precision import (
    CALIBRATION_TEXTS,
    Choice,
    calibration_blocks,
    choice_parts,
    choose_remembered,
    cosines,
    cpu_has_native_bf16,
    measures,
    release_cuda_cache,
    resolve_device,
    set_torch_threads,
    to_device,
    torch_dtype,
)
from embedpipe.encoding.quantize import quantize
from embedpipe.errors import ModelError
from embedpipe.types import Batch

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_GPU_BATCH_TOKENS",
    "Encoder",
    "ModelSettings",
    "cpu_has_native_bf16",
    "is_out_of_memory",
    "resolve_model_path",
]

log = logging.getLogger(__name__)

# Share of the GPU's free memory the default token budget may plan for, and its ceiling
# (beyond ~half a million tokens per batch a GPU gains nothing but latency).
GPU_MEMORY_SHARE = 0.5
MAX_GPU_BATCH_TOKENS = 1 << 19
# Most padded tokens one CPU forward pass takes: a batch's activations (attention grows with
# rows x width^2) would otherwise grow until a corpus fills the batch budget; CPU throughput
# per token is the same in pieces this size (README: Throughput and benchmarks; `scripts/bench_memory.py`).
CPU_PASS_TOKENS = 4096

# The loader the constructor calls, looked up at call time so tests can hand over a loaded model.
_load = load_model


class ModelSettings(Protocol):
    """What the encoder reads from its configuration (`embedpipe.config.ModelConfig` has it)."""

    @property
    def name(self) -> str | None: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def normalize(self) -> bool: ...
    @property
    def prefix(self) -> str: ...
    @property
    def max_seq_length(self) -> int | None: ...
    @property
    def threads(self) -> int | None: ...
    @property
    def truncate_dim(self) -> int | None: ...
    @property
    def quantization(self) -> str: ...

    # Read when present, else their defaults: backend ('auto'), int8_min_cosine (0.99).


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, whichever class this torch version raises it as."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class Encoder:
    """A sentence-transformers model, loaded once, that turns Batches into float32 vectors.

    `backend` is torch or openvino; `precision_reason` says why backend and precision were
    chosen (for int8 also how close it stays to fp32: `int8`); `token_cap` is the most padded
    tokens one forward pass may take (CPU_PASS_TOKENS on the CPU; on CUDA None until a CUDA
    out-of-memory), and `oom_backoffs` counts how often it was halved.
    """

    def __init__(self, cfg: ModelSettings | None = None) -> None:
        if cfg is None:
            from embedpipe.config import ModelConfig

            cfg = ModelConfig()
        self.cfg = cfg
        self.name, self.path = resolve_model_path(cfg.name)
        self.device = resolve_device(cfg.device)
        self.threads = set_torch_threads(self.device, cfg.threads)
        self.model = _load(self.path, self.device)
        if cfg.max_seq_length:
            self.model.max_seq_length = cfg.max_seq_length
        self.tokenizer = self.model.tokenizer
        self._query_tokenizer: Any = None  # see _tokenize
        self._tokenize_lock = threading.Lock()
        model_dim = int(self.model.get_embedding_dimension() or 0)
        self.truncate_dim = checked_truncate_dim(cfg.truncate_dim, model_dim, self.name)
        self.dim = self.truncate_dim or model_dim
        self.quantization = cfg.quantization
        self._takes_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", []
        )
        self.token_cap = None if self.device.startswith("cuda") else CPU_PASS_TOKENS
        self.oom_backoffs = 0
        self._files_hash: str | None = None
        self._blocks: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._reference: np.ndarray | None = None  # torch fp32 vectors of the calibration sample
        self._export: OpenVinoExport | None = None
        self._checked: dict[str, OpenVinoModel] = {}  # compiled by parity checks, by precision
        self._openvino: OpenVinoModel | None = None
        self.int8: Int8Stats | None = None
        native = cpu_has_native_bf16  # looked up now: tests replace it
        choice = choose_remembered(
            getattr(cfg, "backend", "auto"),
            cfg.precision,
            self.device,
            self._model_key(),
            self.parity,
            native_bf16=native,
        )
        self.backend, self.precision = choice.backend, choice.precision
        self.precision_reason = choice.reason
        if self.backend == "openvino":
            self._use_openvino()
            self._record_torchless(choice, native)
        self.dtype: torch.dtype = torch_dtype(
            "fp32" if self.backend == "openvino" else self.precision
        )
        self.model[0].to(self.dtype)  # the transformer; pooling stays fp32

    @property
    def max_seq_length(self) -> int:
        """Most tokens one chunk may have: the configured limit, else the model's own."""
        return int(self.model.max_seq_length or self.tokenizer.model_max_length)

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id, which the batcher pads with."""
        return int(self.tokenizer.pad_token_id or 0)

    def identity(self) -> ModelIdentity:
        """What the fingerprint needs to know about this model."""
        return model_identity(
            self.name,
            self.path,
            self.model,
            max_seq_length=self.max_seq_length,
            normalize=self.cfg.normalize,
            prefix=self.cfg.prefix,
            files_hash=self._files(),
        )

    def output_options(self) -> dict[str, Any]:
        """What this encoder does to the model's vectors beyond `identity()`, for the fingerprint.

        Only options that are set appear, so indexes built before they existed keep their
        fingerprint. Backend and precision do not change it (the parity bar bounds them), int8
        inference does.
        """
        out: dict[str, Any] = {}
        if self.truncate_dim:
            out["truncate_dim"] = self.truncate_dim
        if self.quantization != "none":
            out["quantization"] = self.quantization
        if self.precision == "int8":
            out["inference"] = "int8"
        return out

    # -- budgets ---------------------------------------------------------------------------

    def batch_token_budget(self, requested: int) -> int:
        """The batcher's token budget: `requested` on CPU; on CUDA sized to free GPU memory.

        On CUDA the budget is GPU_MEMORY_SHARE of the free memory over an estimate of the
        activation bytes per token, clamped to [requested, MAX_GPU_BATCH_TOKENS]; an
        out-of-memory later still halves it through `token_cap`.
        """
        if not self.device.startswith("cuda"):
            return requested
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(self.device))
        fits = int(free * GPU_MEMORY_SHARE / self._activation_bytes_per_token())
        return max(requested, min(fits, MAX_GPU_BATCH_TOKENS))

    def _activation_bytes_per_token(self) -> int:
        """A generous bound on inference activations per token of one layer, attention included."""
        conf = getattr(self.model[0], "auto_model", None)
        conf = getattr(conf, "config", None)
        hidden = int(getattr(conf, "hidden_size", 1024))
        inner = int(getattr(conf, "intermediate_size", 4 * hidden))
        heads = int(getattr(conf, "num_attention_heads", 16))
        elem = 4 if self.precision == "fp32" else 2
        # hidden states, q/k/v/out, the MLP's inner layer and one row of attention scores per
        # head; x2 for the allocator's fragmentation and temporaries.
        return 2 * elem * (6 * hidden + 2 * inner + heads * self.max_seq_length)

    # -- encoding --------------------------------------------------------------------------

    def encode_batch(self, batch: Batch) -> np.ndarray:
        """Vectors (n, dim) float32 to store for a padded batch of chunks: quantized when asked.

        Queries (`encode_texts`) stay float: see `embedpipe.encoding.quantize`.
        """
        vectors = self.encode_ids(batch.input_ids, batch.attention_mask)
        return quantize(vectors, self.quantization, normalize=self.cfg.normalize)

    def encode_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Vectors (n, dim) float32 for padded input ids and their attention mask.

        Rows are split into pieces of at most `token_cap` padded tokens, each trimmed to its own
        longest member; a CUDA out-of-memory halves the cap and retries the piece.
        """
        if len(input_ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        width = int(attention_mask.sum(axis=1).max())
        ids, mask = input_ids[:, :width], attention_mask[:, :width]
        if self.token_cap is not None and len(ids) > 1 and len(ids) * width > self.token_cap:
            step = max(1, self.token_cap // width)
            return np.concatenate(
                [
                    self.encode_ids(ids[i : i + step], mask[i : i + step])
                    for i in range(0, len(ids), step)
                ]
            )
        try:
            return self._encode_piece(ids, mask)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if len(ids) == 1:
                raise ModelError(
                    f"CUDA out of memory on a single chunk of {width} tokens: lower "
                    "chunking.chunk_tokens or model.max_seq_length, or free GPU memory"
                ) from exc
        self._halve_token_cap(len(ids), width)
        return self.encode_ids(ids, mask)

    def _halve_token_cap(self, rows: int, width: int) -> None:
        """After a CUDA out-of-memory on rows x width tokens: free the cache, halve the cap."""
        release_cuda_cache()
        self.oom_backoffs += 1
        self.token_cap = max(width, rows * width // 2)
        log.warning(
            "CUDA out of memory on %d x %d tokens: token cap halved to %d for the rest of the run",
            rows,
            width,
            self.token_cap,
        )

    def encode_texts(self, texts: Sequence[str], *, prefix: str | None = None) -> np.ndarray:
        """Vectors for raw texts (queries, quick use); truncated to the model's limit like ST does."""
        ids, mask = self._tokenize(texts, self.cfg.prefix if prefix is None else prefix)
        return self.encode_ids(ids, mask)

    def _tokenize(self, texts: Sequence[str], prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
        # A fast tokenizer sets its padding and truncation state before each call, a mutation
        # that fails ("Already borrowed") while another thread's call runs: queries tokenize on
        # a copy of their own (the chunker keeps the original), one call at a time.
        with self._tokenize_lock:
            if self._query_tokenizer is None:
                self._query_tokenizer = copy.deepcopy(self.tokenizer)
            enc = self._query_tokenizer(
                [prefix + t for t in texts],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
                return_token_type_ids=False,
            )
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    def _encode_piece(
        self, ids: np.ndarray, mask: np.ndarray, transformer: Any = None
    ) -> np.ndarray:
        """One forward pass (OpenVINO, or torch with `transformer`), truncated and normalised."""
        if self._openvino is not None and transformer is None:
            vectors = self._openvino(ids, mask)
        else:
            vectors = self._torch_vectors(ids, mask, transformer)
        if self.truncate_dim:  # Matryoshka: the leading dims, re-normalised below
            vectors = vectors[:, : self.truncate_dim]
        if self.cfg.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _torch_vectors(
        self, ids: np.ndarray, mask: np.ndarray, transformer: Any = None
    ) -> np.ndarray:
        """Sentence vectors from torch: the transformer in its precision, the rest in fp32."""
        import torch

        features: dict[str, Any] = {
            "input_ids": to_device(ids, self.device),
            "attention_mask": to_device(mask, self.device),
        }
        if self._takes_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            out = (transformer or self.model[0])(features)
            out["token_embeddings"] = out["token_embeddings"].float()
            for module in list(self.model)[1:]:
                out = module(out)
            return out["sentence_embedding"].float().cpu().numpy()

    # -- backend and precision -------------------------------------------------------------

    def parity(self, backend: str, precision: str) -> float:
        """Min cosine to torch fp32 of `backend` in `precision` on the calibration sample.

        The fp32 transformer stays untouched (torch runs a converted copy); an OpenVINO model
        compiled here is kept for the encoder to use; one that OpenVINO does not run in
        `precision` (a bf16 hint on a CPU without bf16 runs f32) raises ModelError, so the choice
        passes it over rather than record a precision that does not run. About 0.5 s for MiniLM on 2 idle cores,
        plus a first OpenVINO export.
        """
        blocks, reference = self._calibration()
        if backend == "openvino":
            model = self._openvino_export().compile(precision)
            if model.precision != precision:  # the candidate is not what would run
                raise ModelError(f"OpenVINO runs {model.precision} here when {precision} is asked")
            self._checked[precision] = model
            ours = np.concatenate([model(ids, mask) for ids, mask in blocks])
        else:
            module = copy.deepcopy(self.model[0]).to(torch_dtype(precision))
            ours = np.concatenate([self._torch_vectors(i, m, module) for i, m in blocks])
        return float(cosines(ours, reference).min())

    def _calibration(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """The calibration sample's padded blocks and their torch fp32 vectors (computed once,
        only for a parity check: a remembered choice runs no torch pass at start-up)."""
        blocks = self._calibration_blocks()
        if self._reference is None:
            self._reference = np.concatenate([self._torch_vectors(i, m) for i, m in blocks])
        return blocks, self._reference

    def _calibration_blocks(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._blocks is None:
            self._blocks = [
                self._tokenize(part, self.cfg.prefix)
                for part in calibration_blocks(CALIBRATION_TEXTS)
            ]
        return self._blocks

    def _use_openvino(self) -> None:
        """Run on OpenVINO from now on: the model a parity check compiled, else a new one."""
        export = self._openvino_export()
        if self.precision == "int8":
            self._openvino, self.int8 = int8_model(
                export,
                lambda texts: self._tokenize(texts, self.cfg.prefix),
                self._torch_vectors,
                hint="bf16" if cpu_has_native_bf16() else "f32",
                min_cosine=float(getattr(self.cfg, "int8_min_cosine", 0.99)),
            )
            self.precision_reason += f"; {self.int8.describe()}"
        else:
            self._openvino = self._checked.get(self.precision) or export.compile(self.precision)
            self._note_ran(self._openvino)
        self._checked.clear()

    def _note_ran(self, model: OpenVinoModel) -> None:
        """Report what OpenVINO runs: bf16 asked for on a CPU without native bf16 runs f32."""
        if (ran := model.precision) != self.precision:
            self.precision_reason = (
                f"openvino {ran}: {self.precision} asked for, but this CPU has no native "
                f"{self.precision}, so OpenVINO runs {ran}"
            )
            self.precision = ran

    def _record_torchless(self, choice: Choice, native_bf16: Callable[[], bool]) -> None:
        """Leave what a later process needs to run this model without torch: the export, the
        tokenizer file when it is the model's own, and what the fingerprint needs
        (`embedpipe.encoding.torchless`)."""
        if self.device != "cpu" or choice.precision == "int8" or self._export is None:
            return
        tokenizer = torchless.tokenizer_settings(self.tokenizer, self.path, self.max_seq_length)
        if tokenizer is None:
            return
        backend = getattr(self.cfg, "backend", "auto")
        parts = None
        if measures(backend, self.cfg.precision, self.device):  # the remembered choice's key
            parts = choice_parts(backend, self.cfg.precision, self._model_key(), native_bf16())
        ready = torchless.Ready(
            name=self.name,
            xml=self._export.xml().relative_to(openvino_dir()).as_posix(),
            precision=choice.precision,
            reason=choice.reason,
            dim=int(self.model.get_embedding_dimension() or 0),
            max_seq_length=self.max_seq_length,
            token_types=self._takes_token_types,
            identity=asdict(self.identity()),
            tokenizer=tokenizer,
            choice=parts,
        )
        torchless.remember(self.cfg, self._files(), ready)
        if self.cfg.precision == "auto" and choice.precision in ("fp32", "bf16"):
            # Queries on the index this run writes ask for fp32 (`Index.model_settings`) and
            # apply their prompt themselves: the same export at full precision, which passes the
            # parity bar whenever the run's choice did, so the first query process after a
            # nightly run does not load torch to find that out.
            query = SimpleNamespace(**{**torchless.settings(self.cfg), "precision": "fp32"})
            query.prefix = ""
            torchless.remember(
                query,
                self._files(),
                dataclasses.replace(
                    ready,
                    precision="fp32",
                    reason=f"openvino fp32: the export a run chose openvino {choice.precision} "
                    "for, at full precision",
                    identity={**ready.identity, "prefix": ""},
                    chosen=choice.precision,  # forgotten or changed, the torch way decides
                ),
            )

    def _openvino_export(self) -> OpenVinoExport:
        if self._export is None:
            blocks = self._calibration_blocks()  # the last one is the export's trace example
            self._export = OpenVinoExport(
                self.model,
                self._files(),
                pooling_signature(list(self.model)[1:]),
                self._takes_token_types,
                example=blocks[-1],
                threads=self.threads,
            )
        return self._export

    def _files(self) -> str:
        """The hash of the model's files (computed once)."""
        if self._files_hash is None:
            self._files_hash = hash_model_files(self.path)
        return self._files_hash

    def _model_key(self) -> dict[str, Any]:
        """What about the model a remembered backend/precision choice depends on."""
        return {
            "files": self._files(),
            "modules": pooling_signature(self.model),
            "max_seq_length": self.max_seq_length,
            "prefix": self.cfg.prefix,
        }


class ExportedEncoder(Encoder):
    """An Encoder on the model's cached OpenVINO export and its `tokenizer.json`: neither torch
    nor sentence-transformers is imported. Made only from what a torch-loaded Encoder recorded
    for the same settings on this machine (`exported_encoder`); it encodes as that one did."""

    def __init__(
        self,
        cfg: ModelSettings,
        name: str,
        path: Path,
        files_hash: str,
        ready: torchless.Ready,
        tokenizer: Any,
    ) -> None:
        # No Encoder.__init__: that loads the model with torch.
        self.cfg, self.name, self.path, self.ready = cfg, name, path, ready
        self.device = "cpu"
        self.threads = torchless.cpu_threads(cfg.threads)
        self.tokenizer = tokenizer
        # Encoder._tokenize gives queries a copy of a transformers tokenizer; a FastTokenizer
        # is never reconfigured, so queries share it (it holds a lock: no deepcopy).
        self._query_tokenizer = tokenizer
        self._tokenize_lock = threading.Lock()
        self.truncate_dim = checked_truncate_dim(cfg.truncate_dim, ready.dim, name)
        self.dim = self.truncate_dim or ready.dim
        self.quantization = cfg.quantization
        self._takes_token_types = ready.token_types
        self.token_cap = CPU_PASS_TOKENS
        self.oom_backoffs = 0
        self._files_hash = files_hash
        self._blocks, self._reference, self._export = None, None, None
        self._checked = {}
        self.int8 = None
        self.backend, self.precision = "openvino", ready.precision
        self.precision_reason = ready.reason
        xml = openvino_dir() / ready.xml
        self._openvino = OpenVinoModel(
            xml, HINTS.get(ready.precision, ready.precision), self.threads
        )
        self._note_ran(self._openvino)
        self.precision_reason += "; cached OpenVINO export, torch not loaded"

    @property
    def max_seq_length(self) -> int:
        return self.ready.max_seq_length

    def identity(self) -> ModelIdentity:
        # The record is keyed by the model's files, not by where they are: the name is the one
        # this config gives (a copy of the model elsewhere may have made the record).
        return dataclasses.replace(self.ready.model_identity(), name=self.name)

    def parity(self, backend: str, precision: str) -> float:
        raise ModelError("an encoder on a cached export has no torch to check parity against")


def exported_encoder(cfg: ModelSettings) -> ExportedEncoder | None:
    """An encoder for `cfg` that runs without torch, when a torch-loaded Encoder recorded one for
    these settings on this machine and its choice is still remembered (`embedpipe.encoding.torchless`);
    None when the model must load the torch way."""
    name, path = resolve_model_path(cfg.name)
    files = functools.cache(lambda: hash_model_files(path))
    ready = torchless.recall(cfg, files)
    tokenizer = ready.fast_tokenizer(path) if ready is not None else None
    if ready is None or tokenizer is None:
        return None
    try:
        return ExportedEncoder(cfg, name, path, files(), ready, tokenizer)
    except ModelError as exc:  # e.g. the export no longer compiles: the torch way re-exports
        log.warning("the cached OpenVINO export did not load, loading the model: %s", exc)
        return None
