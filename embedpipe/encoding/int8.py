"""int8 inference, asked for explicitly: the OpenVINO export quantized statically by NNCF.

int8 misses the parity bar (min cosine ~0.99 to fp32, where fp32/bf16 keep >= 0.999), so `auto`
never picks it, it is part of the fingerprint (`Encoder.output_options`), and a run refuses it
when its min cosine to torch fp32 is under `model.int8_min_cosine`.

Calibration uses a fixed sample, not the corpus being embedded: paragraphs and whole docstrings
of the Python standard library (English technical prose and code, 6 to 300+ tokens), picked in a
stable order. A fixed sample is known before the first chunk arrives and gives one quantized
model per machine and model, so every incremental run writes vectors from the same int8 model.
Half of the sample calibrates, the other half (plus the parity texts) measures the cosines. The
result is cached beside the export (`cache_dir()/openvino/<key>-int8-.../`, with `stats.json`),
so only the first run pays for the quantization (~20-90 s for MiniLM on 2 cores).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from embedpipe.encoding.openvino import (
    INPUTS,
    MODEL_XML,
    OpenVinoExport,
    OpenVinoModel,
    import_openvino,
    openvino_dir,
    save_model_folder,
)
from embedpipe.encoding.precision import CALIBRATION_TEXTS, OPENVINO_HINT, cosines
from embedpipe.encoding.remembered import package_version
from embedpipe.errors import ModelError

log = logging.getLogger(__name__)

# Texts NNCF calibrates on (NNCF's own default subset size); as many again measure the result.
CALIBRATION_SIZE = 300
SAMPLE_VERSION = 1  # bumped when the sample's recipe changes
STATS_FILE = "stats.json"
_DOC_MODULES = (
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "html.parser",
    "http.client",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "pickle",
    "queue",
    "random",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "zipfile",
)

Tokenize = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]
Vectors = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class Int8Stats:
    """How close the int8 model's vectors came to torch fp32 on texts it was not calibrated on."""

    min_cosine: float
    mean_cosine: float
    calibrated_on: int
    checked_on: int

    def describe(self) -> str:
        return (
            f"OpenVINO static int8 (NNCF, {self.calibrated_on} calibration texts): min cosine "
            f"{self.min_cosine:.4f}, mean {self.mean_cosine:.4f} to torch fp32 on "
            f"{self.checked_on} other texts"
        )


def calibration_sample(size: int) -> list[str]:
    """`size` texts from the standard library's docstrings, always the same for one Python."""
    texts: set[str] = set()
    for name in _DOC_MODULES:
        module = importlib.import_module(name)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            for text in (doc, *doc.split("\n\n")):
                text = " ".join(text.split())
                if 40 <= len(text) <= 2000:
                    texts.add(text)
    order = sorted(texts, key=lambda t: xxhash.xxh3_64_hexdigest(t.encode()))
    if len(order) < size:  # pragma: no cover - every CPython has thousands
        raise ModelError(f"Only {len(order)} calibration texts found for int8, {size} needed")
    return order[:size]


def int8_key(export_key: str, size: int, hint: str) -> str:
    """The cache folder name of the quantized model: the export, the sample, the tools and the
    inference precision its cosines were measured with."""
    tools = (
        package_version("nncf"),
        platform.python_version_tuple()[:2],
        SAMPLE_VERSION,
        size,
        hint,
    )
    return f"{export_key}-int8-" + xxhash.xxh3_64_hexdigest(json.dumps(tools).encode())


def quantized(
    fp32_xml: Path,
    export_key: str,
    tokenize: Tokenize,
    reference: Vectors,
    compile_int8: Callable[[Any], Vectors],
    size: int = CALIBRATION_SIZE,
    hint: str = "f32",
) -> tuple[Path, Int8Stats]:
    """The int8 model's xml and its cosines to torch fp32; quantized and measured when missing.

    `tokenize` pads texts to ids and mask, `reference` gives torch fp32 vectors for them,
    `compile_int8` compiles an OpenVINO model as the encoder will run it (with `hint`).
    """
    folder = openvino_dir() / int8_key(export_key, size, hint)
    if (folder / MODEL_XML).is_file() and (folder / STATS_FILE).is_file():
        stats = Int8Stats(**json.loads((folder / STATS_FILE).read_text()))
        return folder / MODEL_XML, stats
    try:
        ov = import_openvino()  # first: NNCF's telemetry asks the same consent check
        import nncf
    except ImportError as exc:
        raise ModelError(f"int8 needs NNCF and OpenVINO ({exc}): {OPENVINO_HINT}") from exc
    sample = calibration_sample(2 * size)
    calibrate, check = sample[::2], [*sample[1::2], *CALIBRATION_TEXTS]
    log.info("quantizing the model to int8 on %d texts (once per model)", len(calibrate))
    dataset = nncf.Dataset(calibrate, lambda text: dict(zip(INPUTS, tokenize([text]), strict=True)))
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: stdout may be JSON
        model = nncf.quantize(
            ov.Core().read_model(str(fp32_xml)),
            dataset,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibrate),
        )
    cos = cosines(
        _encode(compile_int8(model), tokenize, check), _encode(reference, tokenize, check)
    )
    stats = Int8Stats(float(cos.min()), float(cos.mean()), len(calibrate), len(check))
    return save_model_folder(model, folder, {STATS_FILE: json.dumps(asdict(stats))}), stats


def int8_model(
    export: OpenVinoExport,
    tokenize: Tokenize,
    reference: Vectors,
    hint: str,
    min_cosine: float,
    size: int | None = None,
) -> tuple[OpenVinoModel, Int8Stats]:
    """The compiled int8 model of `export` and its cosines; refused under `min_cosine`."""
    xml, stats = quantized(
        export.xml(),
        export.key,
        tokenize,
        reference,
        lambda model: export.compile(hint, model),
        size or CALIBRATION_SIZE,
        hint,
    )
    if stats.min_cosine < min_cosine:
        raise ModelError(
            f"int8 strays too far from fp32: {stats.describe()}, under model.int8_min_cosine="
            f"{min_cosine}. Use --precision auto (bf16/fp32), or lower model.int8_min_cosine "
            "if that loss is acceptable"
        )
    return export.compile(hint, xml), stats


def _encode(run: Vectors, tokenize: Tokenize, texts: Sequence[str], batch: int = 32) -> np.ndarray:
    """Vectors for `texts` in their order, encoded in length-sorted batches (little padding)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.concatenate(
        [
            run(*tokenize([texts[i] for i in order[s : s + batch]]))
            for s in range(0, len(order), batch)
        ]
    )
    result = np.empty_like(out)
    result[order] = out
    return result
