"""Precision and backend: chosen by capability and parity (never by a timer), remembered per machine
and model; the device and thread policy; the choice the encoder makes with them."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import embedpipe.encoding.encoder as encoder_module
from embedpipe.config import ModelConfig
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.precision import (
    CALIBRATION_TEXTS,
    PARITY_BAR,
    calibration_blocks,
    choose,
    choose_remembered,
    cpu_candidates,
    cpu_has_native_bf16,
    intra_op_threads,
    resolve_device,
    resolve_precision,
    set_torch_threads,
    torch_dtype,
)
from embedpipe.encoding.remembered import Choices, cpu_name, machine
from embedpipe.errors import ModelError

MODEL = {"files": "abc", "modules": "Pooling{}", "max_seq_length": 256, "prefix": ""}


def _never() -> bool:
    raise AssertionError("must not be asked")


def _never_check(backend: str, precision: str) -> float:
    raise AssertionError(f"must not check {backend} {precision}")


def _installed() -> None:
    return None


def _missing() -> str:
    return "OpenVINO is not installed (pip install 'embedpipe[openvino]')"


def _cosines(
    table: dict[tuple[str, str], float], seen: list[tuple[str, str]]
) -> Callable[[str, str], float]:
    """A parity check answering from `table`, recording what it was asked."""

    def parity(backend: str, precision: str) -> float:
        seen.append((backend, precision))
        return table[(backend, precision)]

    return parity


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Restore torch's thread count after a test that sets it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- the rules ---------------------------------------------------------------------------------


def test_auto_precision_is_fp32_on_cpu_without_a_check() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_cuda_runs_torch_bf16_where_supported_else_fp16_and_never_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    chosen = choose("auto", "auto", "cuda", _never, _never, _never_check)
    assert (chosen.backend, chosen.precision, chosen.reason) == (
        "torch",
        "bf16",
        "torch bf16: default on cuda",
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose("auto", "auto", "cuda:1", _never, _never, _never_check).precision == "fp16"


@pytest.mark.parametrize(
    ("backend", "precision", "fix"),
    [
        ("openvino", "auto", "--backend torch"),
        ("auto", "int8", "CPU only"),
    ],
)
def test_openvino_and_int8_are_refused_on_cuda(backend: str, precision: str, fix: str) -> None:
    with pytest.raises(ModelError, match=fix):
        choose(backend, precision, "cuda", _never, _never, _never_check)


@pytest.mark.parametrize(
    ("backend", "precision"),
    [
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("torch", "fp16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
    ],
)
def test_asked_backend_and_precision_are_kept_without_a_check(backend: str, precision: str) -> None:
    chosen = choose(backend, precision, "cpu", _never, _installed, _never_check)
    assert (chosen.backend, chosen.precision) == (backend, precision)
    assert chosen.reason == f"{backend} {precision}: asked for"


@pytest.mark.parametrize(
    ("native", "installed", "cosines", "expected", "checked", "why"),
    [
        (
            True,
            True,
            {("openvino", "bf16"): 0.9999},
            ("openvino", "bf16"),
            [("openvino", "bf16")],
            "native bf16; min cosine 0.99990",
        ),
        (
            True,
            True,
            {("openvino", "bf16"): 0.998, ("torch", "bf16"): 0.9995},
            ("torch", "bf16"),
            [("openvino", "bf16"), ("torch", "bf16")],
            "openvino bf16 missed the parity bar",
        ),
        (
            True,
            True,
            {("openvino", "bf16"): 0.99, ("torch", "bf16"): 0.99, ("openvino", "fp32"): 1.0},
            ("openvino", "fp32"),
            [("openvino", "bf16"), ("torch", "bf16"), ("openvino", "fp32")],
            "min cosine 1.00000",
        ),
        (
            True,
            False,
            {("torch", "bf16"): 0.9995},
            ("torch", "bf16"),
            [("torch", "bf16")],
            "not installed",
        ),
        (
            True,
            False,
            {("torch", "bf16"): 0.99},
            ("torch", "fp32"),
            [("torch", "bf16")],
            "torch bf16 missed the parity bar",
        ),
        (
            False,
            True,
            {("openvino", "fp32"): 1.0},
            ("openvino", "fp32"),
            [("openvino", "fp32")],
            "no native bf16",
        ),
        (False, False, {}, ("torch", "fp32"), [], "no native bf16"),
    ],
)
def test_auto_on_cpu_takes_the_fastest_candidate_within_the_parity_bar(
    native: bool,
    installed: bool,
    cosines: dict[tuple[str, str], float],
    expected: tuple[str, str],
    checked: list[tuple[str, str]],
    why: str,
) -> None:
    seen: list[tuple[str, str]] = []
    chosen = choose(
        "auto",
        "auto",
        "cpu",
        lambda: native,
        _installed if installed else _missing,
        _cosines(cosines, seen),
    )
    assert (chosen.backend, chosen.precision) == expected
    assert seen == checked, "bf16 only with native bf16; torch fp32 is never checked"
    assert why in chosen.reason


def test_a_failed_export_passes_openvino_over() -> None:
    def parity(backend: str, precision: str) -> float:
        if backend == "openvino":
            raise ModelError("OpenVINO could not export this model (unsupported op)")
        return 0.9999

    chosen = choose("auto", "auto", "cpu", lambda: True, _installed, parity)
    assert (chosen.backend, chosen.precision) == ("torch", "bf16")
    assert "openvino bf16 failed (OpenVINO could not export" in chosen.reason


def test_an_asked_backend_narrows_auto_precision_and_its_fallback_is_not_checked() -> None:
    seen: list[tuple[str, str]] = []
    chosen = choose(
        "openvino",
        "auto",
        "cpu",
        lambda: True,
        _installed,
        _cosines({("openvino", "bf16"): 0.99}, seen),
    )
    assert (chosen.backend, chosen.precision, seen) == ("openvino", "fp32", [("openvino", "bf16")])
    chosen = choose(
        "auto", "fp32", "cpu", _never, _installed, _cosines({("openvino", "fp32"): 0.9}, seen)
    )
    assert (chosen.backend, chosen.precision) == ("torch", "fp32")


def test_auto_uses_openvino_on_x86_cpus_only() -> None:
    candidates, notes = cpu_candidates("auto", "auto", True, None, arch="aarch64")
    assert candidates == [("torch", "bf16"), ("torch", "fp32")]
    assert "x86" in notes[0]
    assert ("openvino", "bf16") in cpu_candidates("auto", "auto", True, None, arch="x86_64")[0]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("backend", ["auto", "torch", "openvino"])
def test_auto_never_chooses_int8_or_fp16_on_cpu(native: bool, backend: str) -> None:
    candidates, _ = cpu_candidates(backend, "auto", native, None, arch="x86_64")
    assert {p for _, p in candidates} <= {"bf16", "fp32"}


def test_int8_needs_openvino_and_says_how_to_get_it() -> None:
    assert cpu_candidates("auto", "int8", False, None, arch="x86_64")[0] == [("openvino", "int8")]
    with pytest.raises(ModelError, match="--backend openvino"):
        cpu_candidates("torch", "int8", False, None)
    with pytest.raises(ModelError, match=r"embedpipe\[openvino\]"):
        cpu_candidates("auto", "int8", False, _missing())
    with pytest.raises(ModelError, match=r"embedpipe\[openvino\]"):
        cpu_candidates("openvino", "fp32", False, _missing())


def test_fp16_on_cpu_runs_on_torch_and_openvino_refuses_it() -> None:
    assert cpu_candidates("auto", "fp16", False, None, arch="x86_64")[0] == [("torch", "fp16")]
    with pytest.raises(ModelError, match="bf16 or fp32"):
        cpu_candidates("openvino", "fp16", False, None)


# -- remembered per machine and model --------------------------------------------------------


def test_a_checked_choice_is_remembered_and_reused_without_checking(tmp_path: Path) -> None:
    choices = Choices(tmp_path / "cache" / "choices.json")
    seen: list[tuple[str, str]] = []
    first = choose_remembered(
        "torch",
        "auto",
        "cpu",
        MODEL,
        _cosines({("torch", "bf16"): 0.9995}, seen),
        lambda: True,
        choices,
    )
    again = choose_remembered("torch", "auto", "cpu", MODEL, _never_check, lambda: True, choices)
    assert (first.precision, again.precision, seen) == ("bf16", "bf16", [("torch", "bf16")])
    assert again.reason.startswith(first.reason) and "remembered in" in again.reason
    stored = json.loads(choices.path.read_text())
    assert [e["key"]["model"] for e in stored.values()] == [MODEL]


def test_another_model_or_machine_decides_afresh(tmp_path: Path) -> None:
    choices = Choices(tmp_path / "choices.json")
    seen: list[tuple[str, str]] = []
    parity = _cosines({("torch", "bf16"): 0.9995}, seen)
    choose_remembered("torch", "auto", "cpu", MODEL, parity, lambda: True, choices)
    choose_remembered(
        "torch", "auto", "cpu", {**MODEL, "files": "def"}, parity, lambda: True, choices
    )
    no_bf16 = choose_remembered("torch", "auto", "cpu", MODEL, parity, lambda: False, choices)
    assert (len(seen), no_bf16.precision) == (2, "fp32")
    assert machine(True) != machine(False)


def test_explicit_choices_and_cuda_are_not_remembered(tmp_path: Path) -> None:
    choices = Choices(tmp_path / "choices.json")
    choose_remembered("torch", "bf16", "cpu", MODEL, _never_check, _never, choices)
    assert not choices.path.exists()


def test_an_unwritable_cache_still_chooses(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    choices = Choices(tmp_path / "file" / "choices.json")
    chosen = choose_remembered(
        "torch",
        "auto",
        "cpu",
        MODEL,
        _cosines({("torch", "bf16"): 0.9999}, []),
        lambda: True,
        choices,
    )
    assert chosen.precision == "bf16"


def test_the_machine_is_named_by_its_cpu_and_libraries() -> None:
    assert (
        cpu_name("processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t: avx2\n") == "AMD EPYC 9654"
    )
    key = machine(True)
    assert {"arch", "cpu", "native_bf16", "torch", "transformers", "openvino"} <= key.keys()
    assert key["torch"] is not None and key["native_bf16"] is True


# -- device, dtypes, threads -----------------------------------------------------------------


def test_auto_device_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ModelError, match="--device cpu"):
        resolve_device("cuda:0")


def test_dtypes_follow_the_precision_names() -> None:
    assert [torch_dtype(p) for p in ("fp32", "fp16", "bf16")] == [
        torch.float32,
        torch.float16,
        torch.bfloat16,
    ]


def test_calibration_keeps_the_long_texts_apart() -> None:
    short, long = calibration_blocks(CALIBRATION_TEXTS)
    assert (len(short), len(long)) == (8, 2)
    assert max(map(len, short)) <= min(map(len, long))


def test_native_bf16_is_read_from_cpu_flags() -> None:
    assert cpu_has_native_bf16("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags\t\t: fpu sse avx2 avx512f avx512bw\n")


def test_threads_use_every_core_at_least_one() -> None:
    assert (intra_op_threads(0), intra_op_threads(4)) == (1, 4)


def test_asked_threads_are_set_on_cpu(torch_threads: None) -> None:
    assert set_torch_threads("cpu", 1) == torch.get_num_threads() == 1


def test_omp_num_threads_decides_when_none_are_asked(
    torch_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr("embedpipe.encoding.precision.available_cores", lambda: 8)
    assert set_torch_threads("cpu", None) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert set_torch_threads("cpu", None) == torch.get_num_threads() == 8


def test_threads_stay_as_they_are_off_the_cpu(torch_threads: None) -> None:
    torch.set_num_threads(1)
    assert set_torch_threads("cuda", 4) == torch.get_num_threads() == 1


# -- the encoder's choice ----------------------------------------------------------------------


@pytest.fixture
def shared_model(encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New encoders get a copy of the session's model (no reload) and a fresh cache."""
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: copy.deepcopy(encoder.model))
    monkeypatch.setenv("EMBEDPIPE_CACHE_DIR", str(tmp_path / "cache"))


