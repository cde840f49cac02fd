"""The OpenVINO backend: the loaded sentence-transformers model, exported once, run on the CPU.

optimum-intel's route (sentence-transformers' `backend="openvino"`) does not import against
transformers 5 and current OpenVINO, so embedpipe exports the loaded torch model itself: the
transformer and every module after it (pooling, normalisation, dense layers) traced by
`openvino.convert_model`, inputs `input_ids` and `attention_mask` of shape [-1, -1] int64, output
the sentence embedding. The encoder feeds it the chunker's token ids, as it feeds torch.

The export (weights kept fp32) is saved under `cache_dir()/openvino/<key>/`, the key hashing the
model's files and modules and the torch, transformers and OpenVINO versions, so only the first
run pays for it; OpenVINO caches its compiled kernels beside it (`compiled/`). Precision is the
compile-time inference hint: bf16 where the CPU has it, else f32.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from embedpipe.encoding.remembered import cache_dir, package_version
from embedpipe.errors import ModelError

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")
MODEL_XML = "model.xml"
# OpenVINO's names of our precisions (its inference precision hint).
HINTS = {"fp32": "f32", "bf16": "bf16"}


def import_openvino() -> Any:
    """`openvino`, imported without sending usage telemetry.

    Importing OpenVINO's converter sends a usage event to Google Analytics from a child process
    unless the user opted out (`opt_in_out --opt_out`) or CI=true; NNCF does the same. A batch
    job does not phone home, nor start processes it did not ask for: unless the user opted in
    (their consent file says so), this process declines. The consent file is left as it is.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # an OpenVINO without its telemetry package
        pass
    else:
        check = OptInChecker.check
        if not getattr(check, "embedpipe_declines", False):

            def declined_unless_accepted(self: Any, *args: Any, **kwargs: Any) -> Any:
                result = check(self, *args, **kwargs)
                accepted = result == ConsentCheckResult.ACCEPTED
                return result if accepted else ConsentCheckResult.DECLINED

            declined_unless_accepted.embedpipe_declines = True  # type: ignore[attr-defined]
            OptInChecker.check = declined_unless_accepted
    import openvino

    return openvino


def openvino_dir() -> Path:
    """Where exported and quantized models (and OpenVINO's compiled kernels) are cached."""
    return cache_dir() / "openvino"


def export_key(files_hash: str, modules: str, token_types: bool) -> str:
    """The cache key of one model's export: its files, its modules and the converting libraries."""
    parts = {
        "files": files_hash,
        "modules": modules,
        "token_types": token_types,
        **{lib: package_version(lib) for lib in ("torch", "transformers", "openvino")},
    }
    return xxhash.xxh3_128_hexdigest(json.dumps(parts, sort_keys=True).encode())


def exported(
    model: Any, key: str, token_types: bool, example: tuple[np.ndarray, np.ndarray]
) -> Path:
    """The cached export's model.xml for `key`; exports the loaded fp32 `model` when missing.

    `model` is the sentence-transformers module sequence on the CPU, in fp32; `example` a padded
    (input ids, attention mask) pair to trace with.
    """
    folder = openvino_dir() / key
    if (folder / MODEL_XML).is_file():
        return folder / MODEL_XML
    log.info("exporting the model to OpenVINO (once per model) into %s", folder)
    try:
        converted = _convert(model, token_types, example)
    except Exception as exc:
        raise ModelError(
            f"OpenVINO could not export this model ({exc}): use --backend torch"
        ) from exc
    return save_model_folder(converted, folder)


