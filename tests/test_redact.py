"""Credentials in a sink URI (embedpipe/redact.py) reach the server but are never shown or stored:
not in the sink's uri, error messages, the report or any file a failed run leaves."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedpipe.config import SinkConfig
from embedpipe.errors import ConfigError
from embedpipe.sinks import open_sink
from embedpipe.sinks.qdrant import server_client
from tests.clikit import cli, tree

SECRET = "sekrit"


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_qdrant_sink_uri_hides_password_and_api_key() -> None:
    uri = f"qdrant+https://admin:{SECRET}@qdrant.example.com:6333/?api_key={SECRET}2"
    sink = open_sink(SinkConfig(uri=uri, collection="c"))
    assert sink.uri == "qdrant+https://admin:***@qdrant.example.com:6333/?api_key=***"
    token = open_sink(SinkConfig(uri=f"qdrant+http://{SECRET}@h:6333", collection="c"))
    assert token.uri == "qdrant+http://***@h:6333"


def test_unknown_sink_message_hides_the_password() -> None:
    with pytest.raises(ConfigError) as exc:
        open_sink(SinkConfig(uri=f"qdrant+htp://admin:{SECRET}@h:6333"))
    assert SECRET not in str(exc.value) and "admin:***@h:6333" in str(exc.value)


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A local HTTP server answering Qdrant's alias listing; yields its address and the headers
    of every request it received."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = json.dumps({"result": {"aliases": []}, "status": "ok", "time": 0}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_in_the_url_reach_the_server(recording_server) -> None:  # type: ignore[no-untyped-def]
    address, seen = recording_server
    with pytest.warns(UserWarning, match="insecure connection"):  # an API key over plain http
        client = server_client(f"http://admin:{SECRET}@{address}/?api_key=k1", None, timeout=5)
    try:
        assert client.get_aliases().aliases == []
    finally:
        client.close()
    # Basic auth for a proxy in front of the server, the API key as Qdrant's api-key header.
    assert seen[0]["authorization"] == "Basic YWRtaW46c2Vrcml0"
    assert seen[0]["api-key"] == "k1"


def test_failed_run_on_a_server_shows_and_stores_no_password(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus({"a.md": "hello there", "b.md": "general kenobi"})
    report, state = tmp_path / "report.json", tmp_path / "state"
    uri = f"qdrant+http://admin:{SECRET}@127.0.0.1:{closed_port()}"
    done = cli(
        "backfill",
        str(root),
        "--sink",
        uri,
        "--collection",
        "docs",
        "--state",
        str(state),
        "--report",
        str(report),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert json.loads(report.read_text())["sink"] == uri.replace(SECRET, "***")
    written = [p for p in tree(tmp_path) if p.is_file()]
    assert state / "ledger.sqlite" in written
    for path in written:
        assert SECRET not in str(path) and SECRET.encode() not in path.read_bytes(), path
