"""Where and how precisely the model runs: device, precision (auto/fp32/bf16/fp16), CPU threads.

'auto' means bf16 (fp16 without bf16) on CUDA; on CPU it means bf16 only when the CPU computes
bf16 natively and a calibration on a small sample shows it within the parity bar and faster
than fp32, else fp32. torch is imported only by the functions that ask it something.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedpipe.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# bf16 must stay this close to fp32 on the calibration sample to be chosen automatically.
PARITY_BAR = 0.999
# CPU flags of native bf16 dot products (AVX-512 BF16, AMX); without them bf16 is emulated.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

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


@dataclass(frozen=True, slots=True)
class Calibration:
    """bf16 against fp32 on the calibration sample: worst cosine and best time of each."""

    min_cosine: float
    fp32_seconds: float
    bf16_seconds: float

    @property
    def speedup(self) -> float:
        """How many times faster bf16 ran than fp32 (0 when bf16 was not timed)."""
        return self.fp32_seconds / self.bf16_seconds if self.bf16_seconds else 0.0


# -- device and precision ----------------------------------------------------------------------


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

    On CPU `choose_precision` refines 'auto' with `choose_cpu_precision` (bf16 when native and
    faster).
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


def choose_precision(
    asked: str,
    device: str,
    native_bf16: Callable[[], bool],
    calibrate: Callable[[], Calibration],
) -> tuple[str, str]:
    """(precision, reason) on a resolved device; `native_bf16` and `calibrate` run only for
    'auto' on CPU, the one case that measures."""
    if asked != "auto":
        return asked, f"{asked}: asked for"
    if device == "cpu":
        precision, reason = choose_cpu_precision(native_bf16(), calibrate)
        log.info("precision %s", reason)
        return precision, reason
    precision = resolve_precision(asked, device)
    return precision, f"{precision}: default on CUDA"


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of 'fp32', 'fp16' or 'bf16'."""
    import torch

    dtype: torch.dtype = getattr(torch, _DTYPES[precision])
    return dtype


# -- bf16 calibration --------------------------------------------------------------------------


def calibration_blocks(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """`texts` by length in two blocks: the short sentences together, the long texts apart."""
    order = sorted(texts, key=len)
    half = len(order) * 4 // 5
    return order[:half], order[half:]


def measure_bf16(encode: Callable[[Any], np.ndarray], fp32: Any, repeats: int = 3) -> Calibration:
    """bf16 vs fp32 of the transformer `fp32`: worst cosine and best wall time of each.

    `encode(module)` embeds the calibration sample with `module` as the transformer. A bf16
    copy runs beside `fp32` (which stays untouched); one warm-up pass each, then `repeats`
    interleaved timed passes so load from other processes hits both alike.
    """
    import torch

    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    ref, low = encode(fp32), encode(bf16)  # also the warm-up of each
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(repeats):
        for name, module in (("fp32", fp32), ("bf16", bf16)):
            start = time.perf_counter()
            encode(module)
            best[name] = min(best[name], time.perf_counter() - start)
    cos = np.sum(ref * low, axis=1) / (
        np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1) + 1e-12
    )
    return Calibration(float(cos.min()), best["fp32"], best["bf16"])


# -- threads -----------------------------------------------------------------------------------


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


def set_torch_threads(device: str, asked: int | None) -> int:
    """Set torch's intra-op threads for an encoder on `device` and return them.

    On CPU: `asked`, else all available cores unless OMP_NUM_THREADS already decided; on
    other devices torch's own setting stays.
    """
    import torch

    threads = torch.get_num_threads()
    if device == "cpu" and (asked or "OMP_NUM_THREADS" not in os.environ):
        threads = asked or intra_op_threads(available_cores())
        torch.set_num_threads(threads)
    return threads