def save_model_folder(model: Any, folder: Path, files: dict[str, str] | None = None) -> Path:
    """Save an OpenVINO model as `folder/model.xml` (+ .bin, + `files`' texts), atomically: a
    half-written export is never found; of two processes exporting at once the first wins."""
    ov = import_openvino()

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(model, str(tmp / MODEL_XML), compress_to_fp16=False)  # fp32 weights: parity
    for name, text in (files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    try:
        os.replace(tmp, folder)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / MODEL_XML


def _convert(model: Any, token_types: bool, example: tuple[np.ndarray, np.ndarray]) -> Any:
    ov = import_openvino()
    import torch

    class Sentence(torch.nn.Module):
        """The whole sentence-transformers pipeline as a function of ids and mask."""

        def __init__(self) -> None:
            super().__init__()
            self.steps = torch.nn.ModuleList(list(model))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_types:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            for step in self.steps:
                features = step(features)
            return features["sentence_embedding"].float()

    tensors = {
        name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        for name, a in zip(INPUTS, example, strict=True)
    }
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches
        return ov.convert_model(
            Sentence().eval(),
            example_input=tensors,
            input=[(name, [-1, -1], ov.Type.i64) for name in INPUTS],
        )


def inference_precision(compiled: Any, hint: str) -> Any:
    """The precision OpenVINO runs `compiled` in, as it reports it (an `openvino.Type`), for the
    `hint` it was compiled with (OpenVINO knows it; a CPU played by a test needs it).

    The one place the runtime is asked: tests replace it to play a CPU this machine is not.
    """
    return compiled.get_property("INFERENCE_PRECISION_HINT")


def precision_name(reported: Any) -> str:
    """Our name ('bf16', 'fp16' or 'fp32') of an inference precision OpenVINO reports.

    OpenVINO 2026 reports an `openvino.Type`, whose str is `<Type: 'bfloat16'>`, not 'bf16': so
    the type is compared, never its text. A type name ('bf16', 'f32') is read as that type.
    """
    ov = import_openvino()
    names = {ov.Type.bf16: "bf16", ov.Type.f16: "fp16", ov.Type.f32: "fp32"}
    kind = reported if isinstance(reported, ov.Type) else getattr(ov.Type, str(reported), None)
    if kind not in names:
        raise ModelError(
            f"OpenVINO reports an inference precision embedpipe does not know ({reported!r}): "
            "use --backend torch"
        )
    return names[kind]


def runtime_bf16(capabilities: Any = None) -> bool:
    """Whether OpenVINO computes bf16 on this CPU (`BF16` among its optimization capabilities;
    asked when `capabilities` is None)."""
    if capabilities is None:
        capabilities = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


class OpenVinoModel:
    """A compiled OpenVINO model: sentence vectors (n, dim) float32 for padded token ids.

    `precision` is what OpenVINO really runs ('bf16' or 'fp32'): a bf16 hint on a CPU without
    bf16 runs f32.
    """

    def __init__(self, model: Path | Any, hint: str, threads: int) -> None:
        """Compile `model` (a model.xml or an in-memory OpenVINO model) for the CPU."""
        ov = import_openvino()

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(openvino_dir() / "compiled")})
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
        }
        try:
            source = str(model) if isinstance(model, Path) else model
            self.compiled = core.compile_model(source, "CPU", config)
        except Exception as exc:
            raise ModelError(
                f"OpenVINO could not compile the model ({exc}): use --backend torch"
            ) from exc
        self.precision = precision_name(inference_precision(self.compiled, hint))
        # An infer request runs one inference at a time ("Infer Request is busy" otherwise):
        # each call borrows an idle one, so as many threads infer at once as call at once.
        self._idle = [self.compiled.create_infer_request()]
        self._pool_lock = threading.Lock()
        # The bindings set up their numpy bridge once, on the first `.data` read; two threads
        # making that first read at once deadlock (one in std::call_once waiting for the GIL,
        # the other holding the GIL in a static-init guard). Make it here, on one thread.
        _ = ov.Tensor(np.zeros((1, 1), dtype=np.int64)).data

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Vectors for one padded batch, copied out of OpenVINO's reused output buffer; safe to
        call from any number of threads at once."""
        request = self._borrow()
        try:
            request.infer(
                {
                    INPUTS[0]: np.ascontiguousarray(input_ids, dtype=np.int64),
                    INPUTS[1]: np.ascontiguousarray(attention_mask, dtype=np.int64),
                }
            )
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            with self._pool_lock:
                self._idle.append(request)

    @property
    def requests(self) -> int:
        """How many infer requests are idle (one per call that ran at the same time, at most)."""
        with self._pool_lock:
            return len(self._idle)

    def _borrow(self) -> Any:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return self.compiled.create_infer_request()  # cheap: the compiled model is shared


class OpenVinoExport:
    """One loaded model's OpenVINO side: its export (made once, cached) and compiled models.

    `model` is the sentence-transformers module sequence in fp32 on the CPU, `example` a padded
    (input ids, attention mask) pair to trace with, `threads` OpenVINO's inference threads.
    """

    def __init__(
        self,
        model: Any,
        files_hash: str,
        modules: str,
        token_types: bool,
        example: tuple[np.ndarray, np.ndarray],
        threads: int,
    ) -> None:
        self.model, self.token_types, self.example = model, token_types, example
        self.threads = threads
        self.key = export_key(files_hash, modules, token_types)

    def xml(self) -> Path:
        """The export's model.xml, exported on the first call (of any process on this machine)."""
        return exported(self.model, self.key, self.token_types, self.example)

    def compile(self, precision: str, model: Path | Any = None) -> OpenVinoModel:
        """The export (or `model`) compiled for 'fp32' or 'bf16' (OpenVINO hint names pass too)."""
        source = self.xml() if model is None else model
        return OpenVinoModel(source, HINTS.get(precision, precision), self.threads)
