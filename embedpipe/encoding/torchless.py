"""What a process needs to run a model on its cached OpenVINO export without torch.

Loading sentence-transformers and torch costs 5-10 s of every process's start; the OpenVINO
export runs the whole model (`embedpipe.encoding.openvino`) and the model's fast tokenizer is its
`tokenizer.json` (`embedpipe.encoding.tokenizer`). So when an encoder loaded the torch way ends up on
OpenVINO (the choice `auto` made and remembered, or asked for), it records here what a later
process needs instead of the model: the export's path, the precision and why, the width, the
sequence limit, the tokenizer's padding, and the identity the fingerprint needs. A later process
(a query, an incremental run) asking for the same model settings on the same machine compiles
the export (OpenVINO's CACHE_DIR keeps the compiled kernels) and tokenizes with `tokenizers`.

The records live in `cache_dir()/openvino/ready.json`, keyed by what is known without torch:
the model files' hash, the model settings asked for, and the machine (`choices.machine`, native
bf16 read from the CPU flags). A record is used only while the choice it came from is still
remembered (`choices.json`: deleting it decides afresh, with a parity check against torch),
while its export and tokenizer file exist, and on the CPU: `device: auto` on a machine with a
GPU device node asks torch. The first run on a machine always goes the torch way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from embedpipe.durable import atomic_write
from embedpipe.encoding import precision
from embedpipe.encoding.models import ModelIdentity, same_tokenizer, tokenizer_json
from embedpipe.encoding.openvino import openvino_dir
from embedpipe.encoding.remembered import Choices, machine
from embedpipe.encoding.tokenizer import FastTokenizer

log = logging.getLogger(__name__)

READY_FILE = "ready.json"
# The model settings a record is for (the rest of a model config does not change the encoder).
SETTINGS = (
    "device",
    "backend",
    "precision",
    "normalize",
    "prefix",
    "max_seq_length",
    "truncate_dim",
    "quantization",
)
# Device nodes of GPUs torch could use: `device: auto` there is torch's to resolve.
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


@dataclass(frozen=True)
class Ready:
    """One model's torch-free run on this machine, as a torch-loaded encoder left it."""

    name: str
    xml: str  # the export's model.xml, relative to openvino_dir()
    precision: str  # the precision chosen (OpenVINO's hint; a CPU may run less)
    reason: str
    dim: int  # the model's width, before any truncate_dim
    max_seq_length: int
    token_types: bool
    identity: dict[str, Any]
    tokenizer: dict[str, Any]  # FastTokenizer's settings but for the file
    choice: dict[str, Any] | None  # the remembered choice's key; None when it was asked for
    # The precision that remembered choice names, when this record runs another (queries run
    # at fp32 the export a run chose bf16 for); None: `precision`.
    chosen: str | None = None

    def model_identity(self) -> ModelIdentity:
        return ModelIdentity(**self.identity)

    def fast_tokenizer(self, model_path: Path) -> FastTokenizer | None:
        """The model's tokenizer through `tokenizers`; None when its file is gone."""
        file = tokenizer_json(model_path)
        return None if file is None else FastTokenizer.from_file(file, **self.tokenizer)


def settings(cfg: Any) -> dict[str, Any]:
    """The model settings of `cfg` (a ModelConfig or anything with its attributes) a record is for."""
    return {name: getattr(cfg, name, None) for name in SETTINGS}


def record_key(cfg: Any, files_hash: str, native_bf16: bool) -> dict[str, Any]:
    return {"files": files_hash, "settings": settings(cfg), "machine": machine(native_bf16)}


def gpu_present(nodes: tuple[str, ...] = GPU_NODES) -> bool:
    """Whether a GPU device node exists here (then `device: auto` may mean CUDA)."""
    return any(Path(node).exists() for node in nodes)


def cpu_threads(asked: int | None) -> int:
    """OpenVINO's inference threads as `precision.set_torch_threads` would set torch's on CPU."""
    if asked:
        return asked
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return precision.available_cores()


def remember(cfg: Any, files_hash: str, ready: Ready) -> None:
    """Keep `ready` for `cfg` on this machine; a cache that cannot be written costs a log line."""
    path = openvino_dir() / READY_FILE
    key = record_key(cfg, files_hash, precision.cpu_flags_native_bf16())
    entries = _read(path)
    entries[Choices.key(key)] = {"key": key, "ready": asdict(ready)}
    text = json.dumps(entries, indent=1, sort_keys=True, ensure_ascii=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(text.encode()))
    except OSError as exc:
        log.warning("could not record the OpenVINO export in %s: %s", path, exc)


def recall(cfg: Any, files_hash: Callable[[], str]) -> Ready | None:
    """The record for `cfg` on this machine, None when the torch way must decide (no record,
    a forgotten choice, a missing export, or maybe a GPU); `files_hash` hashes the model files.
    The CPU flags (`precision.cpu_flags_native_bf16`) and `gpu_present` are looked up at each
    call, so tests can stand in for another machine."""
    device = getattr(cfg, "device", "auto")
    if device not in ("cpu", "auto") or (device == "auto" and gpu_present()):
        return None
    path = openvino_dir() / READY_FILE
    if not path.is_file():
        return None
    key = record_key(cfg, files_hash(), precision.cpu_flags_native_bf16())
    entry = _read(path).get(Choices.key(key))
    try:
        ready = Ready(**entry["ready"]) if isinstance(entry, dict) else None
    except TypeError:
        return None
    if ready is None or not (openvino_dir() / ready.xml).is_file():
        return None
    if ready.choice is None:  # asked for: nothing to re-check
        return ready
    choices = Choices()  # still what `auto` chose, else decide afresh, the torch way
    known = choices.recall(ready.choice)
    if known is None or (known.backend, known.precision) != (
        "openvino",
        ready.chosen or ready.precision,
    ):
        return None
    reason = f"{known.reason} (decided {known.decided}, remembered in {choices.path})"
    if ready.chosen:
        reason = f"{ready.reason}; {reason}"
    return replace(ready, reason=reason)  # as `precision.choose_remembered` says it


def tokenizer_settings(
    tokenizer: Any, model_path: Path, max_seq_length: int
) -> dict[str, Any] | None:
    """FastTokenizer settings equal to the model's own `tokenizer` (a transformers fast
    tokenizer), None when its `tokenizer.json` alone would tokenize differently."""
    file = tokenizer_json(model_path)
    if file is None or not getattr(tokenizer, "is_fast", False):
        return None
    sides = (
        getattr(tokenizer, "padding_side", "right"),
        getattr(tokenizer, "truncation_side", "right"),
    )
    if sides != ("right", "right") or tokenizer.pad_token_id is None:
        return None
    found = {
        "model_max_length": max_seq_length,
        "pad_token_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "model_input_names": list(getattr(tokenizer, "model_input_names", [])),
    }
    try:
        same = same_tokenizer(tokenizer, FastTokenizer.from_file(file, **found))
    except Exception:  # an unreadable file: the torch way goes on working
        return None
    return found if same else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
