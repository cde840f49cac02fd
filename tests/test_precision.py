"""Precision: device and precision choice, the bf16 measurement and the thread policy, and the
choice the encoder makes with them (bf16 parity, calibration fallback, explicit precision)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

import embedpipe.encoder as encoder_module
from embedpipe.config import ModelConfig
from embedpipe.encoder import Encoder
from embedpipe.errors import ModelError
from embedpipe.precision import (
    CALIBRATION_TEXTS,
    Calibration,
    calibration_blocks,
    choose_cpu_precision,
    choose_precision,
    cpu_has_native_bf16,
    intra_op_threads,
    measure_bf16,
    resolve_device,
    resolve_precision,
    set_torch_threads,
    torch_dtype,
)


def _never() -> bool:
    raise AssertionError("must not be asked")


def _never_calibrate() -> Calibration:
    raise AssertionError("must not calibrate")


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Restore torch's thread count after a test that sets it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_auto_precision_is_fp32_on_cpu() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_auto_precision_on_cuda_is_bf16_where_supported_else_fp16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision("auto", "cuda", _never, _never_calibrate) == (
        "bf16", "bf16: default on CUDA",
    )  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_precision("auto", "cuda:1", _never, _never_calibrate)[0] == "fp16"


@pytest.mark.parametrize("asked", ["fp32", "fp16", "bf16"])
def test_asked_precision_is_kept_without_measuring(asked: str) -> None:
    assert choose_precision(asked, "cpu", _never, _never_calibrate) == (
        asked,
        f"{asked}: asked for",
    )


def test_auto_on_cpu_calibrates_only_with_native_bf16() -> None:
    precision, reason = choose_precision("auto", "cpu", lambda: False, _never_calibrate)
    assert (precision, "no native bf16" in reason) == ("fp32", True)
    faster = Calibration(0.9999, 1.0, 0.5)
    assert choose_precision("auto", "cpu", lambda: True, lambda: faster)[0] == "bf16"


def test_auto_device_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ModelError, match="--device cpu"):
        resolve_device("cuda:0")


def test_dtypes_follow_the_precision_names() -> None:
    assert [torch_dtype(p) for p in ("fp32", "fp16", "bf16")] == [
        torch.float32, torch.float16, torch.bfloat16,
    ]  # fmt: skip


def test_calibration_keeps_the_long_texts_apart() -> None:
    short, long = calibration_blocks(CALIBRATION_TEXTS)
    assert (len(short), len(long)) == (8, 2)
    assert max(map(len, short)) <= min(map(len, long))


def test_bf16_measurement_leaves_the_fp32_module_untouched() -> None:
    torch.manual_seed(0)
    fp32 = torch.nn.Linear(16, 8)
    x = torch.randn(6, 16)

    def encode(module: torch.nn.Module) -> np.ndarray:
        with torch.inference_mode():
            return module(x.to(module.weight.dtype)).float().numpy()

    cal = measure_bf16(encode, fp32, repeats=1)
    assert 0.99 < cal.min_cosine <= 1.0 + 1e-6
    assert cal.fp32_seconds > 0 and cal.bf16_seconds > 0
    assert fp32.weight.dtype == torch.float32


def test_threads_use_every_core_at_least_one() -> None:
    assert (intra_op_threads(0), intra_op_threads(4)) == (1, 4)


def test_asked_threads_are_set_on_cpu(torch_threads: None) -> None:
    assert set_torch_threads("cpu", 1) == torch.get_num_threads() == 1


def test_omp_num_threads_decides_when_none_are_asked(
    torch_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr("embedpipe.precision.available_cores", lambda: 8)
    assert set_torch_threads("cpu", None) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert set_torch_threads("cpu", None) == torch.get_num_threads() == 8


def test_threads_stay_as_they_are_off_the_cpu(torch_threads: None) -> None:
    torch.set_num_threads(1)
    assert set_torch_threads("cuda", 4) == torch.get_num_threads() == 1


# -- the encoder's choice ----------------------------------------------------------------------


def test_bf16_matches_fp32_on_the_calibration_sample(encoder: Encoder) -> None:
    cal = encoder.calibrate(repeats=1)
    assert cal.min_cosine >= 0.999
    assert encoder.model[0].auto_model.dtype == torch.float32, "calibration leaves fp32 weights"


def test_native_bf16_is_read_from_cpu_flags() -> None:
    assert cpu_has_native_bf16("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags\t\t: fpu sse avx2 avx512f avx512bw\n")


@pytest.mark.parametrize(
    ("native", "calibration", "expected", "why"),
    [
        (False, None, "fp32", "no native bf16"),
        (True, Calibration(0.998, 1.0, 0.5), "fp32", "parity bar"),
        (True, Calibration(0.9999, 1.0, 1.1), "fp32", "not faster"),
        (True, Calibration(0.9999, 1.0, 0.6), "bf16", "native bf16"),
    ],
)
def test_auto_precision_on_cpu(
    native: bool, calibration: Calibration | None, expected: str, why: str
) -> None:
    precision, reason = choose_cpu_precision(
        native, (lambda: calibration) if calibration else _never_calibrate
    )  # type: ignore[arg-type,return-value]
    assert precision == expected
    assert why in reason


def test_encoder_falls_back_to_fp32_when_calibration_fails(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: encoder.model)
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(Encoder, "calibrate", lambda self: Calibration(0.95, 1.0, 0.5))
    auto = Encoder(ModelConfig(device="cpu", precision="auto"))
    assert auto.precision == "fp32"
    assert "parity bar" in auto.precision_reason
    assert encoder.model[0].auto_model.dtype == torch.float32


def test_explicit_precision_is_honoured_without_calibration(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: encoder.model)
    monkeypatch.setattr(Encoder, "calibrate", lambda self: _never_calibrate())
    explicit = Encoder(ModelConfig(device="cpu", precision="fp32"))
    assert (explicit.precision, explicit.precision_reason) == ("fp32", "fp32: asked for")
