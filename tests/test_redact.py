"""Safety of what a run accepts and leaves behind: collection names stay inside the sink folder,
credentials in a sink URI are never shown or stored, a missing source is a usage error found
before the model loads, and state and sink files are private to their owner."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import embedpipe
import embedpipe.api
from embedpipe.config import COLLECTION_RULE, SinkConfig, load_config
from embedpipe.errors import ConfigError, SourceError
from embedpipe.ledger import state_dir_for
from embedpipe.sinks import open_sink
from embedpipe.sinks.qdrant import server_client
from embedpipe.sources import detect_kind
from embedpipe.types import Document
from tests.test_incremental import config, corpus_files

SECRET = "sekrit"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The embedpipe command in a fresh interpreter, as cron runs it."""
    return subprocess.run(
        [sys.executable, "-m", "embedpipe", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )  # fmt: skip


def flat(text: str) -> str:
    """Text with its line wrapping undone, for matching messages the terminal wrapped."""
    return " ".join(text.split())


def tree(root: Path) -> list[Path]:
    """Every path under `root`, itself excluded."""
    return sorted(root.rglob("*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- 6: collection names ------------------------------------------------------------------------

BAD_COLLECTIONS = ["../../x", "<b>c</b>", "a/b", ".hidden", "", "x" * 129, "two words"]


@pytest.mark.parametrize("name", BAD_COLLECTIONS)
def test_collection_outside_the_rule_is_a_config_error_naming_it(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"sink": {"collection": name}})
    assert COLLECTION_RULE in str(exc.value)


def test_collection_rule_applies_to_environment_and_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sink\.collection"):
        load_config(None, environ={"EMBEDPIPE_SINK__COLLECTION": "../../x"})
    path = tmp_path / "c.yaml"
    path.write_text("sink:\n  collection: ../up\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"in {path}"):
        load_config(path)


@pytest.mark.parametrize("name", ["docs", "Docs-2024.v1_a", "7", "x" * 128])
def test_collection_inside_the_rule_is_accepted(name: str) -> None:
    assert load_config(None, {"sink": {"collection": name}}).sink.collection == name


@pytest.mark.parametrize("name", ["../../x", "<b>c</b>"])
def test_cli_collection_that_escapes_the_sink_exits_2_and_creates_nothing(
    name: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus({"a.md": "hello"})
    work = tmp_path / "work"
    work.mkdir()
    done = cli("backfill", str(root), "--sink", f"faiss:{work / 'a' / 'sink'}", "--collection", name,
               cwd=work)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert COLLECTION_RULE in flat(done.stderr)
    assert tree(tmp_path) == [tmp_path / "corpus", root / "a.md", work]


# -- 7: credentials in a sink URI ------------------------------------------------------------------


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
    done = cli("backfill", str(root), "--sink", uri, "--collection", "docs", "--state", str(state),
               "--report", str(report), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert json.loads(report.read_text())["sink"] == uri.replace(SECRET, "***")
    written = [p for p in tree(tmp_path) if p.is_file()]
    assert state / "ledger.sqlite" in written
    for path in written:
        assert SECRET not in str(path) and SECRET.encode() not in path.read_bytes(), path


# -- 9: a missing source is a usage error ----------------------------------------------------------


def test_cli_missing_source_exits_2_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = cli("backfill", str(missing), "--sink", f"faiss:{tmp_path / 'f'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"No source at {missing}" in flat(done.stderr)
    assert not (tmp_path / "f").exists()


def _model_loads() -> int:
    """How many times the library has loaded a model for a run (its cache misses)."""
    loader = getattr(embedpipe.api, "_encoder_for", None) or embedpipe.api._run_encoder
    return int(loader.cache_info().misses)


@pytest.mark.parametrize("prefix", ["", "jsonl:", "dir:"])
def test_run_with_a_missing_source_raises_before_loading_the_model(
    prefix: str, tmp_path: Path
) -> None:
    cfg = load_config(None, {"source": {"uri": f"{prefix}{tmp_path / 'nowhere'}"},
                             "sink": {"uri": f"faiss:{tmp_path / 'f'}"},
                             "model": {"name": str(tmp_path / "no-model-here")}})  # fmt: skip
    before = _model_loads()
    with pytest.raises(ConfigError, match=r"No source at .*nowhere"):
        embedpipe.run(cfg)
    assert _model_loads() == before


def test_remote_url_source_is_a_usage_error_not_a_missing_file() -> None:
    with pytest.raises(ConfigError) as exc:
        detect_kind("s3://bucket/corpus")
    assert "no reader for s3:// sources" in str(exc.value)
    assert "No source at" not in str(exc.value)
    assert isinstance(exc.value, SourceError)  # what callers caught before still catches it


# -- 10: file permissions ---------------------------------------------------------------------------


def private(path: Path) -> bool:
    return mode(path) & 0o077 == 0


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge"])
def test_run_leaves_state_and_sink_private_to_the_owner(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(4)), kind, tmp_path)
    old = os.umask(0o022)
    try:
        embedpipe.run(cfg)
        assert os.umask(0o022) == 0o022  # the run put the process umask back
    finally:
        os.umask(old)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    assert (mode(state), mode(state / "ledger.sqlite")) == (0o700, 0o600)
    sink_paths = tree(tmp_path / kind)
    assert sink_paths and [p for p in sink_paths if not p.is_symlink() and not private(p)] == []


def test_state_mode_opens_the_state_dir_to_the_group(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(4)), "faiss", tmp_path, state_mode="0750")
    embedpipe.run(cfg)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    assert (mode(state), mode(state / "ledger.sqlite")) == (0o750, 0o640)


def test_existing_open_state_dir_is_tightened(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(4)), "faiss", tmp_path)
    state = state_dir_for(cfg.sink.uri, cfg.state)
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "ledger.sqlite").touch()
    os.chmod(state / "ledger.sqlite", 0o644)  # an empty file is a fresh SQLite database
    embedpipe.run(cfg)
    assert (mode(state), mode(state / "ledger.sqlite")) == (0o700, 0o600)


def test_umask_is_restored_after_a_failed_run(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(make_corpus(corpus_files(1)), "faiss", tmp_path)

    def broken() -> Iterator[Document]:
        yield Document(id="a", text="one document, then the source breaks")
        raise SourceError("the source broke")

    old = os.umask(0o022)
    try:
        with pytest.raises(SourceError, match="the source broke"):
            embedpipe.run(cfg, source=broken())
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


@pytest.mark.parametrize("value", ["0600", 700, "rwx", "01777", True])
def test_state_mode_must_be_octal_and_keep_the_owner_rwx(value: object) -> None:
    with pytest.raises(ConfigError, match="state_mode"):
        load_config(None, {"state_mode": value})


@pytest.mark.parametrize(("value", "want"), [("0750", "0750"), ("750", "0750"), (0o750, "0750")])
def test_state_mode_reads_octal_strings_and_numbers(value: object, want: str) -> None:
    assert load_config(None, {"state_mode": value}).state_mode == want
