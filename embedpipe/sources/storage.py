"""The filesystem layer under every source kind: buckets (`s3://`, `gs://`) next to local paths.

Objects are read through pyarrow's own filesystems (Parquet by range requests, row group by row
group; JSONL and documents streamed), S3 listings come from boto3 because only they carry each
object's ETag. Endpoint, region and credentials come from the standard places only: the
environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `GOOGLE_APPLICATION_CREDENTIALS`
...), the AWS/GCP profile files, and `source.storage_options` for an endpoint override. Nothing
here passes a credential to a client, so none is ever serialised, shown or stored: objects are
named `s3://bucket/key` everywhere.

A failed request is retried with backoff when it may pass next time (throttling, a dropped
connection, a 5xx); what still fails is an `OSError` whose message is one line naming why.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from embedpipe.errors import ConfigError, NoSourceError, SourceError
from embedpipe.redact import redact_secrets, redact_uri

SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs"}  # URI scheme -> store
ATTEMPTS = 4  # per request (the clients' own retries) and per object (ours, around a whole read)
BACKOFF_S = 0.2  # first wait between our attempts; doubles each time
LINE_BUFFER = 1 << 20  # bytes read at a time from a plain (not gzipped) object of lines
T = TypeVar("T")

# Markers in the clients' messages, most specific first -> the one line we show.
_REASONS = (
    (("ACCESS_DENIED", "AccessDenied", "Forbidden", "(403)", "HTTP status 403"), "access denied"),
    (("NO_SUCH_BUCKET", "NoSuchBucket"), "no such bucket"),
    (
        (
            "NO_SUCH_KEY",
            "NoSuchKey",
            "Path does not exist",
            "(404)",
            "HTTP status 404",
            "Not Found",
        ),
        "no such object (deleted since it was listed?)",
    ),
    (
        ("SLOW_DOWN", "SlowDown", "Throttl", "THROTTL", "(503)", "HTTP status 503"),
        "throttled by the server",
    ),
    (("HTTP status 5", "INTERNAL_FAILURE", "InternalError", "SERVICE_UNAVAILABLE"), "server error"),
    (
        ("curlCode", "NETWORK_CONNECTION", "Connection", "connection", "timed out", "TIMEOUT"),
        "connection failed",
    ),
)
EMPTY_SEGMENT = "key has an empty path segment ('//') the S3 reader cannot open"
_FINAL = ("access denied", "no such bucket", "no such object (deleted since it was listed?)")


def is_remote(uri: str) -> bool:
    """Whether `uri` names a bucket location (s3://, gs://) rather than a local path."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object of a listing, as reports, errors and the ledger name it."""

    uri: str  # s3://bucket/key: shown, reported, remembered in the ledger
    path: str  # bucket/key: the pyarrow filesystem's own path
    rel: str  # the key relative to the listed prefix (a document file's id)
    size: int
    version: str  # the ETag (S3) or size and modification time (GCS)
    name: str = ""  # what the source's records name it: `rel` for a document file, else `uri`


@dataclass(frozen=True, slots=True)
class Location:
    """A bucket and a key (an object, or a prefix of objects)."""

    scheme: str  # "s3" | "gs"
    bucket: str
    key: str  # no leading slash; a trailing one marks a prefix

    @classmethod
    def parse(cls, uri: str) -> Location:
        parts = urlsplit(uri)
        if "@" in parts.netloc:  # never echo it: the part before '@' may be a secret
            raise ConfigError(
                f"{redact_uri(uri)}: credentials in a source URI are not read; set them in the "
                "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile file"
            )
        if not parts.netloc:
            raise NoSourceError(f"No bucket in {uri}: pass {parts.scheme}://BUCKET/PREFIX")
        return cls(SCHEMES[parts.scheme.lower()], parts.netloc, parts.path.lstrip("/"))

    def uri_of(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}".rstrip("/")


class Store:
    """The objects of one bucket: listed with their versions, read with retries."""

    def __init__(self, location: Location, options: Mapping[str, Any]) -> None:
        self.location = location
        self.attempts = max(1, int(options.get("max_attempts", ATTEMPTS)))
        # Each object's version as it was read this run (the ETag the read's own HEAD gave),
        # "" when reads of it saw two versions: what the ledger remembers, not the listed one.
        self.read_versions: dict[str, str] = {}
        self._client: Any = None
        if location.scheme == "s3":
            self.fs, self._client = _s3(options, self.attempts)
        else:
            self.fs = _gcs(options)

    @property
    def uri(self) -> str:
        """The location as given, normalised: `s3://bucket/prefix`."""
        return self.location.uri_of(self.location.key)

    def objects(self) -> tuple[bool, list[StoredObject]]:
        """(whether the location is one object, the objects there sorted by key).

        NoSourceError for a missing bucket or an empty prefix, SourceError when listing is
        refused."""
        loc = self.location
        try:
            one = self._stat(loc.key) if loc.key and not loc.key.endswith("/") else None
            if one is not None:
                return True, [one]
            prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
            found = sorted(self._list(prefix), key=lambda o: o.path)
        except OSError as exc:
            why = reason(exc)
            if why in ("no such bucket",):
                raise NoSourceError(f"No bucket {loc.bucket} for {self.uri}: {why}") from None
            raise SourceError(f"Cannot list {self.uri}: {why}") from None
        if not found:
            raise NoSourceError(f"No objects at {self.uri}: pass an existing object or prefix")
        return False, found

    def read_bytes(self, obj: StoredObject) -> bytes:
        """An object's whole body (never decompressed)."""

        def read() -> bytes:
            with _open(self.fs, obj.path) as stream:
                self._note(obj, stream)
                return bytes(stream.read())

        return retrying(read, self.attempts)

    def lines(self, obj: StoredObject) -> Iterator[bytes]:
        """An object's lines, streamed (gunzipped for a .gz key); after a dropped connection the
        object is opened again and the lines already given are skipped."""
        given = 0
        for attempt in range(self.attempts):
            try:
                with _open(self.fs, obj.path) as raw:
                    self._note(obj, raw)
                    # pyarrow's stream cannot be iterated by line (io.UnsupportedOperation):
                    # gzip's reader or a buffered reader over it can.
                    stream: Iterable[bytes]
                    if obj.path.endswith(".gz"):
                        stream = gzip.GzipFile(fileobj=raw)
                    else:
                        stream = io.BufferedReader(raw, LINE_BUFFER)
                    for n, line in enumerate(stream):
                        if n >= given:
                            given += 1
                            yield line
                return
            except OSError as exc:
                if not _transient(exc) or attempt == self.attempts - 1:
                    raise _failure(exc, attempt + 1) from None
                time.sleep(BACKOFF_S * 2**attempt)

    def random_access(self, obj: StoredObject) -> Any:
        """An object opened for range reads (a Parquet file's footer, then its row groups)."""

        def opened() -> Any:
            file = _open(self.fs, obj.path, stream=False)
            self._note(obj, file)
            return file

        return self.retrying(opened)

    def _note(self, obj: StoredObject, opened: Any) -> None:
        """Remember the version of `obj` a read opened (S3: the ETag of the open's HEAD); two
        reads of one object that saw different versions leave no version to trust."""
        etag = _etag(opened)
        if etag is None:
            return
        if self.read_versions.setdefault(obj.uri, etag) != etag:
            self.read_versions[obj.uri] = ""

    def retrying(self, call: Callable[[], T]) -> T:
        """`call()`, again after a backoff while it fails in a way that may pass."""
        return retrying(call, self.attempts)

    # -- listing ------------------------------------------------------------------------------

    def _stat(self, key: str) -> StoredObject | None:
        if self._client is not None:
            from botocore.exceptions import ClientError

            try:
                head = self._client.head_object(Bucket=self.location.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise OSError(str(exc)) from None
            return self._object(key, key.rsplit("/", 1)[-1], head["ContentLength"], head["ETag"])
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(f"{self.location.bucket}/{key}")
        if info.type != pafs.FileType.File:
            return None
        return self._object(key, info.base_name, info.size, f"{info.size}:{info.mtime_ns}")

    def _list(self, prefix: str) -> Iterator[StoredObject]:
        bucket = self.location.bucket
        if self._client is not None:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                pages = self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix
                )
                for page in pages:
                    for item in page.get("Contents", ()):
                        if not item["Key"].endswith("/"):  # a folder marker holds no document
                            rel = item["Key"][len(prefix) :]
                            yield self._object(item["Key"], rel, item["Size"], item["ETag"])
            except (ClientError, BotoCoreError) as exc:
                raise OSError(str(exc)) from None
            return
        import pyarrow.fs as pafs

        select = pafs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True)
        select.allow_not_found = True
        for info in self.fs.get_file_info(select):
            if info.type == pafs.FileType.File:
                key = info.path[len(bucket) + 1 :]
                version = f"{info.size}:{info.mtime_ns}"
                yield self._object(key, key[len(prefix) :], info.size, version)

    def _object(self, key: str, rel: str, size: int, version: str) -> StoredObject:
        loc = self.location
        return StoredObject(
            loc.uri_of(key), f"{loc.bucket}/{key}", rel, int(size), version.strip('"')
        )


