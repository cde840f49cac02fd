"""The OpenVINO backend: exported once per model and reused, picked by auto on x86 CPUs where it is
installed, absent without harm, chosen from the command line; never on CUDA (test_precision.py)."""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import embedpipe
import embedpipe.encoding.encoder as encoder_module
import embedpipe.encoding.openvino as backends_module
from embedpipe.cli import app
from embedpipe.config import ModelConfig, flat_overrides
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.openvino import MODEL_XML, openvino_dir, precision_name, runtime_bf16
from embedpipe.encoding.precision import cpu_has_native_bf16
from embedpipe.encoding.remembered import Choices
from embedpipe.errors import ModelError

# /proc/cpuinfo flags of the two CPUs our machines come with (FACTS.md, 2026-12-07).
CPUINFO = {
    "avx512_bf16": "flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni\n",
    "avx2": "flags\t\t: fpu sse avx2 fma\n",
}

needs_openvino = pytest.mark.skipif(
    find_spec("openvino") is None,
    reason="OpenVINO is not installed: pip install 'embedpipe[openvino]' (scripts/test.sh does)",
)


def exports(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"openvino/*/{MODEL_XML}"))


@needs_openvino
def test_the_export_is_made_once_per_model_and_reused(
    fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ModelConfig(backend="openvino", precision="fp32", device="cpu")
    with caplog.at_level(logging.INFO, logger="embedpipe.encoding.openvino"):
        Encoder(cfg)
    [xml] = exports(fresh_cache)
    assert xml.parent.parent == openvino_dir()
    made = xml.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="embedpipe.encoding.openvino"):
        again = Encoder(cfg)
    assert "exporting" not in caplog.text
    assert exports(fresh_cache) == [xml] and xml.stat().st_mtime_ns == made
    assert again.encode_texts(["reused"]).shape == (1, 384)


@needs_openvino
@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"}, reason="x86 only")
def test_auto_runs_openvino_on_this_x86_cpu_within_the_parity_bar(shared_model: None) -> None:
    auto = Encoder(ModelConfig(device="cpu"))
    assert auto.backend == "openvino"
    assert auto.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert "min cosine" in auto.precision_reason


@needs_openvino
def test_a_remembered_choice_runs_no_torch_pass_at_start_up(
    shared_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The torch fp32 reference of the calibration sample is for parity checks only: once the
    choice is remembered (and the export cached), building an encoder runs no forward pass."""
    Encoder(ModelConfig(device="cpu"))  # checks, remembers, exports
    passes: list[int] = []
    real = Encoder._torch_vectors

    def counted(self: Encoder, *args: Any, **kwargs: Any) -> Any:
        passes.append(len(args[0]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Encoder, "_torch_vectors", counted)
    again = Encoder(ModelConfig(device="cpu"))
    assert again.backend == "openvino" and "remembered in" in again.precision_reason
    assert passes == []


@needs_openvino
def test_openvino_runs_bf16_only_where_the_cpu_has_it(shared_model: None) -> None:
    mine = Encoder(ModelConfig(backend="openvino", precision="bf16", device="cpu"))
    if cpu_has_native_bf16():
        assert (mine.precision, mine.precision_reason) == ("bf16", "openvino bf16: asked for")
    else:
        assert mine.precision == "fp32"
        assert "no native bf16" in mine.precision_reason


def test_without_openvino_auto_runs_torch_and_asking_for_it_names_the_fix(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # an environment without the extra
    auto = Encoder(ModelConfig(device="cpu", precision="fp32"))
    assert auto.backend == "torch"
    assert "embedpipe[openvino]" in auto.precision_reason
    with pytest.raises(ModelError, match=r"pip install 'embedpipe\[openvino\]'"):
        Encoder(ModelConfig(device="cpu", backend="openvino"))


def test_backend_is_a_backfill_flag_and_a_config_key() -> None:
    assert flat_overrides(backend="openvino") == {"model": {"backend": "openvino"}}
    assert ModelConfig().backend == "auto"
    result = CliRunner().invoke(app, ["backfill", "--help"], env={"COLUMNS": "200"})
    assert "--backend" in result.output and "openvino" in result.output


@needs_openvino
def test_openvino_is_imported_without_telemetry_unless_the_user_opted_in(tmp_path: Path) -> None:
    """Importing OpenVINO's converter (and NNCF) sends a usage event from a child process unless
    the user opted out; embedpipe's import declines for the process, and keeps an opt-in."""
    import subprocess

    probe = (
        "import multiprocessing\nfrom embedpipe.encoding.openvino import import_openvino\nimport_openvino()\n"
        "from openvino_telemetry.utils.opt_in_checker import OptInChecker\n"
        "print(len(multiprocessing.active_children()), OptInChecker().check(False, True).name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    home = tmp_path / "home"
    home.mkdir()
    declined = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(home)},
        timeout=300,
    )
    assert declined.stdout.split() == ["0", "DECLINED"], declined.stderr
    (home / "intel").mkdir()
    (home / "intel" / "openvino_telemetry").write_text("1\n")  # what `opt_in_out --opt_in` writes
    kept = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(home)},
        timeout=300,
    )
    assert kept.stdout.split()[-1] == "ACCEPTED", kept.stderr


