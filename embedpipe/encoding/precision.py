"""Where and how the model runs: device, backend (torch/OpenVINO), precision, CPU threads.

Decided by capability and parity, never by a timer (a start-up timing flipped with machine
load; bf16 won every encode-only repetition at every load where the CPU has it natively):

- CUDA: torch, bf16 where supported else fp16 ('auto'); OpenVINO and int8 are CPU-only.
- CPU, 'auto': the candidates in order of speed - OpenVINO bf16, torch bf16 (bf16 only where
  the CPU computes it natively: avx512_bf16/amx_bf16), OpenVINO fp32, torch fp32 - OpenVINO
  only where it is installed on an x86 CPU. The first whose vectors stay within the parity bar
  (min cosine >= PARITY_BAR to torch fp32 on the calibration sample) wins; the last candidate
  is the fallback and is not checked (torch fp32 is the reference itself).
- An explicit backend or precision narrows the candidates; both explicit means no check.
- int8 is only ever explicit (OpenVINO static quantization, `embedpipe.encoding.int8`), with its own bar.

A choice that needed a check is remembered per machine and model (`embedpipe.encoding.remembered`), so every
run of a nightly job uses the same precision; the reason says why, and since when.
torch is imported only by the functions that ask it something.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedpipe.encoding.remembered import Choices, machine
from embedpipe.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# A candidate must stay this close to torch fp32 on the calibration sample to be chosen by 'auto'.
PARITY_BAR = 0.999
# CPU flags of native bf16 dot products (AVX-512 BF16, AMX); without them bf16 is emulated.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
OPENVINO_HINT = "pip install 'embedpipe[openvino]'"

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
# Two padded blocks of ~200 and ~250 tokens: enough to see bf16's error, cheap enough for start-up.
CALIBRATION_TEXTS = (*_SENTENCES, " ".join(_SENTENCES[:4]), " ".join(_SENTENCES[3:]))

# (backend, precision) -> min cosine of its vectors to torch fp32 on the calibration sample.
Parity = Callable[[str, str], float]


@dataclass(frozen=True, slots=True)
class Choice:
    """Where the transformer runs (torch or openvino), in what precision, and why."""

    backend: str
    precision: str
    reason: str


# -- device and capabilities -------------------------------------------------------------------


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
    """Precision without a check: 'auto' -> bf16 (fp16 without bf16) on CUDA, fp32 elsewhere."""
    import torch

    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from `cpuinfo` (the text of /proc/cpuinfo, read when None); empty
    where there is no /proc/cpuinfo. Tests pass the text of a CPU this machine is not."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()  # not Linux: no way to tell cheaply
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16_flags(flags: frozenset[str]) -> list[str]:
    """The flags among `flags` that compute bf16 natively (avx512_bf16, amx_bf16), sorted."""
    return sorted(flags & _NATIVE_BF16_FLAGS)


def cpu_flags_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU's flags name native bf16 (AVX-512 BF16 or AMX); asks torch nothing."""
    return bool(native_bf16_flags(cpu_flags(cpuinfo)))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX) and torch has oneDNN."""
    if not cpu_flags_native_bf16(cpuinfo):
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available())


def openvino_missing() -> str | None:
    """Why the OpenVINO backend cannot run here, or None when it can."""
    from embedpipe.encoding.openvino import import_openvino

    try:
        import_openvino()
    except ImportError:
        return f"OpenVINO is not installed ({OPENVINO_HINT})"
    return None


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of 'fp32', 'fp16' or 'bf16'."""
    import torch

    dtype: torch.dtype = getattr(torch, _DTYPES[precision])
    return dtype


# -- the choice --------------------------------------------------------------------------------


def cpu_candidates(
    backend: str, precision: str, native_bf16: bool, ov_missing: str | None, arch: str = ""
) -> tuple[list[tuple[str, str]], list[str]]:
    """(backend, precision) pairs to try on CPU, fastest first, and notes on what was left out."""
    arch = arch or platform.machine()
    notes: list[str] = []
    if backend == "openvino" and ov_missing:
        raise ModelError(f"model.backend is openvino but {ov_missing}, or use --backend torch")
    backends = [backend] if backend != "auto" else ["openvino", "torch"]
    if backend == "auto" and (ov_missing or arch.lower() not in _X86):
        backends.remove("openvino")
        notes.append(ov_missing or f"auto uses OpenVINO on x86 CPUs only (this is {arch})")
    if precision == "int8":
        if "openvino" not in backends:
            raise ModelError(
                "precision int8 runs on the OpenVINO backend only: "
                + (ov_missing or "use --backend openvino (or auto on x86)")
            )
        return [("openvino", "int8")], notes
    if precision == "fp16" and "openvino" in backends:
        if backend == "openvino":
            raise ModelError("OpenVINO has no fp16 on CPU: use --precision bf16 or fp32")
        backends.remove("openvino")
    if precision == "auto":
        notes.append("native bf16" if native_bf16 else "no native bf16 (avx512_bf16/amx_bf16)")
        precisions = ["bf16", "fp32"] if native_bf16 else ["fp32"]
    else:
        precisions = [precision]
    return [(b, p) for p in precisions for b in backends], notes