def fetch(fs: Any, path: str, attempts: int = ATTEMPTS) -> bytes:
    """The whole body of the object at `path` on the pyarrow filesystem `fs`, with retries; an
    OSError naming why when it cannot be had (also what a Ray worker calls)."""

    def read() -> bytes:
        with _open(fs, path) as stream:
            return bytes(stream.read())

    return retrying(read, attempts)


def _open(fs: Any, path: str, *, stream: bool = True) -> Any:
    """`path` on the pyarrow filesystem `fs`, opened as a stream (else for range reads); a key
    pyarrow refuses to address (an empty segment: `docs//a.md`) is an OSError naming why, so
    it is that one record's error, not the run's."""
    import pyarrow as pa

    try:
        return fs.open_input_stream(path, compression=None) if stream else fs.open_input_file(path)
    except pa.ArrowInvalid as exc:
        raise OSError(f"{EMPTY_SEGMENT}: rename the object ({exc})") from None


def _etag(opened: Any) -> str | None:
    """The ETag an opened S3 object came with (pyarrow's HEAD at open); None when unknown."""
    try:
        metadata = opened.metadata()  # a dict of str -> bytes
    except (AttributeError, NotImplementedError, OSError):
        return None
    etag = metadata.get("ETag") if isinstance(metadata, dict) else None
    return etag.decode().strip('"') if isinstance(etag, bytes) and etag else None


