"""Run the `embedpipe` command as a separate process without paying Python's imports each time.

A test of a whole command wants what cron gets: its own process, pid, exit status, signals,
environment, working directory, stdout and stderr. Starting `python -m embedpipe` pays for
importing torch, sentence-transformers, transformers, Qdrant and FAISS every time: 5-25 s on a
loaded 2-core machine, for every one of the suite's hundred-odd command runs.

So one server process (this module run as `python -m tests.zygote`) imports those libraries
and embedpipe's library modules once, then forks a child per command. The child sets up its own
argv, environment, working directory and standard streams, and runs `python -m embedpipe` from
there (`runpy`). The command-line modules (`embedpipe.cli`, `embedpipe.cli.running`: their consoles
read COLUMNS and the like when imported) are imported fresh in every child, after its
environment is in place; the library modules hold nothing at import but empty caches. A child SIGKILLed by a crash point dies
alone; the server reports its exit status as `subprocess` would (-9).

Where the fork changes the meaning of a test (what a fresh interpreter imports, a terminal),
the test keeps `subprocess`; `EMBEDPIPE_TEST_FRESH=1` sends every command through `subprocess`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Never embedpipe.cli or embedpipe.cli.running: they read the environment when imported.
PRELOAD = (
    "torch",
    "sentence_transformers",
    "transformers",
    "faiss",
    "qdrant_client",
    "qdrant_edge",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "typer",
    "rich.console",
    "pydantic",
    "numpy",
    "xxhash",
    "openvino",
    "embedpipe",
)


# -- the server (python -m tests.zygote) ----------------------------------------------------


def serve() -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    import multiprocessing

    if multiprocessing.active_children():  # a child would try to join them when it exits
        raise RuntimeError(
            f"a preloaded library started processes: {multiprocessing.active_children()}"
        )
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    reply.write('{"ready": true}\n')
    running: dict[int, int] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.02)
        if readable:
            data = os.read(0, 1 << 16)
            if not data:
                return  # the test session ended
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    reply.close()
                    child(request)  # raises SystemExit: this process ends as the command does
                running[pid] = request["id"]
                reply.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in running:  # not a helper process some library started
                code = os.waitstatus_to_exitcode(status)
                reply.write(json.dumps({"id": running.pop(pid), "returncode": code}) + "\n")


def child(request: dict[str, Any]) -> None:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC),
        ):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["embedpipe", *request["args"]]
        sys.path[0] = request["cwd"]  # what `python -m` puts first
    except BaseException:
        os._exit(70)
    runpy.run_module("embedpipe", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


# -- the client (used by the tests) ---------------------------------------------------------


class Command:
    """A command running in a child of the server: the part of `subprocess.Popen` tests use."""

    def __init__(self, server: _Server, ident: int, out: Path, err: Path, args: list[str]) -> None:
        self.server, self.ident, self.out, self.err, self.args = server, ident, out, err, args
        self.pid = server.result(ident, "pid", 60)
        self.returncode: int | None = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.result(self.ident, "returncode", 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self.server.result(self.ident, "returncode", timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.returncode = code
        return code

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.wait(60)
            raise
        return self.out.read_text(errors="replace"), self.err.read_text(errors="replace")


class _Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "CI": "true"},
        )  # CI=true: importing openvino starts no telemetry process to inherit
        self.ids = itertools.count(1)
        self.results: dict[tuple[int, str], int] = {}
        self.changed = threading.Condition()
        self.lock = threading.Lock()
        self.dir = Path(tempfile.mkdtemp(prefix="embedpipe-zygote-"))
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or b"{}")
        if not first.get("ready"):
            raise RuntimeError("the test command server did not start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.changed:
                for key in ("pid", "returncode"):
                    if key in message:
                        self.results[(message["id"], key)] = message[key]
                self.changed.notify_all()

    def result(self, ident: int, key: str, timeout: float | None) -> Any:
        with self.changed:
            self.changed.wait_for(
                lambda: (ident, key) in self.results or self.proc.poll() is not None, timeout
            )
            if (ident, key) not in self.results and self.proc.poll() is not None:
                raise RuntimeError("the test command server died")
            return self.results.get((ident, key))

    def start(self, args: list[str], env: dict[str, str], cwd: Path) -> Command:
        ident = next(self.ids)
        out, err = self.dir / f"{ident}.out", self.dir / f"{ident}.err"
        out.touch()
        err.touch()
        request = {
            "id": ident,
            "args": args,
            "env": env,
            "cwd": str(cwd),
            "stdout": str(out),
            "stderr": str(err),
        }
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        return Command(self, ident, out, err, args)


_server: _Server | None = None
_server_lock = threading.Lock()


def server() -> _Server:
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = _Server()
        return _server


if __name__ == "__main__":
    serve()
