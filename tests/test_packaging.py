"""What ships beside the package: the scheduler examples in configs/examples run real configs,
and the wheel carries py.typed."""

from __future__ import annotations

import ast
import configparser
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from embedpipe.config import load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "configs" / "examples"


def embedpipe_command(line: str) -> list[str]:
    """The embedpipe invocation inside a shell line, as argv from `embedpipe` on."""
    argv = shlex.split(line.replace("\\%", "%"))
    start = next(i for i, a in enumerate(argv) if a.endswith("/embedpipe") or a == "embedpipe")
    return argv[start:]


def check_run_command(argv: list[str]) -> None:
    assert argv[1] == "run"
    assert (ROOT / argv[2]).is_file(), f"{argv[2]} is not a config in this repository"
    load_config(ROOT / argv[2])
    assert "--metrics" in argv and "--log-format" in argv


def test_cron_example_runs_embedpipe_run_nightly() -> None:
    [line] = [
        ln for ln in (EXAMPLES / "cron").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    fields = line.split()
    assert len(fields[:5]) == 5 and all(
        f.replace("*", "").replace(",", "").isdigit() or f == "*" for f in fields[:5]
    )
    check_run_command(embedpipe_command(line.split("&&", 1)[1].split(">>")[0]))


def test_systemd_timer_triggers_a_oneshot_service_running_embedpipe() -> None:
    service, timer = configparser.ConfigParser(strict=False), configparser.ConfigParser()
    service.optionxform = timer.optionxform = str  # type: ignore[assignment,method-assign]
    service.read(EXAMPLES / "embedpipe.service")
    timer.read(EXAMPLES / "embedpipe.timer")
    assert timer["Timer"]["Unit"] == "embedpipe.service" and timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert service["Service"]["Type"] == "oneshot"
    check_run_command(embedpipe_command(service["Service"]["ExecStart"]))


def test_airflow_example_is_a_dag_calling_embedpipe_run() -> None:
    source = (EXAMPLES / "airflow_dag.py").read_text()
    tree = ast.parse(source)
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert {"DAG", "BashOperator"} <= calls
    assert "run configs/nightly.yaml" in source and (ROOT / "configs/nightly.yaml").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this tree (no dependencies, no build isolation)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "embedpipe", tree / "embedpipe", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [built] = (tmp_path / "dist").glob("embedpipe-*.whl")
    return built


def test_py_typed_ships_in_the_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "embedpipe/py.typed" in names and "embedpipe/sources/pdf.py" in names


def test_the_license_is_an_spdx_expression_setuptools_takes_without_a_warning(wheel: Path) -> None:
    """A TOML table (`license = {text = ...}`) is deprecated: setuptools warns at every set-up."""
    pyproject = (ROOT / "pyproject.toml").read_text().splitlines()
    assert 'license = "Apache-2.0"' in pyproject
    assert any(line.startswith('requires = ["setuptools>=77"') for line in pyproject)
    zipped = zipfile.ZipFile(wheel)
    [metadata] = [n for n in zipped.namelist() if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in zipped.read(metadata).decode().splitlines()
