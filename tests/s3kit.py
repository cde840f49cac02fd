"""A real S3 API on 127.0.0.1 for the tests: moto's standalone server, started by the fixture,
with a thin WSGI layer that records every request (so a test can count the object bodies a run
fetched) and can make chosen objects fail the way real stores do: access denied, throttled
(503 SlowDown), or a connection dropped halfway through a body."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

import embedpipe
from embedpipe.config import load_config
from embedpipe.state.ledger import Ledger, state_dir_for, target_key

# Credentials the tests put in the environment: they must never show up in any output.
ACCESS_KEY = "AKIAEMBEDPIPETEST7Q2Z"
SECRET_KEY = "embedpipe/Test+Secret/4f9c2e7a1b"
_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
    "<Resource>/{key}</Resource><RequestId>embedpipe-test</RequestId></Error>"
)


@dataclass
class Fault:
    kind: str  # "deny" | "throttle" | "drop"
    times: int = -1  # how many requests it spoils; -1 = all


@dataclass
class Requests:
    """What the server was asked, as (method, path, query)."""

    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def bodies(self, bucket: str) -> list[str]:
        """Keys whose body (or part of it) was fetched: GET /bucket/key."""
        return [
            p.split("/", 2)[2]
            for m, p, _ in self.seen
            if m == "GET" and p.count("/") >= 2 and p.split("/")[1] == bucket and p.split("/", 2)[2]
        ]

    def clear(self) -> None:
        self.seen.clear()


class FaultyS3:
    """WSGI layer in front of moto: records requests, spoils those of faulted keys."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.requests = Requests()
        self.faults: dict[str, Fault] = {}  # "bucket/key" -> fault

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        self.requests.seen.append((method, path, environ.get("QUERY_STRING", "")))
        fault = self.faults.get(path.lstrip("/"))
        spoils = fault is not None and method in ("GET", "HEAD") and fault.times != 0
        if fault is None or not spoils or (fault.kind == "drop" and method == "HEAD"):
            return self.app(environ, start_response)  # a HEAD has no body to cut
        if fault.times > 0:
            fault.times -= 1
        if fault.kind == "deny":
            return _error(
                start_response, "403 Forbidden", "AccessDenied", "Access Denied", path, method
            )
        if fault.kind == "throttle":
            return _error(
                start_response,
                "503 Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
                path,
                method,
            )
        return _cut(self.app, environ, start_response)


def _error(
    start_response: Callable[..., Any], status: str, code: str, message: str, path: str, method: str
) -> Iterable[bytes]:
    body = _ERROR.format(code=code, message=message, key=path.lstrip("/")).encode()
    start_response(
        status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    )
    return [] if method == "HEAD" else [body]