def retrying(call: Callable[[], T], attempts: int) -> T:
    """`call()`, again after a backoff while it fails in a way that may pass."""
    for attempt in range(attempts):
        try:
            return call()
        except OSError as exc:
            if not _transient(exc) or attempt == attempts - 1:
                raise _failure(exc, attempt + 1) from None
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def reason(exc: BaseException) -> str:
    """Why a request failed, in one line that names no credential."""
    if isinstance(exc, FileNotFoundError):
        return "no such object (deleted since it was listed?)"
    if isinstance(exc, PermissionError):
        return "access denied"
    text = str(exc)
    if text.startswith(EMPTY_SEGMENT):
        return text
    for markers, why in _REASONS:
        if any(m in text for m in markers):
            return why
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return redact_secrets(first)[:200]


def _transient(exc: OSError) -> bool:
    """A failure that may pass on a later attempt (not a refusal, a missing object, bad gzip,
    a key the reader cannot address)."""
    if isinstance(exc, gzip.BadGzipFile):
        return False
    why = reason(exc)
    return why not in _FINAL and not why.startswith(EMPTY_SEGMENT)


def _failure(exc: OSError, attempts: int) -> OSError:
    why = reason(exc)
    return OSError(why if why in _FINAL or attempts == 1 else f"{why} ({attempts} attempts)")


def _s3(options: Mapping[str, Any], attempts: int) -> tuple[Any, Any]:
    """pyarrow's S3 filesystem and a boto3 client (for listings) on the same endpoint/region."""
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
    except ImportError:
        raise SourceError("s3:// sources need boto3: pip install 'embedpipe[s3]'") from None
    import pyarrow.fs as pafs

    for name in ("botocore", "boto3", "urllib3"):  # at DEBUG they log signed request headers
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
    endpoint = options.get("endpoint_url") or None  # None: boto3 reads AWS_ENDPOINT_URL, profiles
    session = boto3.session.Session()
    region = options.get("region") or session.region_name or "us-east-1"
    anonymous = bool(options.get("anonymous", False))
    config = Config(
        retries={"max_attempts": attempts, "mode": "standard"},
        signature_version=UNSIGNED if anonymous else None,
        s3={"addressing_style": "path"} if endpoint or _custom_endpoint() else None,
    )
    client = session.client("s3", endpoint_url=endpoint, region_name=region, config=config)
    kwargs: dict[str, Any] = {
        "region": region,
        "anonymous": anonymous,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    }
    resolved = urlsplit(client.meta.endpoint_url)  # what boto3 made of the options, env, profile
    if not (resolved.hostname or "").endswith("amazonaws.com"):
        kwargs["endpoint_override"] = resolved.netloc.rpartition("@")[2] + resolved.path.rstrip("/")
        kwargs["scheme"] = resolved.scheme or "https"
    return pafs.S3FileSystem(**kwargs), client


def _custom_endpoint() -> bool:
    return bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _gcs(options: Mapping[str, Any]) -> Any:
    """pyarrow's GCS filesystem (credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata)."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"anonymous": bool(options.get("anonymous", False))}
    endpoint = options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    return pafs.GcsFileSystem(**kwargs)