# -- every CPU on any machine: the flags and what OpenVINO reports, played ----------------------


def play_cpu(monkeypatch: pytest.MonkeyPatch, flags: str, openvino_bf16: bool) -> None:
    """Make this machine look like a CPU with `flags` whose OpenVINO runs a bf16 hint in bf16
    (`openvino_bf16`) or in f32, as OpenVINO reports it: an `openvino.Type`."""
    import openvino as ov

    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: cpu_has_native_bf16(flags))

    def reported(compiled: Any, hint: str) -> Any:
        return ov.Type.bf16 if hint == "bf16" and openvino_bf16 else ov.Type.f32

    monkeypatch.setattr(backends_module, "inference_precision", reported)


@pytest.fixture(params=sorted(CPUINFO))
def played_cpu(
    request: pytest.FixtureRequest, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Each kind of CPU our machines come with, played whatever this machine is (the library's
    encoders of this process are forgotten before and after: they ran on the real CPU)."""
    cpu = str(request.param)
    play_cpu(monkeypatch, CPUINFO[cpu], openvino_bf16=cpu == "avx512_bf16")
    embedpipe.api._encoder_for.cache_clear()
    yield cpu
    embedpipe.api._encoder_for.cache_clear()


@needs_openvino
def test_openvino_precision_is_compared_as_a_type_not_as_its_text() -> None:
    import openvino as ov

    assert "bf16" not in str(ov.Type.bf16), "the trap: OpenVINO prints <Type: 'bfloat16'>"
    assert [precision_name(t) for t in (ov.Type.bf16, ov.Type.f32, ov.Type.f16)] == [
        "bf16",
        "fp32",
        "fp16",
    ]
    assert [precision_name(name) for name in ("bf16", "f32")] == ["bf16", "fp32"]
    with pytest.raises(ModelError, match="--backend torch"):
        precision_name(ov.Type.i8)


@needs_openvino
def test_openvino_reports_the_precision_this_cpu_really_runs(encoder: Encoder) -> None:
    """No played CPU: OpenVINO's own answer on this machine, whichever CPU it has."""
    export = Encoder.__new__(Encoder)  # only for its export: the session model's
    export.__dict__.update(encoder.__dict__, _export=None)
    compiled = export._openvino_export().compile("bf16")
    assert compiled.precision == ("bf16" if runtime_bf16() else "fp32")
    assert export._openvino_export().compile("fp32").precision == "fp32"


@needs_openvino
def test_openvino_bf16_asked_for_runs_and_says_what_the_cpu_has(played_cpu: str) -> None:
    mine = Encoder(ModelConfig(backend="openvino", precision="bf16", device="cpu"))
    if played_cpu == "avx512_bf16":
        assert (mine.precision, mine.precision_reason) == ("bf16", "openvino bf16: asked for")
    else:
        assert mine.precision == "fp32"
        assert mine.precision_reason == (
            "openvino fp32: bf16 asked for, but this CPU has no native bf16, so OpenVINO runs fp32"
        )


@needs_openvino
def test_auto_chooses_remembers_and_reports_what_runs_on_each_cpu(
    played_cpu: str, fresh_cache: Path, tmp_path: Path
) -> None:
    runs = "bf16" if played_cpu == "avx512_bf16" else "fp32"
    first = Encoder(ModelConfig(device="cpu"))
    assert (first.backend, first.precision) == ("openvino", runs)
    assert (
        first.precision_reason.startswith(f"openvino {runs}: ")
        and "min cosine" in first.precision_reason
    )
    [entry] = json.loads(Choices().path.read_text()).values()
    assert (entry["choice"]["backend"], entry["choice"]["precision"]) == ("openvino", runs)
    again = Encoder(ModelConfig(device="cpu"))
    assert (again.backend, again.precision) == ("openvino", runs)
    assert "remembered in" in again.precision_reason
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Water the tomatoes in the morning.")
    report = embedpipe.backfill(
        str(tmp_path / "docs"), sink=f"faiss:{tmp_path / 'index'}", collection="docs"
    )
    assert report.precision == runs, report.notes
    assert report.notes[0].startswith(f"precision openvino {runs}: ")


@needs_openvino
def test_a_bf16_hint_openvino_runs_in_f32_is_never_chosen_as_bf16(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU flags that say bf16 while OpenVINO runs the bf16 hint in f32: auto passes OpenVINO bf16
    over (its check would measure f32) and remembers the candidate that does run."""
    play_cpu(monkeypatch, CPUINFO["avx512_bf16"], openvino_bf16=False)
    model = copy.deepcopy(encoder_module._load("", "cpu"))  # torch bf16 converts its weights
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: model)
    auto = Encoder(ModelConfig(device="cpu"))
    assert (auto.backend, auto.precision) == ("torch", "bf16")
    assert "OpenVINO runs fp32 here when bf16 is asked" in auto.precision_reason
    [entry] = json.loads(Choices().path.read_text()).values()
    assert (entry["choice"]["backend"], entry["choice"]["precision"]) == ("torch", "bf16")