def test_torch_bf16_matches_fp32_on_the_calibration_sample(encoder: Encoder) -> None:
    assert encoder.parity("torch", "bf16") >= PARITY_BAR
    assert encoder.model[0].auto_model.dtype == torch.float32, "the check leaves fp32 weights"


def test_encoder_falls_back_to_fp32_when_bf16_misses_the_bar(
    encoder: Encoder, shared_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(Encoder, "parity", lambda self, backend, precision: 0.95)
    auto = Encoder(ModelConfig(device="cpu", precision="auto", backend="torch"))
    assert (auto.backend, auto.precision) == ("torch", "fp32")
    assert "missed the parity bar" in auto.precision_reason


def test_encoder_takes_native_bf16_within_the_bar_and_remembers_it(
    encoder: Encoder, shared_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    checks: list[str] = []
    real = Encoder.parity

    def parity(self: Encoder, backend: str, precision: str) -> float:
        checks.append(f"{backend} {precision}")
        return real(self, backend, precision)

    monkeypatch.setattr(Encoder, "parity", parity)
    cfg = ModelConfig(device="cpu", precision="auto", backend="torch")
    first = Encoder(cfg)
    assert (first.precision, first.dtype, checks) == ("bf16", torch.bfloat16, ["torch bf16"])
    second = Encoder(cfg)
    assert (second.precision, checks) == ("bf16", ["torch bf16"]), "remembered, not checked"
    assert "remembered in" in second.precision_reason
