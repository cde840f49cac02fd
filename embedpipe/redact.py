"""Secrets in URIs: shown and stored redacted, kept whole only in memory for the client.

A sink URI such as `qdrant+https://admin:sekrit@host:6333/?api_key=KEY` carries two kinds of
secret: the password of its userinfo and an `api_key` query parameter. `redact_uri` replaces
them with `***` wherever the URI is printed, logged, reported or used as a ledger key;
`server_credentials` splits them off for the client that needs them.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Userinfo: everything between '//' and the last '@' of the authority (a raw '@' in a password
# is common enough to allow).
_USERINFO = re.compile(r"(?<=//)(?P<userinfo>[^/?#\s]*)@")
# api_key=..., api-key=..., apikey=... in a query string, and a Postgres URI's password=; any case.
_API_KEY = re.compile(r"(?P<name>[?&;](?:api[_-]?key|password)=)[^&#\s]*", re.IGNORECASE)
_API_KEY_NAMES = frozenset({"api_key", "api-key", "apikey"})
# Environment variables that hold credentials of the object stores a source reads.
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)


def redact_uri(text: str) -> str:
    """`text` with URI passwords and api_key (or password=) values replaced by ***; idempotent.

    `qdrant+http://admin:sekrit@h:6333` -> `qdrant+http://admin:***@h:6333`; a userinfo without
    a colon (a bare token) is masked whole. Works on a URI or on a message that contains one.
    """
    return _API_KEY.sub(rf"\g<name>{MASK}", _USERINFO.sub(_mask_userinfo, text))


def redact_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with URI passwords and the values of the credential variables the environment
    holds (SECRET_ENV) replaced by ***: for a storage client's message that may echo one."""
    env = os.environ if environ is None else environ
    for name in SECRET_ENV:
        value = env.get(name, "")
        if len(value) >= 4:  # a short value would mask innocent text
            text = text.replace(value, MASK)
    return redact_uri(text)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    return f"{user}:{MASK}@" if colon and user else f"{MASK}@"


@dataclass(frozen=True)
class ServerCredentials:
    """A server URL without its secrets, and the secrets as a client takes them."""

    url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def server_credentials(url: str) -> ServerCredentials:
    """Split `http(s)://user:pass@host:port/prefix?api_key=KEY` into a clean URL, the API key,
    and an HTTP Basic `authorization` header (for a server behind an authenticating proxy)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = [v for k, v in query if k.lower() in _API_KEY_NAMES]
    rest = [(k, v) for k, v in query if k.lower() not in _API_KEY_NAMES]
    clean = urlunsplit((parts.scheme, hostport, parts.path, urlencode(rest), parts.fragment))
    headers = {}
    if at and userinfo:
        user, _, password = userinfo.partition(":")
        token = f"{unquote(user)}:{unquote(password)}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
    return ServerCredentials(clean, keys[-1] if keys else None, headers)
