"""The OpenVINO backend: exported once per model and reused, picked by auto on x86 CPUs where it is
installed, absent without harm, chosen from the command line; never on CUDA (test_precision.py)."""

from __future__ import annotations

import logging
import os
import platform
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import embedpipe.encoding.encoder as encoder_module
from embedpipe.cli import app
from embedpipe.config import ModelConfig, flat_overrides
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.openvino import MODEL_XML, openvino_dir
from embedpipe.encoding.precision import cpu_has_native_bf16
from embedpipe.errors import ModelError

needs_openvino = pytest.mark.skipif(
    find_spec("openvino") is None,
    reason="OpenVINO is not installed: pip install 'embedpipe[openvino]' (scripts/test.sh does)",
)


@pytest.fixture
def shared_model(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """New encoders share the session's model (OpenVINO and fp32 torch leave its weights as they
    are) and the session's cache (one export per session)."""
    monkeypatch.setattr(encoder_module, "_load", lambda path, device: encoder.model)


@pytest.fixture
def fresh_cache(shared_model: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedpipe cache."""
    monkeypatch.setenv("EMBEDPIPE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


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