def _cut(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterator[bytes]:
    """The real response, its headers whole and its body cut in half: the connection drops."""
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.update(status=status, headers=headers)
        return io.BytesIO().write

    body = b"".join(app(environ, capture))
    start_response(captured["status"], captured["headers"])
    yield body[: len(body) // 2]
    raise ConnectionResetError("embedpipe test: connection dropped mid-body")


class S3Server(ThreadedMotoServer):
    """moto's ThreadedMotoServer on 127.0.0.1 (a free port) behind FaultyS3."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.layer = FaultyS3(DomainDispatcherApplication(create_backend_app))

    def _server_entry(self) -> None:
        self._server = make_server(
            self._ip_address, self._port, self.layer, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"


@dataclass
class S3:
    """A started server, a boto3 client on it, and its request log and faults."""

    server: S3Server
    client: Any
    bucket: str = "lake"

    @property
    def requests(self) -> Requests:
        return self.server.layer.requests

    def put(self, key: str, data: bytes | str) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def fault(self, key: str, kind: str, times: int = -1) -> None:
        self.server.layer.faults[f"{self.bucket}/{key}"] = Fault(kind, times)


@pytest.fixture(name="s3")
def s3_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3]:
    """An S3 server on 127.0.0.1 with a bucket `lake`; the environment points every client at it
    (AWS_ENDPOINT_URL, test credentials) and nowhere else (no profile files, no metadata service)."""
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = S3Server()
    server.start()
    home = tmp_path_factory.mktemp("aws-home")
    env = {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "creds"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    client.create_bucket(Bucket="lake")
    try:
        yield S3(server, client)
    finally:
        _empty(client, "lake")  # moto's backends live as long as the process, not the server
        server.stop()


def _empty(client: Any, bucket: str) -> None:
    """Delete every object of `bucket`, then the bucket: the next test starts from none."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


# -- corpora on the bucket, and what a run over them left in the ledger ---------------------


TOPICS = ["trains", "boats", "bread", "tomatoes", "sockets", "threads", "rivers", "violins"]


def texts(n: int = 8, edit: str = "") -> dict[str, str]:
    """n short documents of two paragraphs each: about 3 chunks of 24 tokens per document."""
    return {
        f"doc{i:02d}": f"# About {t}\n\nThis note {i} explains {t} in some detail, with history "
        f"and practice.{edit}\n\nA second paragraph on {t} care and upkeep over the years."
        for i, t in enumerate(TOPICS[:n])
    }


def parquet_bytes(rows: dict[str, str]) -> bytes:
    out = io.BytesIO()
    table = pa.table({"id": list(rows), "text": list(rows.values()), "lang": ["en"] * len(rows)})
    pq.write_table(table, out, row_group_size=3)
    return out.getvalue()


def jsonl_bytes(rows: dict[str, str], gzipped: bool = True) -> bytes:
    lines = "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in rows.items()).encode()
    return (
        gzip.compress(lines, mtime=0) if gzipped else lines
    )  # the same bytes (and ETag) each time


def config(uri: str, tmp_path: Path, name: str, **extra: object) -> embedpipe.RunConfig:
    data = {
        "source": {"uri": uri},
        "sink": {"uri": f"faiss:{tmp_path / f'sink-{name}'}", "collection": "docs"},
        "chunking": {"chunk_tokens": 24, "overlap_tokens": 0},
        **extra,
    }
    return load_config(None, data)


def ledger_chunks(cfg: embedpipe.RunConfig) -> dict[str, str]:
    """chunk id -> content hash of every chunk done under the live fingerprint."""
    ledger = Ledger(state_dir_for(cfg.sink.uri, cfg.state) / "ledger.sqlite")
    try:
        key = target_key(cfg.sink.uri, cfg.sink.collection)
        live = ledger.live(key)
        assert live is not None
        rows = ledger.db.execute(
            "SELECT chunk_id, content_hash FROM chunks WHERE target = ? AND fingerprint = ? "
            "AND state = 1",
            (key, live["fingerprint"]),
        )
        return dict(rows.fetchall())
    finally:
        ledger.close()


def put_corpus(s3: S3, tmp_path: Path) -> Path:
    """The same corpus twice: under s3://lake/{parquet,jsonl,docs}/ and under tmp_path/local/."""
    rows = texts()
    half = dict(list(rows.items())[:4]), dict(list(rows.items())[4:])
    local = tmp_path / "local"
    for kind, data in (("parquet", parquet_bytes), ("jsonl", jsonl_bytes)):
        (local / kind).mkdir(parents=True)
        for i, part in enumerate(half):
            suffix = ".parquet" if kind == "parquet" else ".jsonl.gz"
            s3.put(f"{kind}/part-{i}{suffix}", data(part))
            (local / kind / f"part-{i}{suffix}").write_bytes(data(part))
    for doc_id, text in rows.items():
        name = f"{doc_id}.md" if doc_id < "doc04" else f"more/{doc_id}.html"
        body = text if name.endswith(".md") else f"<html><body><p>{text}</p></body></html>"
        s3.put(f"docs/{name}", body)
        (local / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (local / "docs" / name).write_text(body)
    s3.put("docs/.DS_Store", b"\0binary")
    s3.put("parquet/_SUCCESS", b"")
    return local