def choose(
    backend: str,
    precision: str,
    device: str,
    native_bf16: Callable[[], bool],
    ov_missing: Callable[[], str | None],
    parity: Parity,
) -> Choice:
    """The backend and precision on a resolved device (rules in the module docstring).

    `native_bf16` runs only for 'auto' precision on CPU, `ov_missing` only when the backend may be
    OpenVINO, `parity` only for candidates before the last; a candidate whose check raises
    ModelError (an export that failed) is passed over like one that missed the bar.
    """
    if device != "cpu":
        return _choose_accelerator(backend, precision, device)
    native = precision == "auto" and native_bf16()
    missing = ov_missing() if backend != "torch" else None
    candidates, notes = cpu_candidates(backend, precision, native, missing)
    asked = [f"{what} asked for" for what in (backend, precision) if what != "auto"]
    if len(asked) == 2:
        asked = ["asked for"]
    for cand_backend, cand_precision in candidates[:-1]:
        try:
            cosine = parity(cand_backend, cand_precision)
        except ModelError as exc:
            notes.append(f"{cand_backend} {cand_precision} failed ({exc})")
            continue
        measured = f"min cosine {cosine:.5f} to torch fp32 on the calibration sample"
        if cosine >= PARITY_BAR:
            return _choice(cand_backend, cand_precision, [*asked, *notes, measured])
        notes.append(
            f"{cand_backend} {cand_precision} missed the parity bar {PARITY_BAR} ({measured})"
        )
    return _choice(*candidates[-1], [*asked, *notes])


def _choose_accelerator(backend: str, precision: str, device: str) -> Choice:
    if backend == "openvino":
        raise ModelError(
            f"The OpenVINO backend runs on CPU only: use --backend torch (or auto) on {device}, "
            "or --device cpu"
        )
    if precision == "int8":
        raise ModelError(
            f"precision int8 runs on CPU only (OpenVINO): use --device cpu, or bf16/fp16 on {device}"
        )
    chosen = resolve_precision(precision, device)
    return _choice(
        "torch", chosen, ["asked for" if precision != "auto" else f"default on {device}"]
    )


def _choice(backend: str, precision: str, notes: Sequence[str]) -> Choice:
    return Choice(backend, precision, f"{backend} {precision}: " + "; ".join(notes))


def measures(backend: str, precision: str, device: str) -> bool:
    """Whether `choose` may run a parity check (the choices worth remembering)."""
    return device == "cpu" and precision != "int8" and "auto" in (backend, precision)


def choose_remembered(
    backend: str,
    precision: str,
    device: str,
    model_key: dict[str, Any],
    parity: Parity,
    native_bf16: Callable[[], bool] | None = None,
    choices: Choices | None = None,
) -> Choice:
    """`choose`, remembered per machine and model when it had to check (`embedpipe.encoding.remembered`)."""
    native = native_bf16 or cpu_has_native_bf16
    if not measures(backend, precision, device):
        return choose(backend, precision, device, native, openvino_missing, parity)
    has_bf16 = native()
    choices = choices or Choices()
    parts = choice_parts(backend, precision, model_key, has_bf16)
    if (known := choices.recall(parts)) is not None:
        reason = f"{known.reason} (decided {known.decided}, remembered in {choices.path})"
        return Choice(known.backend, known.precision, reason)
    choice = choose(backend, precision, device, lambda: has_bf16, openvino_missing, parity)
    choices.remember(parts, choice.backend, choice.precision, choice.reason)
    log.info("precision %s", choice.reason)
    return choice


def choice_parts(
    backend: str, precision: str, model_key: dict[str, Any], native_bf16: bool
) -> dict[str, Any]:
    """What a remembered choice is keyed by: the machine, the model and what was asked."""
    return {
        "machine": machine(native_bf16),
        "model": model_key,
        "asked": {"backend": backend, "precision": precision},
    }


# -- parity ------------------------------------------------------------------------------------


def calibration_blocks(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """`texts` by length in two blocks: the short sentences together, the long texts apart."""
    order = sorted(texts, key=len)
    half = len(order) * 4 // 5
    return order[:half], order[half:]


def cosines(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, dim) arrays."""
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    return np.sum(ours * reference, axis=1) / (norms + 1e-12)


def release_cuda_cache() -> None:
    """Return cached CUDA memory to the driver (after an out-of-memory)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def to_device(array: np.ndarray, device: str) -> torch.Tensor:
    """Token ids as an int64 tensor on `device`."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device == "cpu":
        return tensor
    # Pinned host memory lets the copy run asynchronously with work already queued.
    return tensor.pin_memory().to(device, non_blocking=True)


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
